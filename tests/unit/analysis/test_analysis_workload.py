"""Per-turn TTFT of multi-turn cells, and sends against a schedule."""

import pytest

from raybench.analysis.table import format_summary_table
from raybench.analysis.workload import turn_fields

from analysis_tables import chunks_frame, requests_frame


def test_ttft_per_turn_from_the_first_token_of_each_request():
    rows, streams = [], {}
    for session in range(3):
        for turn in range(2):
            rid = session * 2 + turn
            sent = 100.0 * rid
            ttft = 10.0 + 40.0 * turn + session  # later turns slower here
            rows.append({"request_id": rid, "sent": sent, "done": sent + ttft + 5, "output_tokens": 2,
                         "session": session, "turn": turn})
            streams[rid] = [(sent + ttft, "token", 1), (sent + ttft + 5, "token", 1), (sent + ttft + 5, "done", 0)]
    fields = turn_fields(requests_frame(rows), chunks_frame(streams))
    assert fields["num_sessions"] == 3
    by_turn = {t["turn"]: t for t in fields["ttft_by_turn"]}
    assert by_turn[0]["mean_ttft_ms"] == pytest.approx(11.0) and by_turn[1]["mean_ttft_ms"] == pytest.approx(51.0)
    assert by_turn[1]["count_ttft"] == 3


def test_no_sessions_no_turn_fields():
    rows = [{"request_id": 0, "sent": 0.0, "done": 5.0}]
    assert turn_fields(requests_frame(rows), chunks_frame({0: [(2.0, "token", 1)]})) == {}


def test_the_table_shows_turns_and_lateness():
    from raybench.analysis.summary import summarize_cell

    rows = [{"request_id": i, "sched": 0.0, "sent": 1.0, "done": 20.0, "output_tokens": 2, "session": 0, "turn": i}
            for i in range(2)]
    streams = {i: [(5.0, "token", 1), (20.0, "token", 1)] for i in range(2)}
    requests, chunks = requests_frame(rows), chunks_frame(streams)
    summary = {**summarize_cell(requests, chunks), **turn_fields(requests, chunks)}
    table = format_summary_table(summary)
    assert "Turn 1 mean / P99 TTFT (ms):" in table and "Sends fell behind schedule:" in table


def test_a_turn_none_of_whose_requests_succeeded_prints_as_na_in_the_table():
    from raybench.analysis.summary import summarize_cell

    # turn 1 of each session was refused (say, beyond the context length): its statistics are null
    rows = [{"request_id": 2 * s + t, "sent": 0.0, "done": 20.0, "output_tokens": 2 if t == 0 else None,
             "session": s, "turn": t, **({"status": "http_error", "http_status": 400} if t else {})}
            for s in range(2) for t in range(2)]
    streams = {2 * s: [(5.0, "token", 1), (20.0, "token", 1)] for s in range(2)}
    requests, chunks = requests_frame(rows), chunks_frame(streams)
    summary = {**summarize_cell(requests, chunks), **turn_fields(requests, chunks)}
    assert {t["turn"]: t["mean_ttft_ms"] for t in summary["ttft_by_turn"]} == {0: pytest.approx(5.0), 1: None}
    table = format_summary_table(summary)
    assert "Turn 1 mean / P99 TTFT (ms):" in table and "n/a / n/a" in table
