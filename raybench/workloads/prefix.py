"""Shared-prefix prompts, modelled on SGLang's ``generated-shared-prefix`` dataset.

``num_groups`` prefixes (think: system prompts) are each shared by ``prompts_per_group``
questions; a prompt is its group's prefix followed by its own question, as ids, so its length is
exactly ``prefix_len + question_len`` (SGLang joins text with a separator and re-encodes, which
moves the length). With a tokenizer, the prefix is fitted once per group and each question is
fitted behind it (:func:`raybench.workloads.prompts.fit_prompt`), so the prompts of a group share
the prefix's ids and its text, and each encodes back to exactly its ids. The requests are sent in a seeded shuffled order, as SGLang does, so a
server's prefix cache sees groups interleaved rather than one group at a time. The seed
benchmark ran 10 groups x 50 prompts, prefix 2000, question 1200, output 800.
"""

from __future__ import annotations

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
    require_vocab,
)
from raybench.workloads.prompts import PromptJob, TextPrompt, fit_prompts
from raybench.workloads.tokenizer import Tokenizer, WordTokenizer, load_tokenizer

# Independent random streams under one seed: the send order, the prefixes, the questions.
_ORDER_STREAM = 0
_PREFIX_STREAM = 1
_QUESTION_STREAM = 2


@dataclass(frozen=True, kw_only=True)
class SharedPrefixWorkload:
    """``num_groups * prompts_per_group`` requests; request ``i`` is slot ``order[i]``.

    Slot ``s`` belongs to group ``s // prompts_per_group``. Each prefix is drawn from
    ``default_rng([seed, 1, group])`` and each question from ``default_rng([seed, 2, slot])``,
    so any index is rebuilt alone, the same on every actor.
    """

    num_groups: int
    prompts_per_group: int
    prefix_len: int
    question_len: int
    output_len: int
    seed: int = 0
    token_id_low: int = DEFAULT_TOKEN_ID_LOW
    token_id_high: int = DEFAULT_TOKEN_ID_HIGH
    tokenizer: str | None = None  # a name or path for load_tokenizer; None: the id range
    tokenizer_revision: str | None = None
    text: bool = False

    def __post_init__(self) -> None:
        checked = {
            "num_groups": require_int("prefix.num_groups", self.num_groups, minimum=1),
            "prompts_per_group": require_int(
                "prefix.prompts_per_group", self.prompts_per_group, minimum=1
            ),
            "prefix_len": require_int("prefix.prefix_len", self.prefix_len, minimum=1),
            "question_len": require_int("prefix.question_len", self.question_len, minimum=1),
            "output_len": require_int("prefix.output_len", self.output_len, minimum=1),
            "seed": require_int("prefix.seed", self.seed, minimum=0),
        }
        checked["token_id_low"], checked["token_id_high"] = require_vocab(
            "prefix", self.token_id_low, self.token_id_high
        )
        check_tokenizer("prefix", self.tokenizer, self.tokenizer_revision, self.text)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def num_requests(self) -> int:
        return self.num_groups * self.prompts_per_group

    @property
    def prompt_len(self) -> int:
        """Every prompt's exact length in tokens."""
        return self.prefix_len + self.question_len

    def send_order(self) -> np.ndarray:
        """``order[i]`` is the slot request ``i`` sends (a seeded permutation of all slots)."""
        rng = np.random.default_rng([self.seed, _ORDER_STREAM])
        return rng.permutation(self.num_requests)

    def build(self, request_ids: Sequence[int]) -> list[RequestSpec]:
        check_request_ids(request_ids, self.num_requests)
        order = self.send_order()
        tokenizer = None if self.tokenizer is None else load_tokenizer(self.tokenizer, revision=self.tokenizer_revision)
        slots = [int(order[request_id]) for request_id in request_ids]
        groups = [slot // self.prompts_per_group for slot in slots]
        wanted = sorted(set(groups))
        prefixes = dict(zip(wanted, self._prompts(
            tokenizer, [((self.seed, _PREFIX_STREAM, group), self.prefix_len, None) for group in wanted])))
        prompts = self._prompts(tokenizer, [((self.seed, _QUESTION_STREAM, slot), self.question_len, prefixes[group])
                                            for slot, group in zip(slots, groups)])
        return [
            RequestSpec(
                request_id=int(request_id),
                prompt_token_ids=prompt.ids,
                prompt_tokens=int(prompt.ids.size),
                max_tokens=self.output_len,
                group=group,
                prompt_text=prompt.text if self.text else None,
            )
            for request_id, group, prompt in zip(request_ids, groups, prompts)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "name": "prefix",
            **asdict(self),
            "num_requests": self.num_requests,
            "prompt_len": self.prompt_len,
        }

    def _prompts(self, tokenizer: Tokenizer | None,
                 jobs: list[tuple[tuple[int, int, int], int, TextPrompt | None]]) -> list[TextPrompt]:
        """For each (key, length, prefix): the prefix (if any), then ``length`` tokens from ``default_rng(key)``."""
        if tokenizer is not None and not isinstance(tokenizer, WordTokenizer):
            return fit_prompts(tokenizer, [PromptJob(rng=np.random.default_rng(list(key)), length=length, prefix=prefix)
                                           for key, length, prefix in jobs])
        out = []
        for key, length, prefix in jobs:
            ids = np.random.default_rng(list(key)).integers(self.token_id_low, self.token_id_high, size=length,
                                                            dtype=np.int32)
            if prefix is not None:
                ids = np.concatenate([prefix.ids, ids])
            # the word form is only built when it is sent: the id path stays as cheap as before
            text = tokenizer.decode(ids.tolist()) if tokenizer is not None and self.text else ""
            out.append(TextPrompt(ids=ids, text=text, exact=True))
        return out
