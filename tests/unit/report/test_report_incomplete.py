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
