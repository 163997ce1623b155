"""raybench run's --only/--num-prompts/--simulate path on local Ray, and resume on the same run dir.

The simulator runs with zero timing here: the seed's lengths at engine timing take minutes.
"""

import dataclasses
import json
from pathlib import Path

import polars as pl

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
    # and summary.parquet every cell that has a summary, not only the last invocation's
    assert pl.read_parquet(rd.summary_parquet)["cell_id"].to_list() == first + third


def test_a_resume_with_other_sampling_or_prompt_ids_is_refused_before_any_cell_runs(ray_local, tmp_path):
    import pytest

    from raybench.errors import ConfigError
    from raybench.experiment import Experiment, Online, Sampling, SimBackend

    experiment = Experiment(name="res", model="m", backends=(SimBackend(name="s", timing="zero"),),
                            online=(Online(concurrency=(1,), input_len=8, output_len=4, num_prompts=2),))
    rd = RunDir.create(tmp_path, "res")
    Runner(experiment, rd, RunOptions(), report=lambda line: None).run()
    cell_id = experiment.cells()[0].id
    for changed, difference in [
        (dataclasses.replace(experiment, sampling=Sampling(temperature=0.5)), "sampling.temperature=0.0 there, 0.5 now"),
        (dataclasses.replace(experiment, token_id_range=(2000, 3000)),
         "prompts=\"the simulator's word count (ids [1000, 100000])\" there, 'token ids 2000..2999' now"),
        # --sim-timing on a resume: zero timing's cells would pass for measured ones among fixed-timing cells
        (dataclasses.replace(experiment, backends=(SimBackend(name="s", timing="fixed", ttft_ms=5, itl_ms=1),)),
         "simulator.timing='zero' there, 'fixed' now; simulator.ttft_ms=None there, 5 now; "
         "simulator.itl_ms=None there, 1 now"),
    ]:
        with pytest.raises(ConfigError) as info:
            Runner(changed, rd, RunOptions(), report=lambda line: None).run()
        assert f"cell {cell_id} is complete in the run directory with other settings ({difference})" in str(info.value)
    lines = []
    Runner(experiment, rd, RunOptions(), report=lines.append).run()  # the same settings: nothing to run
    assert not [line for line in lines if line.startswith("cell ")]


def test_run_takes_prompt_flags_records_them_and_refuses_a_resume_with_others(ray_local, tmp_path):
    from click.testing import CliRunner

    from raybench.cli import main

    exp = tmp_path / "flags.py"
    exp.write_text("from raybench.experiment import Experiment, Online, SimBackend\n"
                   "experiment = Experiment(name='flags', model='m', backends=(SimBackend(name='s', timing='zero'),),\n"
                   "    online=(Online(concurrency=(1,), input_len=8, output_len=4, num_prompts=2),))\n")
    out = tmp_path / "runs"
    first = CliRunner().invoke(main, ["run", str(exp), "--out", str(out), "--no-report", "--token-id-range", "2000:3000"])
    assert first.exit_code == 0, first.output
    (rd,) = (out / "flags").iterdir()
    env = json.loads((rd / "env.json").read_text())
    assert env["options"]["token_id_range"] == "2000:3000" and env["options"]["tokenizer"] is None
    assert env["prompts"]["s"]["token_id_range"] == [2000, 3000]
    (summary,) = [json.loads(p.read_text()) for p in rd.glob("cells/*/summary.json")]
    assert summary["cell"]["prompts"] == "token ids 2000..2999"
    assert summary["prompts"]["token_id_range"] == [2000, 3000]

    again = CliRunner().invoke(main, ["run", str(exp), "--out", str(out), "--no-report", "--resume",
                                      "--token-id-range", "2000:4000"])
    assert again.exit_code == 1
    assert "Traceback" not in again.output
    assert "run directory:" not in again.output  # refused before the cluster is joined, as for --num-prompts
    assert again.output.strip().splitlines()[-1].startswith(
        "Error: cell s-online-c1-i8-o4 is complete in the run directory with other settings "
        "(prompts='token ids 2000..2999' there, 'token ids 2000..3999' now). Resume with the options")
    same = CliRunner().invoke(main, ["run", str(exp), "--out", str(out), "--no-report", "--resume",
                                     "--token-id-range", "2000:3000"])
    assert same.exit_code == 0, same.output
    assert "1 of 1 cells complete, 0 to run" in same.output
