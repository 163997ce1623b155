"""Bad command-line input gets one line naming the problem (no Ray, no sockets: it fails first)."""

import os
import signal
import time

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
        (["--backend", "sim", "--goodput", "ttft:-1"], "the SLO must be a finite number of milliseconds > 0"),
        (["--backend", "sim", "--dataset", "prefix", "--input-len", "100", "--prefix-len", "200"], "must be below --input-len"),
        # these were ignored without a word
        (["--backend", "sim", "--dataset", "prefix", "--input-len", "3200", "--num-prompts", "50"],
         "--num-prompts does not size --dataset prefix: give --prefix-groups and --prompts-per-group instead"),
        (["--backend", "sim", "--dataset", "multiturn", "--num-prompts", "50"],
         "--num-prompts does not size --dataset multiturn: give --num-sessions instead"),
        ([], "give exactly one of --url"),
        (["--backend", "sim", "--url", "http://127.0.0.1:1"], "give exactly one of --url"),
    ],
)
def test_bench_rejects_bad_values_with_one_line(args, message):
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, line",
    [
        # a duration alone was ignored: the cell ran without a ramp
        (["--ramp-up-duration", "5"], ("Error: --ramp-up-duration goes with --ramp-up-strategy linear|exponential; "
                                       "give it too, or leave them out")),
        (["--ramp-up-start", "2", "--ramp-up-duration", "5"],
         ("Error: --ramp-up-start and --ramp-up-duration go with --ramp-up-strategy linear|exponential; give it too, "
          "or leave them out")),
        # these named the sweep's fields (ramp_start=None, ramp_up_s=0.0), not the flags
        (["--ramp-up-strategy", "linear"], ("Error: --ramp-up-strategy needs --ramp-up-start: the request rate (with "
                                            "--request-rate) or the concurrency the ramp starts from, e.g. --ramp-up-start 1")),
        (["--ramp-up-strategy", "linear", "--ramp-up-start", "1"],
         ("Error: --ramp-up-strategy without --request-rate ramps the concurrency cap: give --ramp-up-duration, the "
          "seconds it takes, e.g. --ramp-up-duration 60")),
        # these named the sweep's field, ramp_start
        (["--ramp-up-strategy", "linear", "--ramp-up-start", "2.5", "--ramp-up-duration", "5"],
         "Error: --ramp-up-start 2.5: without --request-rate it is the concurrency the cap starts from, a whole number"),
        (["--ramp-up-strategy", "linear", "--ramp-up-start", "6", "--ramp-up-duration", "5", "--concurrency", "4"],
         ("Error: --ramp-up-start 6: without --request-rate it is the concurrency the cap starts from, a whole number "
          "up to --concurrency (4)")),
        # a rate ramp spans the requests: the duration was ignored
        (["--ramp-up-strategy", "linear", "--ramp-up-start", "1", "--request-rate", "4", "--ramp-up-duration", "5"],
         ("Error: --ramp-up-duration times a concurrency ramp; with --request-rate the rate ramps over the cell's "
          "requests: leave --ramp-up-duration out")),
        # an infinite shape passed and failed only once the cell ran
        (["--request-rate", "4", "--burstiness", "inf"],
         "Error: Invalid value for --burstiness: inf: the gamma shape must be finite (1 = Poisson, < 1 burstier)"),
    ],
)
def test_bench_ramp_and_burstiness_flags_are_named(monkeypatch, args, line):
    monkeypatch.setattr("raybench.cli._run", lambda *a, **kw: pytest.fail("the cell would have run"))
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", *args])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == line


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


UNKNOWN_GPU = """\
from raybench.experiment import Experiment, Online, SimBackend
experiment = Experiment(name="x", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(gpu="A100"),),
                        online=(Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4),))
"""


@pytest.mark.parametrize("command", [["plan"], ["run"], ["run", "--simulate", "--sim-timing", "zero"]])
def test_unknown_gpu_profile_is_refused_before_ray_and_leaves_no_run_dir(tmp_path, command):
    path = tmp_path / "exp.py"
    path.write_text(UNKNOWN_GPU)
    out = tmp_path / "runs"
    extra = ["--out", str(out)] if command[0] == "run" else []
    result = CliRunner().invoke(main, [*command, str(path), *extra])
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: {path}:2: SimBackend 'sim': gpu='A100' is not allowed; "
                             "the simulator's GPU profiles: H100, H200, MI300X\n")
    assert not out.exists()


def test_bench_refuses_an_unknown_sim_gpu_before_ray(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", "--sim-gpu", "A100", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert result.output == "Error: SimBackend 'sim': gpu='A100' is not allowed; the simulator's GPU profiles: H100, H200, MI300X\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("signum", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_sigterm_is_handled_like_ctrl_c(signum, code, name):
    @main.command(name="_signal_for_test", hidden=True)
    def _signal_for_test() -> None:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this returns

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    # a shell starts background jobs with SIGINT ignored: Python's own handler, as in a terminal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = CliRunner().invoke(main, ["_signal_for_test"])
    finally:
        main.commands.pop("_signal_for_test")
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert result.exit_code == code
    # only `run` keeps cells and resumes (tests/integration/test_run_interrupt_resume.py): no such advice here
    assert result.output == f"interrupted ({name})\n"
