"""Per-request frame and pooled ITL lists on tables holding more than one cell."""

from __future__ import annotations

import polars as pl
import pytest
from analysis_tables import chunks_frame, requests_frame

from raybench.analysis import itl_lists, request_metrics


def test_gaps_never_cross_cells_or_requests():
    # request 0 exists in both cells; its gaps must be taken within each cell only
    req = pl.concat([
        requests_frame([{"request_id": 0, "sent": 0, "done": 100, "output_tokens": 2},
                        {"request_id": 1, "sent": 0, "done": 100, "output_tokens": 2}]),
        requests_frame([{"request_id": 0, "sent": 0, "done": 100, "output_tokens": 2,
                         "cell_id": "cell-b"}]),
    ])
    ch = pl.concat([
        chunks_frame({0: [(10, "token", 1), (30, "token", 1)], 1: [(5, "token", 1), (95, "token", 1)]}),
        chunks_frame({0: [(50, "token", 1), (51, "token", 1)]}, cell_id="cell-b"),
    ])
    assert sorted(itl_lists(req, ch).per_chunk_ms.tolist()) == pytest.approx([1.0, 20.0, 90.0])


def test_failed_request_keeps_its_row_but_feeds_no_list():
    req = requests_frame([
        {"request_id": 0, "sent": 0, "done": 100, "output_tokens": 2},
        {"request_id": 1, "sent": 0, "sched": -4, "done": 100, "status": "disconnected"},
    ])
    ch = chunks_frame({0: [(10, "token", 1), (30, "token", 1)], 1: [(20, "token", 1), (21, "token", 1)]})
    per = request_metrics(req, ch).sort("request_id")
    assert per["ok"].to_list() == [True, False]
    assert per["ttft_ms"].to_list() == pytest.approx([10.0, 20.0])
    assert per["queue_time_ms"].to_list() == pytest.approx([0.0, 4.0])
    lists = itl_lists(req, ch)
    assert lists.per_chunk_ms.tolist() == pytest.approx([20.0])
    assert lists.per_token_ms.tolist() == pytest.approx([20.0])


def test_request_without_trigger_chunk_has_null_latencies():
    req = requests_frame([{"request_id": 0, "sent": 0, "done": 50, "output_tokens": 0}])
    ch = chunks_frame({0: [(10, "empty", 0), (40, "usage", 0), (45, "done", 0)]})
    row = request_metrics(req, ch).row(0, named=True)
    assert (row["ttft_ms"], row["e2e_ms"], row["tpot_ms"]) == (None, None, None)
    vllm = request_metrics(req, ch, "vllm").row(0, named=True)
    assert (vllm["ttft_ms"], vllm["e2e_ms"]) == (10.0, 10.0)
