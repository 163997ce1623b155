"""Shared-prefix prompts, modelled on SGLang's ``generated-shared-prefix`` dataset.

``num_groups`` prefixes (think: system prompts) are each shared by ``prompts_per_group``
questions; a prompt is its group's prefix followed by its own question, as ids, so its length is
exactly ``prefix_len + question_len`` (SGLang joins text with a separator and re-encodes, which
moves the length). The requests are sent in a seeded shuffled order, as SGLang does, so a
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
    require_int,
    require_vocab,
)

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
        prefixes: dict[int, np.ndarray] = {}
        specs = []
        for request_id in request_ids:
            slot = int(order[request_id])
            group = slot // self.prompts_per_group
            if group not in prefixes:
                prefix_key = (self.seed, _PREFIX_STREAM, group)
                prefixes[group] = self._draw_ids(prefix_key, self.prefix_len)
            question = self._draw_ids((self.seed, _QUESTION_STREAM, slot), self.question_len)
            specs.append(
                RequestSpec(
                    request_id=int(request_id),
                    prompt_token_ids=np.concatenate([prefixes[group], question]),
                    prompt_tokens=self.prompt_len,
                    max_tokens=self.output_len,
                    group=group,
                )
            )
        return specs

    def describe(self) -> dict[str, Any]:
        return {
            "name": "prefix",
            **asdict(self),
            "num_requests": self.num_requests,
            "prompt_len": self.prompt_len,
        }

    def _draw_ids(self, key: tuple[int, int, int], length: int) -> np.ndarray:
        rng = np.random.default_rng(list(key))
        return rng.integers(self.token_id_low, self.token_id_high, size=length, dtype=np.int32)
