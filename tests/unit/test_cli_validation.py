"""Bad command-line input gets one line naming the problem (no Ray, no sockets: it fails first)."""

import pytest
from click.testing import CliRunner

from raybench.cli import main


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "sim", "--concurrency", "0"], "Invalid value for '--concurrency': 0 is not in the range x>=1"),
        (["--backend", "sim", "--input-len", "-5"], "Invalid value for '--input-len': -5 is not in the range x>=1"),
        (["--backend", "sim", "--output-len", "0"], "Invalid value for '--output-len'"),
        (["--backend", "sim", "--request-rate", "0"], "Invalid value for '--request-rate': 0.0 is not in the range x>0"),
        (["--backend", "sim", "--request-rate", "-2"], "Invalid value for '--request-rate'"),
        (["--backend", "sim", "--range-ratio", "1"], "Invalid value for '--range-ratio'"),
        (["--backend", "sim", "--num-prompts", "0"], "Invalid value for '--num-prompts'"),
        (["--backend", "sim", "--concurency", "4"], "No such option '--concurency'. Did you mean '--concurrency'?"),
        (["--backend", "sim", "--dataset", "burstgpt"], "Invalid value for '--dataset'"),
        (["--backend", "sim", "--dataset", "sharegpt"], "--dataset-path goes with --dataset sharegpt, custom or trace"),
        (["--backend", "sim", "--dataset-path", "x.json"], "--dataset-path goes with --dataset sharegpt, custom or trace"),
        (["--backend", "sim", "--goodput", "ttft=5"], "expected KEY:MS"),
        (["--backend", "sim", "--goodput", "latency:5"], "expected KEY:MS with KEY one of ttft, tpot, e2el"),
        (["--backend", "sim", "--goodput", "ttft:-1"], "the SLO must be > 0 ms"),
        (["--backend", "sim", "--dataset", "prefix", "--input-len", "100", "--prefix-len", "200"], "must be below --input-len"),
        ([], "give exactly one of --url"),
        (["--backend", "sim", "--url", "http://127.0.0.1:1"], "give exactly one of --url"),
    ],
)
def test_bench_rejects_bad_values_with_one_line(args, message):
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_url_is_a_config_error_not_a_traceback():
    result = CliRunner().invoke(main, ["bench", "--url", "localhost:8000"])
    assert result.exit_code == 1
    assert "url='localhost:8000' is not allowed: an http:// or https:// URL" in result.output


def test_missing_experiment_file_is_named(tmp_path):
    result = CliRunner().invoke(main, ["run", str(tmp_path / "nope.py")])
    assert result.exit_code == 1
    assert f"experiment file {tmp_path / 'nope.py'} does not exist" in result.output


def test_experiment_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from raybench.experiment import Experiment\n\nexperiment = Experiment(\n")
    result = CliRunner().invoke(main, ["run", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: syntax error" in result.output


@pytest.mark.parametrize("command", ["bench", "run", "sim"])
def test_help_has_examples(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
