"""Bad inputs to raybench calibrate: refused with a line naming the row, field or file, never fitted."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from raybench.calibration import load_reference, parse_filter
from raybench.cli import main
from raybench.errors import ConfigError
from raybench.report.sources import published_csv

sys.path.insert(0, str(Path(__file__).parent / "report"))  # the run-dir fixtures the report tests write
from report_fixtures import vllm_record, write_run_dir

SEED_CSV_ROWS = 3  # header + the first rows of the published CSV: a small, valid reference


def _csv(tmp_path, edit=None, *, name="ref.csv", prefix=""):
    lines = published_csv().read_text().splitlines()[:SEED_CSV_ROWS]
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    if edit is not None:
        key, value = edit
        rows[0][header.index(key)] = value
    path = tmp_path / name
    path.write_text(prefix + "\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def _calibrate(*args):
    return CliRunner().invoke(main, ["calibrate", *[str(a) for a in args]])


def test_out_may_not_be_a_reference_file_or_a_file_of_a_reference_run(tmp_path):
    ref = _csv(tmp_path)
    before = ref.read_text()
    result = _calibrate("--reference", ref, "--out", ref)
    assert result.exit_code == 1
    assert f"--out {ref} is --reference {ref}: writing the profiles there would replace measured results" in result.output
    assert ref.read_text() == before
    vllm = tmp_path / "v.json"
    vllm.write_text(json.dumps(vllm_record(concurrency=4, completed=8, input_len=512, output_len=64, duration_s=2.0,
                                           ttft_ms=20, tpot_ms=2, hardware="H200")))
    assert "would replace measured results" in _calibrate("--reference", vllm, "--out", tmp_path / "." / "v.json").output
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=())
    result = _calibrate("--reference", run, "--out", run / "env.json")
    assert f"--out {run / 'env.json'} is a file of --reference {run}" in result.output


@pytest.mark.parametrize(("key", "value", "message"), [
    ("total_throughput_tok_s", "-100", ("line 2: total_throughput_tok_s=-100 is impossible (a measured row has "
                                        "total_throughput_tok_s >= 0)")),
    ("mean_ttft_ms", "-5", "line 2: mean_ttft_ms=-5 is impossible"),
    ("mean_ttft_ms", "0", "line 2: mean_ttft_ms=0 is impossible for a row whose requests completed"),
    ("mean_tpot_ms", "0", "line 2: mean_tpot_ms=0 is impossible with output_len="),
    ("output_len", "0", "line 2: output_len=0 is impossible (a measured row has output_len >= 1)"),
])
def test_a_csv_row_with_an_impossible_value_is_refused_naming_the_row_and_field(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=re.escape(f"ref.csv {message}")):
        load_reference([str(_csv(tmp_path, (key, value)))])


def test_a_csv_with_a_byte_order_mark_reads_as_without(tmp_path):
    plain = load_reference([str(_csv(tmp_path))])
    marked = load_reference([str(_csv(tmp_path, name="bom.csv", prefix="\ufeff"))])
    assert marked.drop("run").equals(plain.drop("run"))


def test_a_repeated_only_key_is_an_error_that_shows_the_bar_form():
    with pytest.raises(ConfigError, match=r"--only: output_len is given twice; .* output_len=A\|B"):
        parse_filter("output_len=800,output_len=1600")
    assert parse_filter("output_len=800|1600") == {"output_len": {"800", "1600"}}


def test_results_with_nothing_complete_are_left_out_and_failures_are_said(tmp_path):
    lines = []
    failed = vllm_record(concurrency=64, completed=0, input_len=3200, output_len=800, duration_s=12.0, ttft_ms=0,
                         tpot_ms=0, hardware="H200")
    failed.update(num_prompts=500, failed=500, total_token_throughput=0.0, latencies=[])
    (tmp_path / "none.json").write_text(json.dumps(failed))
    with pytest.raises(ConfigError, match="no usable rows .*no request completed"):
        load_reference([str(tmp_path / "none.json")], report=lines.append)
    assert lines == [(f"--reference {tmp_path / 'none.json'}: left out record 1: no request completed (500 of 500 "
                      "failed), so nothing was measured")]
    half = vllm_record(concurrency=64, completed=250, input_len=3200, output_len=800, duration_s=300.0, ttft_ms=900,
                       tpot_ms=50, hardware="H200")
    half.update(num_prompts=500, failed=250)
    (tmp_path / "half.json").write_text(json.dumps(half))
    lines.clear()
    assert load_reference([str(tmp_path / "half.json")], report=lines.append).height == 1
    assert lines == [(f"--reference {tmp_path / 'half.json'}: record 1: 250 of 500 requests failed; its throughput "
                      "and latencies cover only the 250 that completed, at a lower load than was sent")]


def test_an_incomplete_cell_summary_file_is_left_out(tmp_path):
    run = write_run_dir(tmp_path / "e" / "run", batch_sizes=(), hardware="H200")
    cell = next(run.glob("cells/*/summary.json"))
    summary = json.loads(cell.read_text())
    summary.update(outcome="incomplete", outcome_reason="deadline", planned_requests=32, recorded_requests=12)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    lines = []
    with pytest.raises(ConfigError, match="no usable rows .*incomplete, 12 of 32 requests recorded"):
        load_reference([str(path)], report=lines.append)
    assert lines and "left out cell" in lines[0]


def _sim_run(tmp_path, timing):
    run = write_run_dir(tmp_path / (timing or "default") / "run", batch_sizes=(32,), hardware="H200")
    env = json.loads((run / "env.json").read_text())
    argv = ["python3", "-m", "raybench", "sim", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "H200"]
    env["servers"] = {"sim": {"kind": "sim", "argv": argv + (["--timing", timing] if timing else [])}}
    (run / "env.json").write_text(json.dumps(env))
    return run


@pytest.mark.parametrize("timing", ["zero", "fixed", None])  # None: no --timing flag, `raybench sim`'s zero
def test_online_cells_of_a_simulator_that_times_no_engine_are_refused(tmp_path, timing):
    run = _sim_run(tmp_path, timing)
    lines = []
    frame = load_reference([str(run)], report=lines.append)
    assert frame["mode"].to_list() == ["offline"]  # the in-process offline engine always runs engine timing
    refused = [line for line in lines if "left out" in line]
    assert len(refused) == 2
    assert f"served by the simulator sim with --timing {timing or 'zero'}: its timing measures no engine" in refused[0]


def test_a_simulator_with_engine_timing_stays_usable(tmp_path):
    timing = "engine"
    run = _sim_run(tmp_path, timing)
    lines = []
    assert load_reference([str(run)], report=lines.append).height == 3
    assert not [line for line in lines if "left out" in line]


def test_a_timed_simulator_run_alone_is_refused_on_the_command_line(tmp_path):
    run = _sim_run(tmp_path, "zero")
    shutil.rmtree(next(run.glob("cells/*offline*")))
    result = _calibrate("--reference", run, "--out", tmp_path / "p.json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no usable rows" in result.output and "--timing zero" in result.output
    assert not (tmp_path / "p.json").exists()
