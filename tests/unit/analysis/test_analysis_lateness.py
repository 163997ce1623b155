import polars as pl
import pytest

from raybench.analysis.lateness import send_lateness_fields
from raybench.errors import ConfigError


def frame(lateness_ms, scheduled_ns=None):
    n = len(lateness_ms)
    return pl.DataFrame(
        {"send_lateness_ns": [None if v is None else int(v * 1e6) for v in lateness_ms],
         "t_scheduled_ns": list(range(n)) if scheduled_ns is None else scheduled_ns},
        schema={"send_lateness_ns": pl.Int64, "t_scheduled_ns": pl.Int64},
    )


def test_percentiles_and_max_of_send_lateness():
    f = send_lateness_fields(frame([0.1] * 98 + [3.0, 40.0, None]))
    assert f["count_send_lateness"] == 100
    assert f["median_send_lateness_ms"] == pytest.approx(0.1)
    assert f["max_send_lateness_ms"] == pytest.approx(40.0)
    assert f["p99_send_lateness_ms"] == pytest.approx(3.0 + 0.01 * 37.0)
    assert f["late_sends"] == 1
    assert f["sends_late"] is False  # one late send in 100 does not move p99 past 5 ms


def test_a_cell_whose_sends_fell_behind_is_flagged_at_the_threshold_given():
    behind = frame([0.2] * 90 + [8.0] * 10)
    assert send_lateness_fields(behind)["sends_late"] is True
    assert send_lateness_fields(behind, threshold_ms=10)["sends_late"] is False
    assert send_lateness_fields(behind, threshold_ms=10)["late_send_threshold_ms"] == 10.0


def test_a_burst_has_no_schedule_to_fall_behind_but_its_spread_is_measured():
    f = send_lateness_fields(frame([1.0] * 50 + [12.0] * 50, scheduled_ns=[7] * 100))
    assert f["max_send_lateness_ms"] == pytest.approx(12.0)
    assert f["sends_late"] is None and f["late_sends"] is None


def test_no_lateness_column_is_not_measured_not_zero():
    f = send_lateness_fields(pl.DataFrame({"t_sent_ns": [1, 2]}))
    assert f["count_send_lateness"] == 0
    assert f["median_send_lateness_ms"] is None and f["sends_late"] is None


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
def test_threshold_must_be_a_positive_number(bad):
    with pytest.raises(ConfigError, match="late_send_threshold_ms"):
        send_lateness_fields(frame([1.0]), threshold_ms=bad)


def test_the_summary_and_its_table_say_when_sends_fell_behind():
    from raybench.analysis.summary import format_summary_table, summarize_cell
    from raybench.report.drilldown import FlagLevel, cell_flags

    from analysis_tables import chunks_frame, requests_frame

    rows = [{"request_id": i, "sched": 10.0 * i, "sent": 10.0 * i, "done": 10.0 * i + 5, "output_tokens": 1, "late": late}
            for i, late in enumerate([0.1, 0.2, 9.0, 12.0])]
    chunks = chunks_frame({i: [(10.0 * i + 2, "token", 1)] for i in range(4)})
    summary = summarize_cell(requests_frame(rows), chunks, target_concurrency=4)
    assert summary["max_send_lateness_ms"] == pytest.approx(12.0)
    assert summary["sends_late"] is True and summary["late_sends"] == 2
    assert "Sends fell behind schedule:              YES: p99 > 5 ms" in format_summary_table(summary)
    warnings = [f.text for f in cell_flags(summary) if f.level is FlagLevel.WARNING]
    assert any("sends fell behind schedule" in w for w in warnings)
    assert not any("leaves the machine itself" in w for w in warnings)  # the self-check's verdicts are unknown
    # a client neither saturated nor contended: what is left is the machine's own stalls
    checked = {**summary, "client_saturated": False, "host_contended": False}
    assert any("leaves the machine itself" in f.text for f in cell_flags(checked))
    contended = {**checked, "host_contended": True, "actors": []}
    assert not any("leaves the machine itself" in f.text for f in cell_flags(contended))

    relaxed = summarize_cell(requests_frame(rows), chunks, target_concurrency=4, late_send_threshold_ms=20)
    assert relaxed["sends_late"] is False
    assert "Sends fell behind schedule:              no" in format_summary_table(relaxed)

    burst = summarize_cell(requests_frame([{**r, "sched": 0.0} for r in rows]), chunks, target_concurrency=4)
    assert burst["sends_late"] is None and burst["max_send_lateness_ms"] == pytest.approx(12.0)
    assert "Sends fell behind schedule:              n/a (a burst)" in format_summary_table(burst)


def test_a_clock_that_drifted_is_a_warning_in_the_report():
    from raybench.report.drilldown import FlagLevel, cell_flags

    flags = cell_flags({"failed": 0, "clock_drift_flagged": True, "clock_drift_max_ms": 3.25})
    assert [f.level for f in flags] == [FlagLevel.WARNING]
    assert "drifted 3.25 ms" in flags[0].text


def _multi_turn_at_rate_inf(second_turn_late_ms):
    """128 sessions × 2 turns at rate inf: the first turns leave as one burst at the cell start
    (0.1 ms of client work each), each second turn is due its think time after its first."""
    from analysis_tables import requests_frame

    rows = []
    for s in range(128):
        rows.append({"request_id": 2 * s, "sched": 0, "sent": 0.1 * s, "done": 500 + s, "late": 0.1 * s,
                     "session": s, "turn": 0})
        due = 600 + 3.0 * s
        rows.append({"request_id": 2 * s + 1, "sched": due, "sent": due + second_turn_late_ms,
                     "done": due + 500, "late": second_turn_late_ms, "session": s, "turn": 1})
    return requests_frame(rows)


def test_a_multi_turn_burst_is_not_judged_but_the_later_turns_are():
    on_time = send_lateness_fields(_multi_turn_at_rate_inf(0.05))
    assert on_time["sends_late"] is False and on_time["late_sends"] == 0
    assert on_time["count_send_lateness"] == 128  # the second turns, which had a schedule
    assert on_time["p99_send_lateness_ms"] == pytest.approx(0.05)
    # the burst took 12.7 ms to leave: reported beside, never flagged
    assert (on_time["burst_sends"], on_time["max_burst_send_lateness_ms"]) == (128, pytest.approx(12.7))
    behind = send_lateness_fields(_multi_turn_at_rate_inf(8.0))
    assert behind["sends_late"] is True and behind["late_sends"] == 128


def test_a_lone_first_arrival_is_part_of_the_schedule_not_a_burst():
    f = send_lateness_fields(frame([9.0, 0.1, 0.1], scheduled_ns=[0, 5, 9]))
    assert f["burst_sends"] == 0 and f["max_burst_send_lateness_ms"] is None
    assert f["late_sends"] == 1 and f["count_send_lateness"] == 3


def test_the_table_says_the_opening_burst_was_left_out():
    from analysis_tables import chunks_frame

    from raybench.analysis.summary import format_summary_table, summarize_cell

    requests = _multi_turn_at_rate_inf(0.05)
    chunks = chunks_frame({int(r): [(700.0, "token", 1)] for r in requests["request_id"]})
    table = format_summary_table(summarize_cell(requests, chunks, target_concurrency=128))
    assert "Sends fell behind schedule:              no" in table
    assert "Opening burst, not judged:               128 sends, max 12.70 ms" in table
