"""Damaged or partial inputs to report and compare: left out with a line saying why, never a traceback."""

import json

import pytest
from click.testing import CliRunner
from report_fixtures import vllm_record, write_run_dir

from raybench.cli import main
from raybench.errors import ConfigError
from raybench.report import build_report, compare_sources
from raybench.report.sources import read_source
from raybench.store.outcome import judge

C4 = "sim-online-c4-i512-o64"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _incomplete_summary_file(run, tmp_path):
    summary = json.loads((run / "cells" / C4 / "summary.json").read_text())
    summary.update(judge(range(32), range(12), why_missing="deadline").fields())
    path = tmp_path / "cell_summary.json"
    path.write_text(json.dumps(summary))
    return path


def test_an_incomplete_cell_summary_given_as_a_file_is_left_out_as_in_its_run_dir(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    path = _incomplete_summary_file(run, tmp_path)
    rows = read_source(path)
    assert rows.usable().height == 0
    assert rows.left_out[C4].startswith(f"cell {C4}: incomplete, 12 of 32 requests recorded")
    with pytest.raises(ConfigError, match=rf"nothing to report in {path}: cell {C4}: incomplete"):
        build_report(path, tmp_path / "rep", images=False)
    with pytest.raises(ConfigError, match=rf"nothing to compare in {path}: no complete cell .*incomplete"):
        compare_sources([path], tmp_path / "cmp", reference=run, images=False)


def test_a_vllm_result_without_a_completed_request_is_left_out_and_shows_no_zero_as_measured(tmp_path):
    record = vllm_record(concurrency=64, completed=0, input_len=3200, output_len=800, duration_s=12.0,
                         ttft_ms=0.0, tpot_ms=0.0)
    record.update(num_prompts=500, failed=500, total_token_throughput=0.0, latencies=[])
    path = tmp_path / "allfailed.json"
    path.write_text(json.dumps(record))
    rows = read_source(path)
    row = rows.frame.row(0, named=True)
    assert row["mean_ttft_ms"] is None and row["total_throughput_tokens_per_s"] is None and row["failed"] == 500
    assert list(rows.left_out.values()) == ["record 1: no request completed (500 of 500 failed), so nothing was measured"]
    result = _invoke("report", path, "--out", tmp_path / "rep", "--no-images")
    assert result.exit_code == 1 and "nothing to report in" in result.output and "Traceback" not in result.output


def test_a_vllm_result_with_failed_requests_is_kept_and_marked(tmp_path):
    record = vllm_record(concurrency=4, completed=250, input_len=512, output_len=64, duration_s=30.0,
                         ttft_ms=20.0, tpot_ms=2.0)
    record.update(num_prompts=500, failed=250)
    path = tmp_path / "halffailed.json"
    path.write_text(json.dumps(record))
    marked = "record 1: 250 of 500 requests failed; its throughput and latencies cover only the 250 that completed"
    result = _invoke("report", path, "--out", tmp_path / "rep", "--no-images")
    assert result.exit_code == 0, result.output
    assert f"warning: {marked}" in result.output
    assert marked in (tmp_path / "rep" / "report.html").read_text()
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    result = _invoke("compare", path, "--reference", run, "--out", tmp_path / "cmp", "--no-images")
    assert result.exit_code == 0, result.output
    assert f"compared, but with failed requests:\n  {path}: {marked}" in result.output


def test_a_truncated_parquet_file_costs_the_drill_down_only(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    requests = run / "cells" / C4 / "requests.parquet"
    requests.write_bytes(requests.read_bytes()[:200])
    result = _invoke("report", run, "--no-images")
    assert result.exit_code == 0, result.output
    assert f"warning: cell {C4}: its rows in {run / 'cells' / C4} are unreadable (ComputeError" in result.output
    assert "no drill-down is drawn, its summary's numbers stand" in result.output
    assert requests.is_file()


def test_an_empty_summary_object_is_a_one_line_error_whose_advice_keeps_the_rows(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    (run / "cells" / C4 / "summary.json").write_text("{}")
    result = _invoke("report", run, "--no-images")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "summary.json is no cell summary (it names no cell_id): restore it from a copy, or rename it" in result.output
    assert "delete" not in result.output and "keeps the cell's present files under its attempts/" in result.output


def test_a_cell_without_its_summary_is_named_as_left_out(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    (run / "cells" / C4 / "summary.json").unlink()
    result = _invoke("report", run, "--no-images")
    assert result.exit_code == 0, result.output
    assert (f"left out of the charts: cell {C4}: no summary.json beside chunks.parquet, requests.parquet"
            in result.output)
    other = write_run_dir(tmp_path / "e" / "other", batch_sizes=())
    result = _invoke("compare", other, run, "--out", tmp_path / "cmp", "--no-images")
    assert result.exit_code == 0, result.output
    assert f"{run}: cell {C4}: no summary.json beside" in result.output


@pytest.mark.parametrize("command", ["report", "compare"])
def test_an_out_below_a_file_is_a_one_line_error(tmp_path, command):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    (tmp_path / "afile").write_text("x")
    args = [command, run] + ([run] if command == "compare" else [])
    result = _invoke(*args, "--out", tmp_path / "afile" / "sub", "--no-images")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"--out {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} is a file, not a directory" in result.output


def test_an_out_that_cannot_be_made_is_a_one_line_error(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    result = _invoke("report", run, "--out", "/proc/raybench-test/x", "--no-images")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--out /proc/raybench-test/x: cannot create the directory" in result.output


def test_compare_into_a_run_directory_keeps_that_run_s_report(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    build_report(run, images=False)
    own = (run / "report.html").read_text()
    result = _invoke("compare", run, "published", "--out", run, "--no-images")
    assert result.exit_code == 0, result.output
    assert (run / "report.html").read_text() == own
    assert (run / "comparison" / "report.html").is_file()
    assert f"the comparison goes to {run / 'comparison'}" in result.output
    assert (run / "comparison" / "ratios.csv").is_file() and not (run / "ratios.csv").exists()


def test_a_report_into_another_run_directory_is_refused_and_that_run_s_report_stays(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    other = write_run_dir(tmp_path / "e" / "other", batch_sizes=())
    build_report(other, images=False)
    own = (other / "report.html").read_text()
    for source in (run, "published"):
        result = _invoke("report", source, "--out", other, "--no-images")
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"--out {other} is another run directory, whose report would be replaced" in result.output
    assert (other / "report.html").read_text() == own
    result = _invoke("report", run, "--out", run, "--no-images")  # its own directory, named: as without --out
    assert result.exit_code == 0, result.output
