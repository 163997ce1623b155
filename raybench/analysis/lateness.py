"""Late sends: how far behind its due time each request actually left the client.

A request is due at its scheduled arrival, or later when it had to wait for a concurrency slot
(that wait is the closed loop's queue time, reported apart). What remains between due and
sent is the client's own delay: a timer that woke late, an event loop busy with other streams,
the HTTP library building the request. Rate-based and trace arrivals promise the server a
schedule; a cell whose sends fell behind it did not offer the load it says it did, so it is
flagged rather than trusted. A burst (every request due at the same instant, rate inf) has no
schedule to fall behind: its lateness is still measured (how long the burst took to leave, some
100 µs of client work per request) but never flagged.
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
    """p50, p99 and max send lateness (ms) over every request, and the cell's flag.

    ``sends_late`` is True when p99 exceeds ``threshold_ms``, None for a burst (no schedule);
    ``late_sends`` counts the requests beyond it. Tables without the column (an engine cell, an
    older run) give None for each figure: not measured, never 0.
    """
    limit = check_late_send_threshold(threshold_ms)
    values = (
        requests["send_lateness_ns"].drop_nulls().to_numpy().astype(np.float64) / _NS_PER_MS
        if "send_lateness_ns" in requests.columns
        else np.zeros(0)
    )
    out: dict[str, Any] = {"late_send_threshold_ms": limit, "count_send_lateness": int(values.size)}
    if values.size == 0:
        return {**out, "median_send_lateness_ms": None, "p99_send_lateness_ms": None,
                "max_send_lateness_ms": None, "late_sends": None, "sends_late": None}
    p50, p99 = np.percentile(values, [50, 99])
    burst = "t_scheduled_ns" in requests.columns and requests["t_scheduled_ns"].n_unique() == 1
    return {
        **out,
        "median_send_lateness_ms": float(p50),
        "p99_send_lateness_ms": float(p99),
        "max_send_lateness_ms": float(values.max()),
        "late_sends": None if burst else int((values > limit).sum()),
        "sends_late": None if burst else bool(p99 > limit),
    }
