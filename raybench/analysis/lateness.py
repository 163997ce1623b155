"""Late sends: how far behind its due time each request actually left the client.

A request is due at its scheduled arrival, or later when it had to wait for a concurrency slot
(that wait is the closed loop's queue time, reported apart). What remains between due and
sent is the client's own delay: a timer that woke late, an event loop busy with other streams,
the HTTP library building the request. Rate-based and trace arrivals promise the server a
schedule; a cell whose sends fell behind it did not offer the load it says it did, so it is
flagged rather than trusted. A burst (requests due at the same instant, rate inf) has no
schedule to fall behind: its lateness is still measured (how long the burst took to leave, some
100 µs of client work per request) but never flagged. A multi-turn cell at rate inf opens with
such a burst (every session's first turn is due at the cell start) and then gives each later
turn its own due time (think time after the previous answer): only those later sends can fall
behind, so only they are judged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from raybench.errors import ConfigError

DEFAULT_LATE_SEND_THRESHOLD_MS = 5.0
_NS_PER_MS = 1e6


def check_late_send_threshold(threshold_ms: float) -> float:
    """The threshold as a float; anything but a finite number > 0 is a ConfigError."""
    if isinstance(threshold_ms, bool) or not isinstance(threshold_ms, (int, float)) or not (
        math.isfinite(threshold_ms) and threshold_ms > 0
    ):
        raise ConfigError.invalid("late_send_threshold_ms", threshold_ms, "a finite number of ms > 0, e.g. 5")
    return float(threshold_ms)


def send_lateness_fields(
    requests: pl.DataFrame, *, threshold_ms: float = DEFAULT_LATE_SEND_THRESHOLD_MS
) -> dict[str, Any]:
    """p50, p99 and max send lateness (ms) over the sends that had a schedule, and the cell's flag.

    ``sends_late`` is True when their p99 exceeds ``threshold_ms``; ``late_sends`` counts the
    sends beyond it. The cell's opening burst (see :func:`_in_start_burst`) is left out of the
    figures when later sends had a schedule, and is all there is to describe otherwise: then
    both are None (nothing to fall behind). ``burst_sends`` and ``max_burst_send_lateness_ms``
    say how many sends the burst held and how long it took to leave. Tables without the column
    (an engine cell, an older run) give None for each figure: not measured, never 0.
    """
    limit = check_late_send_threshold(threshold_ms)
    out: dict[str, Any] = {"late_send_threshold_ms": limit}
    if "send_lateness_ns" not in requests.columns:
        return {**out, **_figures(np.zeros(0), limit, judged=False), "burst_sends": None,
                "max_burst_send_lateness_ms": None}
    sends = requests.select(
        (pl.col("send_lateness_ns").cast(pl.Float64) / _NS_PER_MS).alias("lateness_ms"),
        _in_start_burst(requests).alias("burst"),
    ).drop_nulls("lateness_ms")
    burst_ms = sends.filter(pl.col("burst"))["lateness_ms"].to_numpy()
    scheduled_ms = sends.filter(~pl.col("burst"))["lateness_ms"].to_numpy()
    judged = scheduled_ms.size > 0
    return {
        **out,
        **_figures(scheduled_ms if judged else burst_ms, limit, judged=judged),
        "burst_sends": int(burst_ms.size),
        "max_burst_send_lateness_ms": float(burst_ms.max()) if burst_ms.size else None,
    }


def _in_start_burst(requests: pl.DataFrame) -> pl.Expr:
    """True for the requests of the burst the cell opens with.

    They share the cell's first ``t_scheduled``; a lone request there is a burst only when it is
    the whole cell (rate inf, one request), otherwise it is the first arrival of a schedule.
    """
    if "t_scheduled_ns" not in requests.columns:
        return pl.lit(False)
    at_start = pl.col("t_scheduled_ns") == pl.col("t_scheduled_ns").min()
    return at_start & ((at_start.sum() > 1) | (pl.len() == 1))


def _figures(lateness_ms: np.ndarray, limit_ms: float, *, judged: bool) -> dict[str, Any]:
    """The statistics of ``lateness_ms``; the flag only where ``judged`` (they had a schedule)."""
    if lateness_ms.size == 0:
        return {"count_send_lateness": 0, "median_send_lateness_ms": None, "p99_send_lateness_ms": None,
                "max_send_lateness_ms": None, "late_sends": None, "sends_late": None}
    p50, p99 = np.percentile(lateness_ms, [50, 99])
    return {
        "count_send_lateness": int(lateness_ms.size),
        "median_send_lateness_ms": float(p50),
        "p99_send_lateness_ms": float(p99),
        "max_send_lateness_ms": float(lateness_ms.max()),
        "late_sends": int((lateness_ms > limit_ms).sum()) if judged else None,
        "sends_late": bool(p99 > limit_ms) if judged else None,
    }
