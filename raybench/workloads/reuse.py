"""Prompts a server was sent before: how much of a cell's prompts an earlier cell already sent.

Every cell of an experiment draws its prompts from the same seed (the experiment's, + repeat - 1),
so the cells of a sweep send one server the same prompts, and the shared-prefix cells the same
prefixes. A server that keeps a prefix cache (vLLM's V1 engine and SGLang do by default) and is
not reset between cells answers the later cells' prompts from that cache: their TTFT then
measures the cache, not the load. ``PromptHistory`` keeps chained hashes of the leading blocks
of a sample of what a server was sent since its last reset, and tells a new cell what share of
its sampled prompt tokens an ideal prefix cache of BLOCK_TOKENS-token blocks (vLLM's block
hashes chain the same way) would already hold.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from raybench.workloads.base import RequestSpec, Workload

#: a cell's first prompts that are compared; workloads rebuild request i from (seed, i), so two
#: cells with one seed send the same prompts in the same order and their first ones show it
SAMPLE_PROMPTS = 64
BLOCK_TOKENS = 16
#: the share beyond which a run says so and the cell is flagged (below it: a common template)
WARN_SHARE = 0.05


@dataclass(frozen=True, kw_only=True)
class PromptReuse:
    share: float  # of the sampled prompts' tokens: leading blocks an earlier cell sent
    cells: tuple[str, ...]  # the earlier cells those blocks came from, in the order they ran
    sampled: int  # prompts compared

    @property
    def flagged(self) -> bool:
        return self.share >= WARN_SHARE

    def to_json(self) -> dict[str, Any]:
        return {"share": round(self.share, 4), "cells": list(self.cells), "sampled_prompts": self.sampled,
                "block_tokens": BLOCK_TOKENS, "flagged": self.flagged}

    def line(self, cell_id: str) -> str:
        return (f"cell {cell_id}: {self.share:.0%} of the prompt tokens of its first {self.sampled} prompts begin as "
                f"prompts that {', '.join(self.cells)} sent to this server, and it was not reset since: a prefix cache "
                "may answer them, and their TTFT then measures the cache (set reset_cache=True on the backend, "
                "or turn the server's prefix cache off)")


class PromptHistory:
    """Leading blocks of the prompts a server was sent since it started or was last reset."""

    def __init__(self) -> None:
        self._first_sent_by: dict[int, str] = {}
        self._cells: list[str] = []

    def clear(self) -> None:
        self._first_sent_by.clear()
        self._cells.clear()

    def reuse(self, specs: Sequence[RequestSpec]) -> PromptReuse | None:
        """What of ``specs`` the server was sent before; None when nothing was."""
        reused = total = 0
        sources: set[str] = set()
        for spec in specs:
            total += len(spec.prompt_token_ids)
            for block in _block_chain(spec):
                cell = self._first_sent_by.get(block)
                if cell is None:
                    break
                reused += BLOCK_TOKENS
                sources.add(cell)
        if not reused:
            return None
        return PromptReuse(share=reused / total, cells=tuple(c for c in self._cells if c in sources),
                           sampled=len(specs))

    def check_and_add(self, cell_id: str, specs: Sequence[RequestSpec]) -> PromptReuse | None:
        """What of a cell's prompts was sent before; then the cell's own join the history."""
        reuse = self.reuse(specs)
        self.add(cell_id, specs)
        return reuse

    def add(self, cell_id: str, specs: Sequence[RequestSpec]) -> None:
        if cell_id not in self._cells:
            self._cells.append(cell_id)
        for spec in specs:
            for block in _block_chain(spec):
                self._first_sent_by.setdefault(block, cell_id)


def prompt_sample(workload: Workload) -> list[RequestSpec]:
    """The prompts of a cell that are compared: its first SAMPLE_PROMPTS."""
    return workload.build(range(min(SAMPLE_PROMPTS, workload.num_requests)))


def _block_chain(spec: RequestSpec) -> Iterator[int]:
    """Hashes of the prompt's full blocks, each chained to the one before (equal hashes: equal prefixes)."""
    ids = spec.prompt_token_ids
    chained = 0
    for start in range(0, len(ids) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
        chained = hash((chained, ids[start:start + BLOCK_TOKENS].tobytes()))
        yield chained
