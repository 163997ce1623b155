"""How far the client's clock readings are from what the server says it did.

The simulator logs the time it wrote each SSE event. Matching its log to the client's rows
(by ``X-Request-Id`` and event index) gives the client's own error on TTFT and on every gap,
which is what a load generator must keep small before any server can be judged by it.
Both logs count every event ([DONE] included), so event ``seq`` matches one to one.
"""

from __future__ import annotations

import polars as pl


def _client_key(requests: pl.DataFrame) -> pl.Expr:
    return pl.concat_str([pl.col("cell_id"), pl.lit("-"), pl.col("request_id").cast(pl.Utf8)])


def fidelity(
    requests: pl.DataFrame,
    chunks: pl.DataFrame,
    server_requests: pl.DataFrame,
    server_chunks: pl.DataFrame,
) -> dict[str, float | int]:
    """Mean and max |client - server| of TTFT and of per-event gaps, in ms, over ok requests.

    Client TTFT runs from ``t_sent`` (before the request is written) and the server's from
    arrival (after it was read), so their difference includes the request's trip; gaps between
    consecutive events compare like with like.
    """
    ok = requests.filter(pl.col("status") == "ok").with_columns(key=_client_key(requests))
    c = chunks.join(ok.select("cell_id", "request_id", "key"), on=["cell_id", "request_id"])
    s = server_chunks.rename({"request_key": "key", "t_ns": "s_t_ns", "n_tokens": "s_n_tokens", "kind": "s_kind"})
    pairs = c.join(s, on=["key", "seq"], how="inner").sort("key", "seq")
    gaps = pairs.with_columns(
        c_gap=pl.col("t_ns").diff().over("key"),
        s_gap=pl.col("s_t_ns").diff().over("key"),
    ).drop_nulls(["c_gap", "s_gap"])
    gap_err_ms = ((gaps["c_gap"] - gaps["s_gap"]).abs() / 1e6)

    first_server = (
        server_chunks.filter(pl.col("n_tokens") > 0)
        .group_by("request_key")
        .agg(pl.col("t_ns").min().alias("s_first_ns"))
        .join(server_requests.select("request_key", "t_arrival_ns"), on="request_key")
        .rename({"request_key": "key"})
    )
    ttft = ok.join(first_server, on="key").drop_nulls("t_first_ns")
    ttft_err_ms = (
        ((ttft["t_first_ns"] - ttft["t_sent_ns"]) - (ttft["s_first_ns"] - ttft["t_arrival_ns"])).abs() / 1e6
    )
    return {
        "requests_matched": ttft.height,
        "events_matched": pairs.height,
        "events_client": c.height,
        "ttft_abs_err_mean_ms": float(ttft_err_ms.mean() or 0.0),
        "ttft_abs_err_max_ms": float(ttft_err_ms.max() or 0.0),
        "itl_abs_err_mean_ms": float(gap_err_ms.mean() or 0.0),
        "itl_abs_err_max_ms": float(gap_err_ms.max() or 0.0),
    }
