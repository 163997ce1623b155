"""Steady state, the printed table, summary.parquet rows, offline figures and bad arguments."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from analysis_tables import chunks_frame, requests_frame

from raybench.analysis import format_summary_table, summarize_cell, summarize_offline, summary_frame
from raybench.errors import ConfigError

# A closed loop of 3 slots (ms):  A [0, 2000)  B [500, 2500)  C [1000, 3000)  D [2000, 4000)
# In flight: 1 at 0, 2 at 500, 3 at 1000, A leaves and D enters at 2000 (still 3: departure
# first, arrival-first would say 4), 2 at 2500, 1 at 3000, 0 at 4000.
# Threshold 0.9 × 3 = 2.7: the window is [1000, 2500).
CLOSED_LOOP = [
    {"request_id": 0, "sent": 0, "done": 2000, "output_tokens": 3},
    {"request_id": 1, "sent": 500, "done": 2500, "output_tokens": 3},
    {"request_id": 2, "sched": 0, "sent": 1000, "done": 3000, "output_tokens": 4},
    {"request_id": 3, "sched": 0, "sent": 2000, "done": 4000, "output_tokens": 2},
]
CLOSED_STREAMS = {
    0: [(800, "token", 2), (1500, "token", 1)],  # 800 is ramp-up: outside
    1: [(1200, "token", 1), (2400, "token", 2)],  # both inside
    2: [(2600, "token", 4)],  # drain: outside
    3: [(2500, "token", 1), (3500, "token", 1)],  # 2500 is the window's open end: outside
}


def _closed(target, **kw):
    args = {"request_rate_per_s": None, "goodput_slos_ms": None, **kw}
    return summarize_cell(requests_frame(CLOSED_LOOP), chunks_frame(CLOSED_STREAMS),
                          target_concurrency=target, **args)


def test_steady_state_excludes_ramp_up_and_drain():
    s = _closed(3)
    assert s["max_concurrent_requests"] == 3
    assert s["steady_state_start_s"] == pytest.approx(1.0)
    assert s["steady_state_end_s"] == pytest.approx(2.5)
    assert s["steady_state_duration_s"] == pytest.approx(1.5)
    assert s["steady_state_output_tokens"] == 4  # 1500 (1) + 1200 (1) + 2400 (2)
    assert s["steady_state_output_throughput_tokens_per_s"] == pytest.approx(4 / 1.5)
    # whole-run figure stays beside it: 12 tokens over 4 s
    assert s["output_throughput_tokens_per_s"] == pytest.approx(3.0)


def test_steady_state_null_when_never_reached_or_no_target():
    # a cap of 10 with 4 requests means 4 could be in flight; 0.9 × 4 = 3.6 is never reached
    s = _closed(10)
    assert s["steady_state_target_in_flight"] == 4
    assert s["steady_state_output_throughput_tokens_per_s"] is None
    assert s["steady_state_start_s"] is None
    s = _closed(None)
    assert s["steady_state_output_throughput_tokens_per_s"] is None
    assert s["max_concurrency"] is None


def test_vllm_and_sglang_field_names_are_present():
    s = _closed(3, request_rate_per_s=4.0, burstiness=0.5, percentiles=(50, 99.9))
    vllm = ["duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
            "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
            "max_output_tokens_per_s", "max_concurrent_requests", "max_concurrency",
            "request_rate", "burstiness"]
    sglang = ["input_throughput", "concurrency", "total_throughput", "p95_itl_ms", "max_itl_ms"]
    for m in ("ttft", "tpot", "itl", "e2el", "e2e_latency"):
        for stat in ("mean", "median", "std", "p50", "p90", "p95", "p99", "p99.9"):
            assert f"{stat}_{m}_ms" in s
    for key in vllm + sglang:
        assert key in s, key
    assert (s["request_rate"], s["burstiness"], s["max_concurrency"]) == (4.0, 0.5, 3)
    assert s["percentiles"] == [50.0, 99.9]
    assert _closed(3)["request_rate"] == "inf"
    assert json.loads(json.dumps(s, allow_nan=False)) == s  # plain JSON, no numpy scalars


def test_printed_table_follows_the_reference_layout():
    s = _closed(3)
    text = format_summary_table(s)
    lines = text.splitlines()
    assert lines[0] == "=" * 12 + " Serving Benchmark Result " + "=" * 12
    assert lines[-1] == "=" * 50
    assert f"{'Failed requests:':<40} {0:<10}" in lines
    assert f"{'Benchmark duration (s):':<40} {4.0:<10.2f}" in lines
    assert f"{'Steady-state output tput (tok/s):':<40} {4 / 1.5:<10.2f}" in lines
    assert f"{'Peak concurrent requests:':<40} {3:<10}" in lines
    for title in ("Time to First Token", "Time per Output Token (excl. 1st token)",
                  "Inter-token Latency", "End-to-end Latency"):
        assert f"{title:-^50}" in lines
    assert any(line.startswith("Mean ITL/token (ms):") for line in lines)
    assert any(line.startswith("Mean queue time (ms):") for line in lines)
    assert all(len(line) <= 100 for line in lines)


def test_summary_frame_has_one_flat_row_per_cell():
    a = _closed(3)
    b = _closed(None, request_rate_per_s=2.0, goodput_slos_ms={"ttft": 500})
    frame = summary_frame([a, b])
    assert frame.height == 2
    assert "errors" not in frame.columns and "percentiles" not in frame.columns
    assert frame.schema["request_rate"] == pl.Float64
    assert frame["request_rate"].to_list() == [math.inf, 2.0]
    assert frame["request_goodput"].to_list()[0] is None
    assert frame["max_concurrent_requests"].to_list() == [3, 3]
    assert all(dtype != pl.Object for dtype in frame.schema.values())


def test_offline_counts_engine_tokens_and_reports_nominal_beside():
    s = summarize_offline(2.0, [10, 20], [5, 7], nominal_input_len=16, nominal_output_len=8)
    assert s["elapsed_time"] == 2.0 and s["num_requests"] == 2
    assert s["requests_per_second"] == pytest.approx(1.0)
    assert s["total_num_tokens"] == 42
    assert s["tokens_per_second"] == s["total_tokens_per_s"] == pytest.approx(21.0)
    assert s["output_tokens_per_s"] == s["output_throughput"] == pytest.approx(6.0)
    assert s["input_throughput"] == pytest.approx(15.0)
    assert s["nominal_total_tokens"] == 48
    assert s["nominal_total_tokens_per_s"] == pytest.approx(24.0)
    assert "Offline Throughput Result" in format_summary_table(s)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"goodput_slos_ms": {"e2e": 10}}, "Did you mean 'e2el'"),
        ({"goodput_slos_ms": {"ttft": -1}}, "goodput_slos_ms"),
        ({"percentiles": (101,)}, "percentiles"),
        ({"request_rate_per_s": 0}, "request_rate_per_s"),
        ({"burstiness": 0}, "burstiness"),
        ({"target_concurrency": 0}, "target_concurrency"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, match):
    args = {"target_concurrency": 3, "request_rate_per_s": None, "goodput_slos_ms": None}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        summarize_cell(requests_frame(CLOSED_LOOP), chunks_frame(CLOSED_STREAMS), **args)


def test_tables_must_hold_one_cell_and_some_rows():
    rows = [*CLOSED_LOOP[:1], {**CLOSED_LOOP[1], "cell_id": "cell-b"}]
    with pytest.raises(ConfigError, match="one cell per summary"):
        summarize_cell(requests_frame(rows), chunks_frame({}), target_concurrency=None,
                       request_rate_per_s=None, goodput_slos_ms=None)
    with pytest.raises(ConfigError, match="at least one request"):
        summarize_cell(requests_frame([]), chunks_frame({}), target_concurrency=None,
                       request_rate_per_s=None, goodput_slos_ms=None)
    with pytest.raises(ConfigError, match="t_ns"):
        summarize_cell(requests_frame(CLOSED_LOOP), chunks_frame({}).drop("t_ns"),
                       target_concurrency=None, request_rate_per_s=None, goodput_slos_ms=None)
    with pytest.raises(ConfigError, match="elapsed_s"):
        summarize_offline(0, [1], [1], 1, 1)


def test_a_multi_turn_cell_targets_one_request_per_session_in_flight():
    # 4 sessions × 3 turns under a cap of 8: a session's turns run one after another, so 4 is the
    # most that can be in flight (not min(8, 12 rows)); the window at ≥ 3.6 opens at the 4th start
    rows, streams = [], {}
    for session in range(4):
        for turn in range(3):
            rid, start = 3 * session + turn, 1000 * turn + session
            rows.append({"request_id": rid, "sent": start, "done": start + 900, "output_tokens": 9,
                         "session": session, "turn": turn})
            streams[rid] = [(start + 100 * k, "token", 1) for k in range(1, 10)]
    s = summarize_cell(requests_frame(rows), chunks_frame(streams), target_concurrency=8)
    assert s["max_concurrent_requests"] == 4
    assert s["steady_state_target_in_flight"] == 4
    assert s["steady_state_threshold_in_flight"] == pytest.approx(3.6)
    # open when session 3's first turn starts (3 ms); close when session 0's last turn ends (2900 ms)
    assert (s["steady_state_start_s"], s["steady_state_end_s"]) == (pytest.approx(0.003), pytest.approx(2.9))
    # every token but each session's last, at 2900-2903 ms: the window's open end
    assert s["steady_state_output_tokens"] == 4 * 3 * 9 - 4
    # a cap below the session count still rules
    assert summarize_cell(requests_frame(rows), chunks_frame(streams),
                          target_concurrency=2)["steady_state_target_in_flight"] == 2


def test_rows_outside_a_session_each_count_as_one_stream():
    from raybench.analysis.cell import concurrent_streams

    rows = [{"request_id": i, "sent": 0, "done": 10, "session": session}
            for i, session in enumerate([0, 0, 0, 1, 1, None, None])]
    assert concurrent_streams(requests_frame(rows)) == 2 + 2
    assert concurrent_streams(requests_frame(rows).drop("session")) == 7  # an older table: one per row


def test_no_successful_token_means_no_steady_state_rate_not_a_measured_zero():
    # both slots were busy the whole cell, so the in-flight level was reached, but both requests failed
    rows = [{"request_id": 0, "sent": 0, "done": 10, "status": "http_error", "http_status": 500},
            {"request_id": 1, "sent": 0, "done": 20, "status": "timeout"}]
    s = summarize_cell(requests_frame(rows), chunks_frame({1: [(5, "token", 1)]}), target_concurrency=2)
    assert s["peak_output_tokens_per_s"] is None
    assert s["steady_state_output_throughput_tokens_per_s"] is None
    assert s["steady_state_start_s"] is None and s["steady_state_output_tokens"] is None
    table = format_summary_table(s)
    assert "Steady-state output tput (tok/s):        n/a" in table
    assert "Steady-state window (s):                 n/a" in table
