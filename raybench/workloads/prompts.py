"""Random prompts of exact token length under a real tokenizer.

N random ids do not make a text of N tokens: with byte-level BPE, ``[6880, 6881]`` decodes to
" callshere", which encodes as three tokens. vLLM's random dataset corrects for it by decoding,
re-encoding and then cutting or padding the ids, a few rounds, until the length holds
(``gen_prompt_decode_to_target_len`` in vllm/benchmarks/datasets.py). raybench does the same,
with two differences: every draw comes from the request's own seeded generator (so a prompt is
the same whatever actor builds it), and a prompt behind a shared prefix keeps that prefix's
ids and text exactly (only the question part is adjusted).

The result is a fixed point: ``encode(text) == ids``, so sending the ids or the text gives the
server the same prompt, of the length recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raybench.workloads.tokenizer import Tokenizer

MAX_ROUNDS = 20  # vLLM's max_retry is 10; rounds are cheap and the tokenizers tried converge in 1-5


@dataclass(frozen=True, kw_only=True)
class TextPrompt:
    """Ids and the text they decode to, with ``encode(text) == ids`` (unless ``exact`` is False)."""

    ids: np.ndarray
    text: str
    exact: bool  # False: the rounds ran out; ids are still encode(text), of another length


def fit_prompt(tokenizer: Tokenizer, rng: np.random.Generator, length: int,
               prefix: TextPrompt | None = None) -> TextPrompt:
    """A prompt of ``length`` tokens after ``prefix`` (whose ids and text it starts with)."""
    pool = tokenizer.sample_ids()
    head = prefix.ids.tolist() if prefix is not None else []
    head_text = prefix.text if prefix is not None else ""
    tail = _draw(rng, pool, length)
    text, ids = "", []
    for _ in range(MAX_ROUNDS):
        text = tokenizer.decode(head + tail)
        ids = tokenizer.encode(text)
        if ids[: len(head)] != head or not text.startswith(head_text):
            # the question's first token merged into the prefix: try another first token
            tail[0] = int(pool[rng.integers(0, pool.size)])
            continue
        rest = ids[len(head):]
        if len(rest) == length:
            return TextPrompt(ids=np.asarray(ids, dtype=np.int32), text=text, exact=True)
        # cutting may split a character (byte-level BPE) and re-encode long again: the last
        # token is always a fresh draw, so a cut that keeps failing does not repeat itself
        kept = rest[: length - 1]
        tail = kept + _draw(rng, pool, length - len(kept))
    text = tokenizer.decode(head + tail)
    ids = tokenizer.encode(text)
    return TextPrompt(ids=np.asarray(ids, dtype=np.int32), text=text, exact=False)


def _draw(rng: np.random.Generator, pool: np.ndarray, count: int) -> list[int]:
    return pool[rng.integers(0, pool.size, size=count)].tolist()
