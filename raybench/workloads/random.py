"""Random token-id prompts at exact (or ranged) lengths, the workload of the seed benchmark.

Lengths follow vLLM's current ``--random-range-ratio`` meaning (after vllm#16126): a length
``L`` with ratio ``r`` is drawn uniformly from the integers in ``[floor(L(1-r)), ceil(L(1+r))]``,
so ``r = 0`` (the default) gives exactly ``L``. SGLang's flag of the same name means something
else (``r = 1`` is exact there, sglang#7253); experiments that copy SGLang commands must convert.

Without a tokenizer, ids are drawn from ``[token_id_low, token_id_high)`` and sent as a list,
so there is no decode/re-encode step that could change the length (sglang#15732, vllm#44708):
``prompt_tokens`` is the length the server sees, if every id is in the model's vocabulary.
With a tokenizer (a name or path, see :mod:`raybench.workloads.tokenizer`), ids come from its
vocabulary minus its special tokens and are fitted so that their text encodes back to exactly
them (:func:`raybench.workloads.prompts.fit_prompt`); ``text=True`` sends that text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from raybench.workloads.base import (
    DEFAULT_TOKEN_ID_HIGH,
    DEFAULT_TOKEN_ID_LOW,
    RequestSpec,
    check_request_ids,
    check_tokenizer,
    require_int,
    require_ratio,
    require_vocab,
)
from raybench.workloads.prompts import PromptJob, fit_prompts
from raybench.workloads.tokenizer import Tokenizer, WordTokenizer, load_tokenizer


def length_bounds(length: int, range_ratio: float) -> tuple[int, int]:
    """Inclusive ``(low, high)`` lengths for ``length`` at ``range_ratio``; never below 1 token.

    vLLM clamps only the output minimum to 1; the prompt is clamped too, since a prompt of zero
    tokens is not a request any server accepts.
    """
    low = max(math.floor(length * (1.0 - range_ratio)), 1)
    high = max(math.ceil(length * (1.0 + range_ratio)), low)
    return low, high


@dataclass(frozen=True, kw_only=True)
class RandomWorkload:
    """``num_prompts`` prompts of random ids: from the tokenizer's vocabulary, or from
    ``[token_id_low, token_id_high)`` when there is no tokenizer (or it is the word tokenizer).

    Request ``i`` draws its lengths and ids from ``np.random.default_rng([seed, i])`` alone, so
    it is the same prompt whichever actor builds it and however the cell is sharded.
    ``text=True`` also carries the prompt's text (sent instead of the ids).
    """

    num_prompts: int
    input_len: int
    output_len: int
    range_ratio: float = 0.0
    seed: int = 0
    token_id_low: int = DEFAULT_TOKEN_ID_LOW
    token_id_high: int = DEFAULT_TOKEN_ID_HIGH
    tokenizer: str | None = None  # a name or path for load_tokenizer; None: the id range
    tokenizer_revision: str | None = None
    text: bool = False

    def __post_init__(self) -> None:
        checked = {
            "num_prompts": require_int("random.num_prompts", self.num_prompts, minimum=1),
            "input_len": require_int("random.input_len", self.input_len, minimum=1),
            "output_len": require_int("random.output_len", self.output_len, minimum=1),
            "range_ratio": require_ratio("random.range_ratio", self.range_ratio),
            "seed": require_int("random.seed", self.seed, minimum=0),
        }
        checked["token_id_low"], checked["token_id_high"] = require_vocab(
            "random", self.token_id_low, self.token_id_high
        )
        check_tokenizer("random", self.tokenizer, self.tokenizer_revision, self.text)
        # Store plain Python numbers so describe() is JSON-safe even when given numpy scalars.
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def num_requests(self) -> int:
        return self.num_prompts

    def build(self, request_ids: Sequence[int]) -> list[RequestSpec]:
        check_request_ids(request_ids, self.num_prompts)
        input_low, input_high = length_bounds(self.input_len, self.range_ratio)
        output_low, output_high = length_bounds(self.output_len, self.range_ratio)
        tokenizer = self._tokenizer()
        drawn = []
        for request_id in request_ids:
            rng = np.random.default_rng([self.seed, int(request_id)])
            prompt_tokens = int(rng.integers(input_low, input_high + 1))
            max_tokens = int(rng.integers(output_low, output_high + 1))
            drawn.append((int(request_id), rng, prompt_tokens, max_tokens))
        prompts = self._prompts(tokenizer, [(rng, length) for _, rng, length, _ in drawn])
        return [
            RequestSpec(
                request_id=request_id,
                prompt_token_ids=ids,
                prompt_tokens=int(ids.size),
                max_tokens=max_tokens,
                group=None,
                prompt_text=text,
            )
            for (request_id, _, _, max_tokens), (ids, text) in zip(drawn, prompts)
        ]

    def _prompts(
        self, tokenizer: Tokenizer | None, draws: list[tuple[np.random.Generator, int]]
    ) -> list[tuple[np.ndarray, str | None]]:
        """Each request's ids (and text when sent), from its own generator after its lengths."""
        if tokenizer is not None and not isinstance(tokenizer, WordTokenizer):
            fitted = fit_prompts(tokenizer, [PromptJob(rng=rng, length=length) for rng, length in draws])
            return [(p.ids, p.text if self.text else None) for p in fitted]
        out = []
        for rng, length in draws:
            ids = rng.integers(self.token_id_low, self.token_id_high, size=length, dtype=np.int32)
            # the word form is only built when it is sent: the id path stays as cheap as before
            out.append((ids, tokenizer.decode(ids.tolist()) if self.text and tokenizer is not None else None))
        return out

    def _tokenizer(self) -> Tokenizer | None:
        if self.tokenizer is None:
            return None
        return load_tokenizer(self.tokenizer, revision=self.tokenizer_revision)

    def describe(self) -> dict[str, Any]:
        input_low, input_high = length_bounds(self.input_len, self.range_ratio)
        output_low, output_high = length_bounds(self.output_len, self.range_ratio)
        return {
            "name": "random",
            **asdict(self),
            "num_requests": self.num_requests,
            "input_len_range": [input_low, input_high],
            "output_len_range": [output_low, output_high],
            "range_ratio_semantics": "vllm",
        }
