"""raybench run's --only/--num-prompts/--simulate path on local Ray, and resume on the same run dir.

The simulator runs with zero timing here: the seed's lengths at engine timing take minutes.
"""

import dataclasses
import json
from pathlib import Path

from raybench.experiment import load_experiment
from raybench.plan import resolve
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir

DEEPSEEK = Path(__file__).resolve().parents[2] / "experiments" / "deepseek_r1.py"


def _run(rd, only):
    experiment, cells = resolve(load_experiment(DEEPSEEK), only=only, num_prompts=4, simulate=True)
    experiment = dataclasses.replace(
        experiment, backends=tuple(dataclasses.replace(b, timing="zero") for b in experiment.backends))
    lines = []
    Runner(experiment, rd, RunOptions(cell_ids=frozenset(c.id for c in cells)), report=lines.append).run()
    return [line.removeprefix("cell ") for line in lines if line.startswith("cell ")]


def test_selected_cells_run_and_a_rerun_runs_only_the_unfinished(ray_local, tmp_path):
    rd = RunDir.create(tmp_path, "deepseek_r1")
    first = _run(rd, "backend=vllm,hardware=H200,mode=online,output_len=800,concurrency=4")
    assert first == ["vllm-h200.H200-online-c4-i3200-o800"]
    second = _run(rd, "backend=vllm,hardware=H200,mode=online,output_len=800,prefix_len=0,concurrency=4")
    assert second == []  # c4 is complete
    third = _run(rd, "backend=vllm,hardware=H200,output_len=800,concurrency=32")
    assert third == ["vllm-h200.H200-online-c32-i3200-o800", "vllm-h200-prefix.H200-online-c32-i3200p2000-o800"]
    assert sorted(rd.cell_ids()) == sorted(first + third)
    # plan.json holds every cell the run dir was asked for, over all three invocations
    assert [c["id"] for c in json.loads(rd.plan_json.read_text())["cells"]] == first + third
