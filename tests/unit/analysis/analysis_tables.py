"""Hand-made requests/chunks tables for the analysis tests, built through the real Arrow schema
(so ``status`` and ``kind`` arrive as dictionary/Categorical columns, as from Parquet).

Tests give times in ms from the cell's start; they are stored as ns on an arbitrary base so
that nothing can pass by reading absolute times as relative ones.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from raybench.store.schema import CHUNKS_SCHEMA, REQUESTS_SCHEMA

BASE_NS = 7_000_000_000_000
CELL = "cell-a"


def ns(ms: float) -> int:
    return BASE_NS + round(ms * 1_000_000)


def requests_frame(rows: list[dict]) -> pl.DataFrame:
    """rows: request_id, sent/done/sched/late (ms), status, output_tokens, prompt_tokens, ..."""
    full = []
    for r in rows:
        full.append(
            {
                "cell_id": r.get("cell_id", CELL),
                "request_id": r["request_id"],
                "actor": "a0",
                "node": "n0",
                "prompt_tokens": r.get("prompt_tokens", 10),
                "server_prompt_tokens": r.get("server_prompt_tokens"),
                "max_tokens": r.get("max_tokens", 16),
                "output_tokens": r.get("output_tokens"),
                "cached_tokens": None,
                "t_scheduled_ns": ns(r.get("sched", r["sent"])),
                "t_sent_ns": ns(r["sent"]),
                "t_first_ns": None,
                "t_done_ns": ns(r["done"]),
                "status": r.get("status", "ok"),
                "http_status": r.get("http_status"),
                "error": r.get("error"),
                "send_lateness_ns": None if r.get("late") is None else round(r["late"] * 1_000_000),
                "session": r.get("session"),
                "turn": r.get("turn"),
            }
        )
    return pl.from_arrow(pa.Table.from_pylist(full, schema=REQUESTS_SCHEMA))


def chunks_frame(streams: dict[int, list[tuple[float, str, int]]], cell_id: str = CELL) -> pl.DataFrame:
    """streams: request_id -> [(t_ms, kind, n_tokens), ...] in stream order."""
    rows = [
        {"cell_id": cell_id, "request_id": rid, "seq": seq, "t_ns": ns(t), "n_tokens": n, "kind": kind}
        for rid, events in streams.items()
        for seq, (t, kind, n) in enumerate(events)
    ]
    return pl.from_arrow(pa.Table.from_pylist(rows, schema=CHUNKS_SCHEMA))
