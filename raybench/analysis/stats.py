"""Summary statistics of one latency list, computed exactly as the reference clients do.

Both references use ``np.mean``, ``np.median``, ``np.std`` (population, ddof=0) and
``np.percentile`` with its default linear interpolation, and report 0 for an empty list
(vLLM's ``x or 0``). raybench does not: a list without samples gives None (null in JSON, "n/a"
in the table), so a figure nobody measured is never read as a measured 0; ``count`` stays
beside every figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from raybench.errors import ConfigError

# SGLang's result names need p90, p95 and p99 whatever the caller asks for.
SGLANG_PERCENTILES = (90.0, 95.0, 99.0)


@dataclass(frozen=True, kw_only=True)
class Stats:
    """Statistics of one list, in the list's unit (ms throughout raybench's analysis)."""

    count: int
    mean: float | None  # None (and every figure below) when the list is empty
    median: float | None
    std: float | None
    max: float | None
    percentiles: Mapping[float, float | None]  # percentile (0..100) -> value


def validate_percentiles(percentiles: Iterable[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated floats in [0, 100]; anything else is a ConfigError."""
    out: set[float] = set()
    for p in percentiles:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100:
            raise ConfigError.invalid("percentiles", p, "numbers between 0 and 100")
        out.add(float(p))
    return tuple(sorted(out))


def percentile_key(p: float) -> str:
    """vLLM's key spelling: ``p99`` for integral percentiles, ``p99.9`` otherwise."""
    return f"p{int(p)}" if float(p).is_integer() else f"p{p}"


def describe(values: np.ndarray | Sequence[float], percentiles: Sequence[float]) -> Stats:
    """Mean, median, population std, max and the given percentiles; all None when empty."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return Stats(
            count=0, mean=None, median=None, std=None, max=None,
            percentiles={float(p): None for p in percentiles},
        )
    pct = np.percentile(arr, list(percentiles)) if percentiles else []
    return Stats(
        count=int(arr.size),
        mean=float(np.mean(arr)),
        median=float(np.median(arr)),
        std=float(np.std(arr)),
        max=float(np.max(arr)),
        percentiles={float(p): float(v) for p, v in zip(percentiles, pct)},
    )


def describe_repeated(values: np.ndarray | Sequence[float], counts: np.ndarray | Sequence[int],
                      percentiles: Sequence[float]) -> Stats:
    """``describe(np.repeat(values, counts), percentiles)`` without building the repeated list.

    A per-token ITL list repeats each chunk's gap once per token it carried; a cell of long
    chunks (a prediction's, a speculative decoder's) would otherwise hold one float per output
    token, gigabytes at a million requests. Percentiles interpolate between the same order
    statistics as ``np.percentile``'s linear method, in its arithmetic, so they match it exactly;
    the mean and std match to rounding (a weighted sum rather than numpy's pairwise one).
    """
    arr = np.asarray(values, dtype=np.float64)
    reps = np.asarray(counts, dtype=np.int64)
    keep = reps > 0
    arr, reps = arr[keep], reps[keep]
    n = int(reps.sum())
    if n == 0:
        return describe((), percentiles)
    order = np.argsort(arr, kind="stable")
    arr, reps = arr[order], reps[order]
    ends = np.cumsum(reps)  # the repeated sorted list's index just past each value's copies

    def nth(index: np.ndarray) -> np.ndarray:
        return arr[np.searchsorted(ends, index, side="right")]

    mean = float(np.dot(arr, reps) / n)
    pct: list[float] = []
    if percentiles:
        virtual = np.asarray(percentiles, dtype=np.float64) / 100 * (n - 1)
        below = np.floor(virtual)
        t = virtual - below
        a, b = nth(below.astype(np.int64)), nth(np.minimum(below.astype(np.int64) + 1, n - 1))
        diff = b - a
        pct = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t).tolist()
    middle = nth(np.array([(n - 1) // 2, n // 2]))
    return Stats(
        count=n,
        mean=mean,
        median=float(middle.mean()),
        std=float(np.sqrt(np.dot(reps, (arr - mean) ** 2) / n)),
        max=float(arr[-1]),
        percentiles={float(p): float(v) for p, v in zip(percentiles, pct)},
    )


def stats_fields(stats: Stats, name: str, *, with_max: bool = False) -> dict[str, float | int | None]:
    """Flatten into ``mean_{name}_ms``, ``median_…``, ``std_…``, ``pXX_…`` and ``count_{name}``."""
    out: dict[str, float | int | None] = {
        f"count_{name}": stats.count,
        f"mean_{name}_ms": stats.mean,
        f"median_{name}_ms": stats.median,
        f"std_{name}_ms": stats.std,
    }
    for p, v in stats.percentiles.items():
        out[f"{percentile_key(p)}_{name}_ms"] = v
    if with_max:
        out[f"max_{name}_ms"] = stats.max
    return out


def safe_rate(amount: float, duration_s: float) -> float:
    """``amount / duration_s``, 0.0 for a zero-length cell (nothing can be said per second)."""
    if duration_s <= 0 or not math.isfinite(duration_s):
        return 0.0
    return float(amount) / duration_s
