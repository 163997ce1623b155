"""A run directory that is not this experiment's measurements, or is damaged, is refused in one line.

Each refusal comes before Ray starts: ``cluster.connect`` is replaced by a failure, so a
refusal that went missing fails the test at once instead of starting a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from raybench.cli import main
from raybench.errors import ConfigError, RunError
from raybench.plan import parse_only
from raybench.store.cells import set_aside
from raybench.store.rundir import RunDir

TINY = '''
from raybench.experiment import Experiment, Online, SimBackend

experiment = Experiment(
    name="tiny", model="deepseek-ai/DeepSeek-R1",
    backends=(SimBackend(name="sim-h200", timing="zero", gpu="H200", num_gpus=8, profile="vllm"),),
    online=(Online(concurrency=(2, 4), input_len=32, output_len=8, num_prompts=8),),
    seed=0, warmup_requests=0,
)
'''
NEW_DIR = "run into a new directory (a --run-dir that does not exist yet, or none)"
FIX = ("restore it from a copy, or move it aside (say, to summary.json.damaged): a resume then runs that cell "
       "again and keeps its earlier files under attempts/")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    def refuse(address=None):
        raise AssertionError("Ray started: the run directory should have been refused before")

    monkeypatch.setattr("raybench.cluster.connect", refuse)


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return path


@pytest.fixture
def prediction(tmp_path, tiny) -> Path:
    result = CliRunner().invoke(main, ["predict", str(tiny), "--out", str(tmp_path / "preds"), "--no-report"])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def _refused(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a click error, not a traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_prediction_is_not_a_run_to_resume(tiny, prediction, command):
    plan_before = (prediction / "plan.json").read_text()
    line = _refused([command, str(tiny), "--run-dir", str(prediction)])
    assert line == (f"Error: {prediction} holds a prediction (raybench predict), not measurements, so no run can "
                    f"resume it: {NEW_DIR}")
    assert (prediction / "plan.json").read_text() == plan_before  # still says "prediction": true


def test_a_prediction_is_known_by_its_cells_when_plan_json_is_gone(tiny, prediction):
    (prediction / "plan.json").unlink()
    line = _refused(["run", str(tiny), "--run-dir", str(prediction)])
    assert line.startswith(f"Error: {prediction} holds a prediction (raybench predict)")
    assert not (prediction / "plan.json").exists()


@pytest.mark.parametrize("command", ["run", "plan"])
def test_another_experiments_run_is_refused(tmp_path, tiny, command):
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "plan.json").write_text(json.dumps({"experiment": "deepseek_r1", "cells": []}))
    line = _refused([command, str(tiny), "--run-dir", str(other)])
    assert line == f"Error: {other} holds a run of experiment 'deepseek_r1', not 'tiny': {NEW_DIR}"
    assert json.loads((other / "plan.json").read_text())["experiment"] == "deepseek_r1"
    assert not (other / "cells").exists()


@pytest.mark.parametrize(("text", "what"), [
    ("null", "holds a JSON null, not a cell summary object"),
    ("[1, 2]", "holds a JSON array, not a cell summary object"),
    ('"done"', "holds a JSON string, not a cell summary object"),
    ("{}", "is an empty object, so whether its cell is complete is unknown"),
    ('{"outcome": "done"}', ": outcome='done' is not allowed: complete, incomplete, failed;"),
    ('{"outcome": ["complete"]}', ": outcome=['complete'] is not allowed: complete, incomplete, failed;"),
    ('{"outcome": "complete", "planned_requests": "many"}',
     ": planned_requests='many' is not allowed: a count of requests (an integer >= 0);"),
    ('{"num_prompts": [8]}', ": num_prompts=[8] is not allowed: a count of requests (an integer >= 0);"),
    ('{"num_prompts": 8, "cell": [1]}', ': its "cell" is a JSON array, not the cell\'s settings object'),
    ("{half", "is unreadable (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
])
def test_a_damaged_summary_names_the_file_and_a_fix_that_keeps_the_rows(tmp_path, tiny, text, what):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.plan_json.write_text(json.dumps({"experiment": "tiny", "cells": []}))
    cell = rd.cell_dir("sim-h200.H200-online-c2-i32-o8")
    cell.mkdir(parents=True)
    (cell / "summary.json").write_text(text)
    with pytest.raises(RunError) as info:
        rd.completed_cells()
    assert str(info.value).startswith(f"{cell / 'summary.json'}")
    assert what in str(info.value) and str(info.value).endswith(FIX)
    for command in ("run", "plan"):
        assert _refused([command, str(tiny), "--run-dir", str(rd.path)]) == f"Error: {info.value}"


def test_the_advice_for_a_damaged_summary_keeps_the_cells_rows(tmp_path):
    """What the fix says happens: moved aside, the cell is not complete, and a rerun sets its files aside."""
    rd = RunDir(tmp_path)
    cell = rd.cell_dir("c")
    cell.mkdir(parents=True)
    (cell / "requests.parquet").write_bytes(b"rows")
    (cell / "summary.json").write_text("null")
    (cell / "summary.json").rename(cell / "summary.json.damaged")
    assert rd.completed_cells() == {}
    kept = set_aside(cell)  # what the runner does before it runs the cell again
    assert (kept / "requests.parquet").read_bytes() == b"rows"
    assert (kept / "summary.json.damaged").read_text() == "null"


def test_a_key_given_twice_in_only_is_refused_with_the_syntax_for_several_values():
    with pytest.raises(ConfigError) as info:
        parse_only("backend=x,concurrency=4,concurrency=8")
    assert str(info.value) == ("--only: concurrency is given twice (concurrency=4, concurrency=8): give several "
                               "values as one, separated by |, e.g. concurrency=4|8 (quoted: the shell reads | as a pipe)")
    assert parse_only("backend=x,concurrency=4|8") == {"backend": "x", "concurrency": "4|8"}


def test_plan_refuses_a_key_given_twice_in_only(tiny):
    line = _refused(["plan", str(tiny), "--only", "concurrency=2,concurrency=4"])
    assert line.startswith("Error: --only: concurrency is given twice (concurrency=2, concurrency=4)")
