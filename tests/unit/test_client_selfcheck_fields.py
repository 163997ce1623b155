"""The self-check's verdict, and how each verdict reaches summary.json, the summary table, the
final table and the report's flags: a lagging loop is the client's fault only when it was busy."""

from __future__ import annotations

import pytest

from raybench.analysis.table import _connection_rows
from raybench.loadgen.generator import ClientCheck, SelfCheck
from raybench.loadgen.pool import ActorReport, PoolResult
from raybench.report.drilldown import cell_flags
from raybench.runner import _client_fields
from raybench.telemetry.progress import format_final_table


def check(cpu_s: float, lag_ms: float, wall_s: float = 10.0) -> SelfCheck:
    return SelfCheck(cpu_s=cpu_s, wall_s=wall_s, max_loop_lag_ms=lag_ms, mean_loop_lag_ms=lag_ms / 2)


@pytest.mark.parametrize("cpu_s, lag_ms, verdict", [
    (0.34, 392.0, ClientCheck.HOST_CONTENDED),  # a busy host: the concurrency-1 cell
    (9.5, 392.0, ClientCheck.CLIENT_SATURATED),  # lag while using a whole core: the client itself
    (9.5, 10.0, ClientCheck.OK),  # busy but keeping up
    (0.1, 10.0, ClientCheck.OK),
    (5.0, 60.0, ClientCheck.CLIENT_SATURATED),  # half a core is the line
    (4.9, 60.0, ClientCheck.HOST_CONTENDED),
])
def test_verdict(cpu_s, lag_ms, verdict):
    assert check(cpu_s, lag_ms).verdict() is verdict


def test_no_wall_time_is_no_cpu_share():
    assert check(1.0, 100.0, wall_s=0.0).cpu_share == 0.0


def fields(*checks: SelfCheck | None) -> dict:
    actors = tuple(ActorReport(name=f"a{i}", node="n", num_requests=1, concurrency=1, clock_offset_ns=0,
                               clock_rtt_ns=0, self_check=c) for i, c in enumerate(checks))
    return _client_fields(PoolResult(actors=actors, timed_out=False, t_start_ns=0), expected=2, recorded=2)


def test_summary_fields_for_a_contended_host():
    out = fields(check(0.34, 392.0), check(0.2, 10.0))
    assert out["client_check"] == "host_contended"
    assert out["host_contended"] is True and out["client_saturated"] is False
    assert [a["client_check"] for a in out["actors"]] == ["host_contended", "ok"]
    assert out["actors"][0]["cpu_share"] == 0.034


def test_one_saturated_actor_makes_the_cell_saturated():
    out = fields(check(0.34, 392.0), check(9.0, 200.0), None)
    assert out["client_check"] == "client_saturated"
    assert out["client_saturated"] is True and out["host_contended"] is False


def test_both_verdicts_are_shown_never_silent():
    contended = {"cell_id": "c1", **fields(check(0.34, 392.0)), "retried": 3}
    saturated = {"cell_id": "c2", **fields(check(9.0, 392.0))}
    assert _connection_rows(contended)[0].startswith("Retried (connection closed):")
    assert "host contended" in _connection_rows(contended)[1]
    assert "client saturated" in _connection_rows(saturated)[0]
    assert _connection_rows({"client_check": "ok", "retried": 0}) == []
    table = format_final_table([contended, saturated])
    assert "c1 (host contended)" in table and "c2 (client saturated)" in table
    texts = [f.text for f in cell_flags(contended)]
    assert any(t.startswith("host contended (event-loop lag up to 392 ms while the client used 3% of a core)") for t in texts)
    assert any(t.startswith("3 request(s) sent twice") for t in texts)
    assert not any("client saturated" in t for t in texts)
    assert any(t.startswith("client saturated") for t in (f.text for f in cell_flags(saturated)))
