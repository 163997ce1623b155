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

from collections.abc import Hashable, Mapping, Sequence
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


@dataclass(frozen=True, kw_only=True)
class PromptJob:
    """One prompt to fit: its own seeded generator, its length, and the prefix it follows."""

    rng: np.random.Generator
    length: int
    prefix: TextPrompt | None = None


def fit_prompt(tokenizer: Tokenizer, rng: np.random.Generator, length: int,
               prefix: TextPrompt | None = None) -> TextPrompt:
    """A prompt of ``length`` tokens after ``prefix`` (whose ids and text it starts with)."""
    return fit_prompts(tokenizer, [PromptJob(rng=rng, length=length, prefix=prefix)])[0]


def fit_prompts(tokenizer: Tokenizer, jobs: Sequence[PromptJob]) -> list[TextPrompt]:
    """Fit many prompts in lockstep rounds, each round one batched decode and encode (parallel in
    Rust); each job draws only from its own generator, so a prompt is the same in any batch."""
    pool = tokenizer.sample_ids()
    heads = [job.prefix.ids.tolist() if job.prefix is not None else [] for job in jobs]
    tails = [_draw(job.rng, pool, job.length) for job in jobs]
    results: list[TextPrompt | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    for _ in range(MAX_ROUNDS):
        if not pending:
            break
        texts = tokenizer.decode_batch([heads[i] + tails[i] for i in pending])
        still = []
        for i, text, ids in zip(pending, texts, tokenizer.encode_batch(texts)):
            results[i] = _settle(jobs[i], heads[i], text, ids)
            if results[i] is None:
                tails[i] = _next_tail(jobs[i], heads[i], tails[i], text, ids, pool)
                still.append(i)
        pending = still
    if pending:  # the rounds ran out: keep what the text really encodes to, marked inexact
        texts = tokenizer.decode_batch([heads[i] + tails[i] for i in pending])
        for i, text, ids in zip(pending, texts, tokenizer.encode_batch(texts)):
            results[i] = TextPrompt(ids=np.asarray(ids, dtype=np.int32), text=text, exact=False)
    return results  # type: ignore[return-value]  (every slot is filled above)


def _settle(job: PromptJob, head: list[int], text: str, ids: list[int]) -> TextPrompt | None:
    """The fitted prompt when ``text`` encodes to the prefix and exactly ``length`` more ids."""
    prefix_kept = ids[: len(head)] == head and (job.prefix is None or text.startswith(job.prefix.text))
    if prefix_kept and len(ids) - len(head) == job.length:
        return TextPrompt(ids=np.asarray(ids, dtype=np.int32), text=text, exact=True)
    return None


def _next_tail(job: PromptJob, head: list[int], tail: list[int], text: str, ids: list[int],
               pool: np.ndarray) -> list[int]:
    if ids[: len(head)] != head or (job.prefix is not None and not text.startswith(job.prefix.text)):
        # the question's first token merged into the prefix: try another first token
        return [int(pool[job.rng.integers(0, pool.size)]), *tail[1:]]
    # cutting may split a character (byte-level BPE) and re-encode long again: the last token is
    # always a fresh draw, so a cut that keeps failing does not repeat itself
    kept = ids[len(head):][: job.length - 1]
    return kept + _draw(job.rng, pool, job.length - len(kept))


def _draw(rng: np.random.Generator, pool: np.ndarray, count: int) -> list[int]:
    return pool[rng.integers(0, pool.size, size=count)].tolist()


@dataclass(frozen=True, kw_only=True)
class ChainLink:
    """A piece of a prompt that follows another piece (its ``parent``), fitted behind it.

    Trace blocks and conversation messages are chains: a prompt is its pieces joined, and
    prompts that share their first pieces must share those pieces' ids and text exactly (that
    is the prefix a server's cache reuses).
    """

    parent: Hashable | None  # the key of the piece this one follows; None: the prompt's start
    seed: tuple[int, ...]  # default_rng key of this piece's own draws
    length: int  # tokens this piece adds


def fit_chained(tokenizer: Tokenizer, links: Mapping[Hashable, ChainLink]) -> dict[Hashable, TextPrompt]:
    """Every link fitted behind its parent's fitted prompt: ``result[key]`` is the whole prompt up
    to and including that link, with ``encode(text) == ids``.

    A link's result depends only on its own chain of links (each piece draws from its own
    seed), never on which other links are fitted with it, so any actor building any subset of
    requests gets the same prompts. Links are fitted a depth at a time, each depth one batch.
    """
    done: dict[Hashable, TextPrompt] = {}
    pending = dict(links)
    while pending:
        ready = [key for key, link in pending.items() if link.parent is None or link.parent in done]
        if not ready:
            missing = next(link.parent for link in pending.values())
            raise ValueError(f"chain link parent {missing!r} is not among the links")
        jobs = [PromptJob(rng=np.random.default_rng(list(pending[key].seed)), length=pending[key].length,
                          prefix=None if pending[key].parent is None else done[pending[key].parent]) for key in ready]
        done.update(zip(ready, fit_prompts(tokenizer, jobs)))
        for key in ready:
            del pending[key]
    return done
