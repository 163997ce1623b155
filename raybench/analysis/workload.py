"""Summary fields that only some workloads have: per-turn latency.

Multi-turn cells get TTFT per turn (turn 0 is a cold prompt; later turns re-send the whole
conversation, so a prefix cache shows up as a falling TTFT). How late sends were against a
schedule (a trace, a finite rate) is every cell's: see ``raybench.analysis.lateness``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from raybench.analysis.compat import CompatMode
from raybench.analysis.metrics import request_metrics
from raybench.analysis.stats import describe, stats_fields



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
