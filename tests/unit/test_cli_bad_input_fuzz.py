"""Bad input found by fuzzing the CLI: each case gets one line naming the input and the fix, never a
traceback and never a number computed from it. No Ray: every case fails before a cluster would start."""

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from raybench.backends.external import ExternalBackend
from raybench.calibration import parse_filter
from raybench.cli import main
from raybench.errors import ConfigError
from raybench.experiment import load_experiment
from raybench.plan import parse_only
from raybench.report.sources import read_source

sys.path.insert(0, str(Path(__file__).parent / "report"))  # the records the report tests write
from report_fixtures import sglang_record, vllm_record


def _vllm(**edits) -> dict:
    return {**vllm_record(concurrency=4, completed=10, input_len=100, output_len=50, duration_s=2.0, ttft_ms=50,
                          tpot_ms=10), **edits}


@pytest.fixture
def no_run(monkeypatch):
    """A flag these tests refuse, let through, would start Ray and a run: fail at once instead."""
    def refuse(*args, **kwargs):
        raise AssertionError("the bad flag reached the run")
    monkeypatch.setattr("raybench.cli._run", refuse)


def _one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.stderr


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_results_file_that_is_not_utf8_is_one_line_naming_it(tmp_path, suffix):
    path = tmp_path / f"results{suffix}"
    path.write_bytes(b"\xb6\x00\xff garbage")
    result = CliRunner().invoke(main, ["report", str(path), "--out", str(tmp_path / "o"), "--no-images"])
    assert f"{path} is not UTF-8 text (byte 0" in _one_line_error(result)


@pytest.mark.parametrize("edits, message", [
    ({"duration": -2.0}, "duration=-2.0 is impossible"),
    ({"mean_ttft_ms": -50}, "mean_ttft_ms=-50 is impossible"),
    ({"total_token_throughput": -1}, "total_token_throughput=-1 is impossible"),
    ({"completed": -3}, "completed=-3 is impossible"),
    ({"num_prompts": 5}, "completed=10 is impossible with num_prompts=5"),
])
def test_a_vllm_result_with_a_value_no_benchmark_writes_is_refused_naming_the_field(tmp_path, edits, message):
    path = tmp_path / "vllm.json"
    path.write_text(json.dumps(_vllm(**edits)))
    with pytest.raises(ConfigError, match=f"{path}: record 1: {message}"):
        read_source(path)


@pytest.mark.parametrize("key, value", [("median_e2e_latency_ms", -1.0), ("random_input_len", -5)])
def test_an_sglang_result_with_a_negative_latency_or_length_is_refused(tmp_path, key, value):
    # before, a negative random_input_len became the row's input_len as written
    record = sglang_record(concurrency=4, completed=10, input_len=100, output_len=50, duration_s=2.0, ttft_ms=50,
                           tpot_ms=10)
    path = tmp_path / "sglang.jsonl"
    path.write_text(json.dumps({**record, key: value}) + "\n")
    with pytest.raises(ConfigError, match=f"{key}={value} is impossible"):
        read_source(path)


def test_a_valid_vllm_result_still_reads(tmp_path):
    path = tmp_path / "vllm.json"
    path.write_text(json.dumps(_vllm(max_concurrency=None, std_ttft_ms=0.0)))
    assert read_source(path).frame.height == 1


@pytest.mark.parametrize("url, message", [
    ("http://", "a URL with a host"),
    ("http://127.0.0.1:99999", "port 1-65535"),
    ("http://[::1", "a URL with a valid host"),
    ("http://host:abc", "port 1-65535"),
])
def test_a_url_without_a_host_or_with_a_bad_port_is_refused_before_any_request(url, message):
    with pytest.raises(ConfigError, match=message):
        ExternalBackend(name="server", url=url)
    # the CLI builds the backend before it asks the server anything: the error names the URL, not the network
    result = CliRunner().invoke(main, ["bench", "--url", url, "--num-prompts", "2"])
    assert f"url={url!r} is not allowed" in _one_line_error(result)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "https://[::1]:8443/v1", "http://localhost"])
def test_valid_urls_still_build(url):
    assert ExternalBackend(name="server", url=url).url == url


def test_an_experiment_path_that_is_a_fifo_is_not_said_to_be_missing(tmp_path):
    fifo = tmp_path / "exp.py"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_experiment(fifo)
    with pytest.raises(ConfigError, match="neither a directory nor a regular file"):
        read_source(fifo)


def test_an_experiment_file_with_null_bytes_names_no_line_none(tmp_path):
    path = tmp_path / "exp.py"
    path.write_bytes(b"\x00\x01binary")
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert ":None" not in str(err.value) and "syntax error" in str(err.value)


def test_an_experiment_of_the_wrong_type_names_its_type(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text("experiment = 42\n")
    with pytest.raises(ConfigError, match=r"must define `experiment = Experiment\(...\)` \(its `experiment` is of type int\)"):
        load_experiment(path)


@pytest.mark.parametrize("parse", [parse_only, parse_filter])
@pytest.mark.parametrize("text", ["backend=vllm;hardware=H200", "backend=vllm hardware=H200", "backend==vllm"])
def test_only_filters_glued_by_another_separator_say_to_use_commas(parse, text):
    # before, these read as one value that matched nothing: "no cell matches" pointed at the wrong fix
    with pytest.raises(ConfigError, match="filters separated by ','"):
        parse(text)


@pytest.mark.parametrize("args, flag", [
    (["--ramp-up-strategy", "linear", "--ramp-up-start", "inf", "--ramp-up-duration", "5", "--concurrency", "4"],
     "--ramp-up-start"),
    (["--ramp-up-strategy", "linear", "--ramp-up-start", "nan", "--ramp-up-duration", "5", "--concurrency", "4"],
     "--ramp-up-start"),
    (["--request-timeout", "inf"], "--request-timeout"),
    (["--request-timeout", "nan"], "--request-timeout"),
    (["--stall-timeout", "nan"], "--stall-timeout"),
    (["--no-answer-hint-s", "nan"], "--no-answer-hint-s"),
])
def test_bench_number_flags_that_are_nan_or_infinite_are_usage_errors(args, flag, no_run):
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", "--num-prompts", "2", *args])
    assert flag in _one_line_error(result, code=2)


def test_run_refuses_an_infinite_request_timeout_before_reading_the_experiment(tmp_path, no_run):
    result = CliRunner().invoke(main, ["run", str(tmp_path / "missing.py"), "--request-timeout", "inf"])
    assert "--request-timeout" in _one_line_error(result, code=2)


def test_a_profile_that_is_not_an_object_names_the_fields_not_a_module_constant(tmp_path):
    from raybench.sim.config import SimConfigError
    from raybench.sim.profiles import load_profiles

    path = tmp_path / "profiles.json"
    path.write_text('{"profiles": [1]}')
    with pytest.raises(SimConfigError) as err:
        load_profiles(path)
    assert "FIELD_MEANINGS" not in str(err.value) and "engine, gpu, fixed_step_ms" in str(err.value)


def test_a_length_no_row_reads_is_not_parsed_by_the_new_checks(tmp_path):
    # SGLang's generated-shared-prefix records carry random_input_len as an unused default: text there stays ignored
    path = tmp_path / "vllm.json"
    path.write_text(json.dumps(_vllm(input_len=100, random_input_len="n/a")))
    assert read_source(path).frame["input_len"].to_list() == [100]
