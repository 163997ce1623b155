"""The plan of experiments/deepseek_r1.py against the seed's results, and cell selection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from raybench.cli import main
from raybench.errors import ConfigError
from raybench.experiment import Experiment, Hardware, Offline, Online, SimBackend, VLLMBackend, load_experiment

ROOT = Path(__file__).resolve().parents[2]
DEEPSEEK = ROOT / "experiments" / "deepseek_r1.py"
SEED_CSV = ROOT / "raybench" / "report" / "data" / "dstack_deepseek_r1_results.csv"
ENGINE = {"sglang": "sglang", "vllm": "vllm", "trt-llm": "trtllm"}


def _plan(*args: str) -> list[dict]:
    result = CliRunner().invoke(main, ["plan", str(DEEPSEEK), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def seed_plan() -> list[dict]:
    """The whole plan once for the module: each one estimates all 117 cells in the simulator."""
    return _plan()


def _matches(row: dict, cell: dict) -> bool:
    common = (cell["engine"] == ENGINE[row["backend"]] and cell["hardware"] == row["hardware"]
              and cell["mode"] == row["mode"] and cell["input_len"] == int(row["input_len"])
              and cell["output_len"] == int(row["output_len"]))
    if not common:
        return False
    if row["mode"] == "online":
        return (cell["concurrency"] == int(row["max_concurrency"]) and cell["prefix_len"] == int(row["shared_prefix_len"])
                and cell["num_prompts"] == int(row["num_prompts"]))
    return cell["batch_size"] == int(row["batch_size"]) and cell["num_prompts"] == int(row["num_prompts"])


def test_every_seed_row_is_one_cell_and_every_cell_a_seed_row(seed_plan):
    cells = seed_plan
    rows = list(csv.DictReader(SEED_CSV.open()))
    assert len(rows) == 117
    used: list[str] = []
    for row in rows:
        hits = [c["id"] for c in cells if _matches(row, c)]
        assert len(hits) == 1, (row["source_row"], row["mode"], row["hardware"], row["backend"], hits)
        used += hits
    assert sorted(used) == sorted(c["id"] for c in cells)  # no cell the seed did not describe
    for c in cells:
        assert set(c) >= {"id", "backend", "hardware", "mode", "concurrency", "batch_size", "input_len",
                          "output_len", "prefix_len", "num_prompts"}
        assert (c["concurrency"] is None) == (c["mode"] == "offline")
        assert (c["batch_size"] is None) == (c["mode"] == "online")


def test_plan_ids_are_stable(seed_plan):
    assert [c["id"] for c in seed_plan] == [c["id"] for c in _plan()]


def test_only_num_prompts_simulate_select_the_vllm_h200_online_800_cells():
    cells = _plan("--simulate", "--only", "backend=vllm,hardware=H200,mode=online,output_len=800", "--num-prompts", "40")
    assert [c["concurrency"] for c in cells] == [4, 8, 16, 32, 64, 128, 32, 64, 128]
    assert {c["backend"] for c in cells} == {"vllm-h200", "vllm-h200-prefix"}
    assert all(c["hardware"] == "H200" and c["output_len"] == 800 and c["num_prompts"] == 40 for c in cells)
    assert [c["prefix_len"] for c in cells] == [0] * 6 + [2000] * 3


def test_simulate_replaces_every_server_with_its_gpu_and_profile():
    from raybench.plan import resolve

    experiment, cells = resolve(load_experiment(DEEPSEEK), simulate=True)
    assert all(isinstance(b, SimBackend) and not b.placement.resources for b in experiment.backends)
    sims = {b.name: (b.gpu, b.profile) for b in experiment.backends}
    assert sims["vllm-mi300x"] == ("MI300X", "vllm") and sims["trtllm-h200"] == ("H200", "trtllm")
    assert len(cells) == 117
    # the seed flushed SGLang's cache before each run; its stand-in is reset the same way
    resets = {b.name for b in experiment.backends if b.reset_cache}
    assert resets == {"sglang-h200", "sglang-mi300x"}


def test_plan_marks_done_cells(tmp_path, seed_plan):
    done = seed_plan[0]["id"]
    (tmp_path / "cells" / done).mkdir(parents=True)
    # a summary written before outcomes were recorded: complete by its request count
    (tmp_path / "cells" / done / "summary.json").write_text(json.dumps({"num_prompts": 40}))
    cells = _plan("--run-dir", str(tmp_path))
    assert [c["id"] for c in cells if c["done"]] == [done]
    assert cells[0]["outcome"] == "complete" and cells[1]["outcome"] == "not run"


def test_plan_shows_an_incomplete_cell_as_not_done_with_its_reason(tmp_path, seed_plan):
    from raybench.store.outcome import judge

    first, second = (c["id"] for c in seed_plan[:2])
    for cell, outcome in ((first, judge(range(32), range(12), why_missing="load generators lost and not replaced: a")),
                          (second, judge(range(8), range(8)))):
        (tmp_path / "cells" / cell).mkdir(parents=True)
        (tmp_path / "cells" / cell / "summary.json").write_text(json.dumps({"cell": {"id": cell}, **outcome.fields()}))
    cells = _plan("--run-dir", str(tmp_path))
    assert (cells[0]["done"], cells[0]["outcome"], cells[1]["done"]) == (False, "incomplete", True)
    assert cells[0]["outcome_reason"] == "20 planned requests have no row: load generators lost and not replaced: a"
    table = CliRunner().invoke(main, ["plan", str(DEEPSEEK), "--run-dir", str(tmp_path)])
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()[:2]
    assert "outcome" in header.split() and "incomplete" in row.split()
    assert "1 complete, 1 incomplete or failed (run again by --resume)" in table.stderr


def test_only_takes_alternatives_as_calibrate_does():
    cells = _plan("--only", "backend=sglang-h200|vllm-mi300x,mode=online,concurrency=4|32,output_len=800")
    assert [(c["backend"], c["concurrency"]) for c in cells] == [
        ("sglang-h200", 4), ("sglang-h200", 32), ("sglang-h200", 32), ("vllm-mi300x", 4), ("vllm-mi300x", 32)]


def test_only_rejects_an_unknown_field_and_an_empty_selection():
    result = CliRunner().invoke(main, ["plan", str(DEEPSEEK), "--only", "gpu=H200"])
    assert result.exit_code != 0 and "expected KEY=VALUE with KEY one of" in result.output
    result = CliRunner().invoke(main, ["plan", str(DEEPSEEK), "--only", "hardware=B200"])
    assert result.exit_code != 0 and "no cell matches" in result.output


def test_hardware_places_the_server_and_enters_the_id():
    vllm = VLLMBackend(name="vllm", tp=8)
    e = Experiment(name="x", model="m", backends=(vllm,), hardware={"vllm": Hardware(name="H200", count=8)},
                   online=(Online(concurrency=(4,), input_len=10, output_len=5, num_prompts=3),))
    # Ray's own accelerator_type resource: every Ray node with H200 GPUs has it, no setup needed
    assert e.backends[0].actor_options() == {"num_cpus": 0.0, "num_gpus": 8, "resources": {"accelerator_type:H200": 0.001}}
    mi300x = Experiment(name="x", model="m", backends=(vllm,), hardware={"vllm": Hardware(name="MI300X")},
                        online=e.online)
    assert mi300x.backends[0].placement.resources == {"accelerator_type:AMD-Instinct-MI300X-OAM": 0.001}
    cell = e.cells()[0]
    assert cell.id == "vllm.H200-online-c4-i10-o5" and cell.hardware == "H200" and cell.engine == "vllm"
    bare = Experiment(name="x", model="m", backends=(vllm,),
                      online=(Online(concurrency=(4,), input_len=10, output_len=5, num_prompts=3),))
    assert bare.cells()[0].id == "vllm-online-c4-i10-o5" and bare.cells()[0].hardware is None


def test_hardware_and_only_are_validated():
    vllm = VLLMBackend(name="vllm", tp=8)
    sweep = Offline(batch_sizes=(1,), input_len=10, output_len=5)
    with pytest.raises(ConfigError, match="hardware.count"):
        Hardware(name="H200", count=0)
    with pytest.raises(ConfigError, match="sglang"):
        Experiment(name="x", model="m", backends=(vllm,), offline=(sweep,), hardware={"sglang": Hardware(name="H200")})
    with pytest.raises(ConfigError, match="only"):
        Experiment(name="x", model="m", backends=(vllm,),
                   offline=(Offline(batch_sizes=(1,), input_len=10, output_len=5, only=("sglang",)),))


def test_plan_compares_what_a_run_compares_on_resume_the_simulators_timing_too():
    from raybench.cli import _prompt_sources, _resume_settings
    from raybench.experiment import Experiment, Online, SimBackend

    experiment = Experiment(name="t", model="m", backends=(SimBackend(name="s", timing="fixed", ttft_ms=5, itl_ms=1),),
                            online=(Online(concurrency=(1,), input_len=8, output_len=4, num_prompts=2),))
    settings = _resume_settings(experiment, _prompt_sources(experiment, experiment.cells(), {}, report=print))
    assert settings["s"]["simulator"] == {"timing": "fixed", "tokens_per_chunk": 1, "ttft_ms": 5, "itl_ms": 1}
