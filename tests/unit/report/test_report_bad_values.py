"""Values no measurement has, inside a source: a one-line error naming the file, line or field; failed requests marked."""

import json
import re
from html import escape as html_escape

import polars as pl
import pytest
from click.testing import CliRunner
from report_fixtures import write_run_dir

from raybench.cli import main
from raybench.errors import ConfigError
from raybench.report import build_report
from raybench.report.sources import published_csv, read_source

C4 = "sim-online-c4-i512-o64"
B32 = "sim-offline-engine-b32-i512-o64"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _damage(run, cell_id, key, value):
    path = run / "cells" / cell_id / "summary.json"
    summary = json.loads(path.read_text())
    if key.startswith("cell."):
        summary["cell"][key.removeprefix("cell.")] = value
    else:
        summary[key] = value
    path.write_text(json.dumps(summary))  # NaN as JSON's NaN, as json.dumps writes it
    return path


@pytest.mark.parametrize(("cell_id", "key", "value", "why"), [
    (C4, "mean_ttft_ms", "fast", "mean_ttft_ms='fast' is not a number"),
    (C4, "mean_ttft_ms", [20.0], r"mean_ttft_ms=\[20.0\] is not a number"),
    (C4, "p99_e2el_ms", {"ms": 1}, r"p99_e2el_ms=\{'ms': 1\} is not a number"),
    (C4, "duration_s", True, "duration_s=True is not a number"),
    (C4, "mean_ttft_ms", float("nan"), "mean_ttft_ms=nan is not a finite number"),
    (C4, "total_token_throughput", -5.0,
     r"total_token_throughput=-5.0 is impossible \(a measured cell has total_token_throughput >= 0\)"),
    (C4, "completed", -1, "completed=-1 is impossible"),
    (C4, "cell.concurrency", "four", "cell.concurrency='four' is not a number"),
    (C4, "cell.prefix_len", "abc", "cell.prefix_len='abc' is not a number"),
    (C4, "cell.input_len", 512.5, "cell.input_len=512.5 is not a whole number"),
    (B32, "tokens_per_second", "many", "tokens_per_second='many' is not a number"),
    # these three were tracebacks: an unhashable cell id, a comparison with text, a window polars cannot build
    (C4, "cell_id", [1], r"cell_id=\[1\] is not a cell id"),
    (C4, "lost_actors", "two", "lost_actors='two' is not a number"),
    (C4, "steady_state_end_s", None, "steady_state_start_s and steady_state_end_s are the two ends of one window"),
])
def test_a_summary_value_raybench_never_writes_names_the_file_and_the_field(tmp_path, cell_id, key, value, why):
    run = write_run_dir(tmp_path / "e" / "run")
    path = _damage(run, cell_id, key, value)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: {why}.*restore it from a copy, or rename it"):
        read_source(run)
    for args in (["report", run, "--no-images"], ["compare", run, "published", "--out", tmp_path / "cmp", "--no-images"]):
        result = _invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert str(path) in result.output and "Error: " in result.output


def test_a_null_metric_in_a_summary_is_missing_not_an_error(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    _damage(run, C4, "p99_ttft_ms", None)  # raybench writes null for a metric without samples
    frame = read_source(run).frame
    assert frame.filter(frame["cell_id"] == C4)["p99_ttft_ms"].to_list() == [None]


SEED_ROWS = 3  # header + the first rows of the published CSV: a small, valid reference


def _csv(tmp_path, edits=(), *, blank_after=None):
    lines = published_csv().read_text().splitlines()[:SEED_ROWS + 1]
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    for row, key, value in edits:
        rows[row][header.index(key)] = value
    text = [",".join(r) for r in [header, *rows]]
    if blank_after is not None:
        text.insert(blank_after, "")
    path = tmp_path / "ref.csv"
    path.write_text("\n".join(text) + "\n")
    return path


def test_every_published_row_stays_usable_and_the_one_with_a_failed_request_is_marked():
    rows = read_source("published")
    assert rows.frame.height == rows.usable().height == 117 and not rows.left_out
    # MI300X SGLang at c128, output 6400: 499 of 500 completed
    assert rows.marked == (("line 46: 1 of 500 requests failed; its throughput and latencies cover only the 499 "
                            "that completed, at a lower load than was sent"),)


def test_csv_rows_with_failed_requests_are_marked_and_one_without_a_completed_request_left_out(tmp_path):
    header = published_csv().read_text().splitlines()[0].split(",")
    # as the clients write a result in which every request failed: 0 for every rate and latency
    zeros = [(1, key, "0") for key in header if key == "completed" or key.endswith(("_ms", "_tok_s", "_req_s"))]
    path = _csv(tmp_path, [(0, "completed", "250"), *zeros])
    rows = read_source(path)
    assert rows.marked == (("line 2: 250 of 500 requests failed; its throughput and latencies cover only the 250 "
                            "that completed, at a lower load than was sent"),)
    assert list(rows.left_out.values()) == ["line 3: no request completed (500 of 500 failed), so nothing was measured"]
    gone = rows.frame.filter(rows.frame["cell_id"] == next(iter(rows.left_out))).row(0, named=True)
    assert gone["total_throughput_tokens_per_s"] is None and gone["mean_ttft_ms"] is None and gone["failed"] == 500
    assert rows.usable().height == 2
    result = _invoke("report", path, "--out", tmp_path / "rep", "--no-images")
    assert result.exit_code == 0, result.output
    assert f"warning: {rows.marked[0]}" in result.output
    assert "line 3: no request completed" in (tmp_path / "rep" / "report.html").read_text()


@pytest.mark.parametrize(("edits", "message"), [
    ([(0, "completed", "0")], "line 2: completed=0 but request_throughput_req_s=1.143422903: "),
    ([(0, "completed", "501")], "line 2: completed=501 is impossible with num_prompts=500"),
])
def test_a_csv_row_without_a_completed_request_is_still_checked(tmp_path, edits, message):
    with pytest.raises(ConfigError, match=re.escape(f"ref.csv {message}")):
        read_source(_csv(tmp_path, edits))


def test_a_bad_csv_mode_names_the_file_and_the_line_an_editor_shows(tmp_path):
    path = _csv(tmp_path, [(1, "mode", "fast")])
    with pytest.raises(ConfigError, match=re.escape(f"{path} line 3: unknown mode 'fast'; available: offline, online")):
        read_source(path)
    result = _invoke("report", path, "--out", tmp_path / "rep", "--no-images")
    assert result.exit_code == 1 and f"{path} line 3: unknown mode 'fast'" in result.output


def test_a_csv_line_number_counts_blank_lines(tmp_path):
    path = _csv(tmp_path, [(1, "total_throughput_tok_s", "fast")], blank_after=2)  # rows on lines 2, 4, 5
    with pytest.raises(ConfigError, match=re.escape(f"{path} line 4: total_throughput_tok_s='fast' is not a number")):
        read_source(path)


def test_a_csv_row_with_more_values_than_columns_is_refused(tmp_path):
    path = _csv(tmp_path)
    lines = path.read_text().splitlines()
    lines[2] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path} line 3 has 46 values for the 45 columns of its header")):
        read_source(path)


@pytest.mark.parametrize("missing", ["requests.parquet", "chunks.parquet"])
def test_an_online_cell_without_its_rows_is_said_to_miss_them_not_to_be_offline(tmp_path, missing):
    run = write_run_dir(tmp_path / "e" / "run")
    (run / "cells" / C4 / missing).unlink()
    result = build_report(run, images=False)
    html = (run / "report.html").read_text()
    line = (f"cell {C4}: {missing} is missing from {run / 'cells' / C4}, so no drill-down is drawn; its summary's "
            "numbers stand")
    assert any(w.startswith(line) for w in result.warnings), result.warnings
    assert html_escape(line) in html and "rename its summary.json" in html
    # the offline engine cell still says why it has no drill-down
    assert html.count("offline engine mode: one batched generate") == 1


@pytest.mark.parametrize("regimes, ok", [(["kv_full"], True), (None, True), (5, False), (["kv_full", 3], False)])
def test_a_prediction_s_extrapolated_regimes_are_names_or_a_one_line_error(tmp_path, regimes, ok):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    _damage(run, C4, "prediction", True)
    path = _damage(run, C4, "extrapolated", regimes)
    if ok:
        [value] = read_source(run).frame.filter(pl.col("cell_id") == C4)["extrapolated"].to_list()
        assert value == (None if regimes is None else "kv_full")
    else:
        with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: extrapolated=.* is not a list"):
            read_source(run)
