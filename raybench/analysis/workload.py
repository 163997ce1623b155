"""Summary fields that only some workloads have: per-turn latency, and sends against a schedule.

Multi-turn cells get TTFT per turn (turn 0 is a cold prompt; later turns re-send the whole
conversation, so a prefix cache shows up as a falling TTFT). Cells with a schedule (a trace
replay, a finite request rate) get how late each send was against its scheduled time
(``t_sent - t_scheduled``), and a flag when the p99 passed ``late_threshold_ms``: the load the
cell offered was then not the load it meant to offer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from raybench.analysis.compat import CompatMode
from raybench.analysis.metrics import request_metrics
from raybench.analysis.stats import describe, stats_fields

DEFAULT_LATE_THRESHOLD_MS = 10.0
_NS_PER_MS = 1e6


def turn_fields(
    requests: pl.DataFrame, chunks: pl.DataFrame, *, compat: CompatMode | str = CompatMode.RAYBENCH,
    percentiles: Sequence[float] = (50, 90, 99),
) -> dict[str, Any]:
    """``ttft_by_turn``: one entry per turn with its successful requests' TTFT statistics (ms).

    Empty when the cell has no sessions (the table has no ``turn`` values).
    """
    if "turn" not in requests.columns or requests["turn"].null_count() == requests.height:
        return {}
    per = request_metrics(requests, chunks, compat).join(
        requests.select("request_id", "turn"), on="request_id", how="left"
    )
    rows = []
    for turn in sorted(per["turn"].drop_nulls().unique().to_list()):
        ttft = per.filter(pl.col("ok") & (pl.col("turn") == turn))["ttft_ms"].drop_nulls().to_numpy()
        stats = stats_fields(describe(ttft, percentiles), "ttft")
        rows.append({"turn": int(turn), **stats, "mean_prompt_tokens": float(
            per.filter(pl.col("turn") == turn)["prompt_tokens"].mean())})
    return {"ttft_by_turn": rows, "num_sessions": int(requests["session"].n_unique())}


def schedule_fields(requests: pl.DataFrame, *, late_threshold_ms: float = DEFAULT_LATE_THRESHOLD_MS) -> dict[str, Any]:
    """Lateness of sends against their scheduled times (ms), and ``sends_fell_behind``.

    Call it only for cells with a schedule: in a closed loop released all at once,
    ``t_sent - t_scheduled`` is the wait for a slot, which is the point, not a fault.
    """
    late_ms = ((requests["t_sent_ns"] - requests["t_scheduled_ns"]) / _NS_PER_MS).to_numpy()
    stats = describe(late_ms, (50, 99))
    p99 = stats.percentiles[99.0]
    return {
        **stats_fields(stats, "schedule_lateness", with_max=True),
        "late_threshold_ms": late_threshold_ms,
        "sends_fell_behind": bool(p99 > late_threshold_ms),
    }
