"""An incomplete cell is never compared or charted as if measured; the report flags it."""

import json

import polars as pl
import pytest
from click.testing import CliRunner
from report_fixtures import write_run_dir

from raybench.cli import main
from raybench.errors import ConfigError
from raybench.report import build_report, compare_sources
from raybench.store.outcome import judge

C4 = "sim-online-c4-i512-o64"


def _make_incomplete(run, cell_id=C4):
    path = run / "cells" / cell_id / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(judge(range(32), range(12), why_missing="load generators lost and not replaced: raybench:x:1").fields())
    path.write_text(json.dumps(summary))


def test_compare_leaves_out_incomplete_cells_and_says_which(tmp_path):
    fast = write_run_dir(tmp_path / "q" / "fast", itl_ms=2.0)
    slow = write_run_dir(tmp_path / "q" / "slow", itl_ms=4.0)
    _make_incomplete(slow)
    result = CliRunner().invoke(main, ["compare", str(fast), str(slow), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    ratios = pl.read_csv(tmp_path / "cmp" / "ratios.csv")
    assert ratios.height == 2 and C4 not in ratios["cell_id"].to_list()  # c16 and b32 only
    assert "left out, not complete:" in result.output
    assert f"{slow}: cell {C4}: incomplete, 12 of 32 requests recorded (20 planned requests have no row" in result.output


def test_compare_refuses_a_run_with_no_complete_cell(tmp_path):
    fast = write_run_dir(tmp_path / "fast", concurrencies=(4,), batch_sizes=())
    slow = write_run_dir(tmp_path / "slow", concurrencies=(4,), batch_sizes=())
    _make_incomplete(slow)
    with pytest.raises(ConfigError, match=rf"nothing to compare in {slow}: no complete cell \(.*incomplete"):
        compare_sources([fast, slow], tmp_path / "cmp", images=False)


def test_the_report_flags_an_incomplete_cell_and_draws_no_chart_from_it(tmp_path):
    run = write_run_dir(tmp_path / "run")
    _make_incomplete(run)
    build_report(run, images=False)
    html = (run / "report.html").read_text()
    assert "1 cell(s) not complete, left out of every chart" in html
    assert f"cell {C4}: incomplete, 12 of 32 requests recorded" in html
    assert "INCOMPLETE: 12 of 32 requests recorded" in html  # the cell's drill-down flag
    specs = json.loads(html.split('id="raybench-specs">')[1].split("</script>")[0])
    tput = specs["chart-online_throughput_vs_latency"]
    drawn = {p.get("concurrency") for p in tput["datasets"][tput["data"]["name"]]}
    assert 4 not in drawn and 16 in drawn


def test_the_report_lists_a_cell_the_driver_was_killed_in(tmp_path):
    import pyarrow.parquet as pq

    from raybench.store.cells import CellWriter
    from raybench.store.rundir import RunDir
    from raybench.store.schema import REQUESTS_SCHEMA

    run = write_run_dir(tmp_path / "run")
    plan = json.loads((run / "plan.json").read_text())
    plan["cells"].append({"id": "sim-online-c64-i512-o64", "num_prompts": 32})
    (run / "plan.json").write_text(json.dumps(plan))
    rows = pq.read_table(run / "cells" / C4 / "requests.parquet").slice(0, 5).cast(REQUESTS_SCHEMA)
    writer = CellWriter(RunDir(run).cell_dir("sim-online-c64-i512-o64"))
    writer.write_requests(rows.to_batches()[0])
    writer.flush()  # then the driver died: parts, no summary
    build_report(run, images=False)
    html = (run / "report.html").read_text()
    assert ("cell sim-online-c64-i512-o64: incomplete, 5 of 32 requests recorded "
            "(the run stopped mid-cell; 5 request rows kept in parts/)") in html


def _failed_cell(cell_id="sim-online-c64-i512-o64"):
    """A cell that failed before recording any row (its warm-up refused): a summary, no rows."""
    from report_fixtures import cell_json

    return {"cell_id": cell_id, "outcome": "failed", "planned_requests": 32, "recorded_requests": 0,
            "missing_requests": 32, "outcome_reason": "warm-up request to http://127.0.0.1:1/v1/completions failed: "
            "HTTP 500", "cell": cell_json(cell_id, backend="sim", mode="online", input_len=512, output_len=64,
                                          concurrency=64, num_prompts=32)}


def test_a_cell_that_failed_before_any_row_is_no_damage_and_is_listed_once(tmp_path):
    run = write_run_dir(tmp_path / "run", extra_cells=[_failed_cell()])
    result = build_report(run, images=False)
    # it never wrote requests.parquet or chunks.parquet: nothing to restore, nothing copied in part
    assert not any("missing from" in w or "restore" in w for w in result.warnings), result.warnings
    html = (run / "report.html").read_text()
    assert "copied in part" not in html and "missing from" not in html
    assert "1 cell(s) not complete" in html
    assert html.count("cell sim-online-c64-i512-o64: failed, 0 of 32 requests recorded") == 1
    assert "no drill-down: the cell recorded no request rows" in html


def test_cells_completed_counts_only_complete_cells(tmp_path):
    run = write_run_dir(tmp_path / "run", extra_cells=[_failed_cell()])
    _make_incomplete(run)
    build_report(run, images=False)
    html = (run / "report.html").read_text()
    # 4 planned: c4 (incomplete), c16, b32 and c64 (failed) each have a summary, 2 completed
    assert "<dt>cells planned / completed</dt><dd>4 / 2</dd>" in html


def _interrupted_in_first_cell(run):
    """A run dir as Ctrl-C leaves it in its first cell: plan.json, env.json, parts/ of 5 rows, no summary."""
    import pyarrow.parquet as pq

    from raybench.store.cells import CellWriter
    from raybench.store.rundir import RunDir
    from raybench.store.schema import REQUESTS_SCHEMA

    whole = write_run_dir(run.parent / "whole", concurrencies=(4,), batch_sizes=())
    run.mkdir(parents=True)
    for name in ("plan.json", "env.json"):
        (run / name).write_text((whole / name).read_text())
    rows = pq.read_table(whole / "cells" / C4 / "requests.parquet").slice(0, 5).cast(REQUESTS_SCHEMA)
    writer = CellWriter(RunDir(run).cell_dir(C4))
    writer.write_requests(rows.to_batches()[0])
    writer.flush()
    return run


def test_the_report_of_a_run_stopped_in_its_first_cell_lists_the_cell(tmp_path):
    run = _interrupted_in_first_cell(tmp_path / "run")
    result = CliRunner().invoke(main, ["report", str(run), "--no-images"])
    assert result.exit_code == 0, result.output
    assert f"left out of the charts: cell {C4}: incomplete, 5 of 32 requests recorded" in result.output
    html = (run / "report.html").read_text()
    assert "1 cell(s) not complete, left out of every chart" in html
    assert "<dt>cells planned / completed</dt><dd>1 / 0</dd>" in html


def test_a_run_with_no_summary_is_refused_where_rows_are_needed(tmp_path):
    from raybench.calibration import load_reference

    run = _interrupted_in_first_cell(tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"nothing to compare in {run}: no complete cell \(.*incomplete, 5 of 32"):
        compare_sources([run], tmp_path / "cmp", reference="published", images=False)
    with pytest.raises(ConfigError, match=rf"--reference {run}: no usable rows .*incomplete, 5 of 32"):
        load_reference([str(run)])
    # neither plan.json nor a summary: no run directory at all
    (run / "plan.json").unlink()
    with pytest.raises(ConfigError, match="has no cells/\\*/summary.json: is it a raybench run directory"):
        build_report(run, images=False)
