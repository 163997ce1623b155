"""SLO search: the highest request rate or concurrency of a grid whose goodput meets the SLOs.

A grid point *passes* when at least ``attainment`` of its planned requests succeeded and met
every SLO (TTFT, TPOT, E2E in ms, as vLLM's ``--goodput``): with ``attainment`` 0.99 that is
"p99 TTFT within its SLO" for one SLO. Load beyond a server's knee only gets worse, so passing is
taken to be monotone over the ascending grid, and a bisection finds the last passing point in
``ceil(log2(n + 1))`` cells where a sweep needs ``n``. Each probe is a normal cell of the run
dir (resumable, reported like any other); the answer and its bracket (the highest point that
passed, the lowest that failed) go into ``search.json`` and the report.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from raybench.errors import ConfigError

SEARCH_FILE = "search.json"
SearchOver = Literal["concurrency", "request_rate"]


@dataclass(frozen=True, kw_only=True)
class SloSearch:
    """What to search: ``over`` concurrency (the sweep's own concurrency list is the grid) or
    request_rate (``grid``, requests/s); the SLOs are the experiment's ``goodput_slos_ms``."""

    over: SearchOver = "concurrency"
    grid: tuple[float, ...] = ()  # request_rate only
    attainment: float = 0.99

    def __post_init__(self) -> None:
        if self.over not in ("concurrency", "request_rate"):
            raise ConfigError.unknown("search.over", str(self.over), ("concurrency", "request_rate"))
        grid = tuple(self.grid)
        if self.over == "request_rate":
            if not grid or any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v > 0)
                               for v in grid):
                raise ConfigError.invalid("search.grid", grid, "finite request rates > 0, e.g. (1, 2, 4, 8)")
            if list(grid) != sorted(set(grid)):
                raise ConfigError.invalid("search.grid", grid, "ascending rates without repeats")
        elif grid:
            raise ConfigError.invalid("search.grid", grid, "empty for over='concurrency' (the sweep's concurrency list is the grid)")
        object.__setattr__(self, "grid", tuple(float(v) for v in grid))
        a = self.attainment
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not 0 < a <= 1:
            raise ConfigError.invalid("search.attainment", a, "a fraction in (0, 1], e.g. 0.99")


@dataclass(frozen=True, kw_only=True)
class Probe:
    value: float
    cell_id: str
    passed: bool
    attained: float  # good requests / planned requests


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """``best``: the highest grid value that passed (None: none did); ``bracket``: it and the
    lowest value that failed (None: none failed, the grid's top passed)."""

    over: str
    grid: tuple[float, ...]
    best: float | None
    bracket: tuple[float | None, float | None]
    probes: tuple[Probe, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"over": self.over, "grid": list(self.grid), "best": self.best, "bracket": list(self.bracket),
                "cells_run": len(self.probes), "cells_in_grid": len(self.grid),
                "probes": [vars(p) for p in self.probes]}


def bisect(grid: Sequence[float], probe: Callable[[int], Probe]) -> SearchResult:
    """The last passing index of an ascending grid, asking ``probe(index)`` at most log2 times."""
    lo, hi = -1, len(grid)  # grid[lo] passed (or nothing did), grid[hi] failed (or nothing did)
    probes = []
    while hi - lo > 1:
        mid = (lo + hi) // 2
        result = probe(mid)
        probes.append(result)
        if result.passed:
            lo = mid
        else:
            hi = mid
    best = grid[lo] if lo >= 0 else None
    failed = grid[hi] if hi < len(grid) else None
    return SearchResult(over="", grid=tuple(grid), best=best, bracket=(best, failed), probes=tuple(probes))


def judge(summary: Mapping[str, Any], *, value: float, attainment: float) -> Probe:
    """Whether one cell's summary meets the SLOs for ``attainment`` of its planned requests."""
    planned = summary.get("num_prompts", 0) + summary.get("requests_not_recorded", 0)
    good = summary.get("goodput_completed") or 0
    attained = good / planned if planned else 0.0
    return Probe(value=value, cell_id=summary["cell_id"], passed=attained >= attainment, attained=attained)


def format_result(result: SearchResult, slos_ms: Mapping[str, float], attainment: float) -> str:
    """One line for the terminal and the report."""
    slos = ", ".join(f"{k} <= {v:g} ms" for k, v in slos_ms.items())
    unit = "requests/s" if result.over == "request_rate" else "concurrent requests"
    low, high = result.bracket
    if result.best is None:
        answer = f"no grid point meets the SLOs (the lowest, {result.grid[0]:g}, fails)"
    elif high is None:
        answer = f"{result.best:g} {unit}, the top of the grid (raise the grid to find the limit)"
    else:
        answer = f"{result.best:g} {unit} (passes; {high:g} fails)"
    return (f"SLO search over {result.over}: {answer}; {attainment:.0%} of requests within {slos}; "
            f"{len(result.probes)} of {len(result.grid)} grid cells run")
