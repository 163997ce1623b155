"""Repeats (ids, seeds, order), the checks a resumed run makes, and where a resume finds its run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from raybench.cli import main
from raybench.errors import ConfigError, RunError
from raybench.experiment import Experiment, Offline, Online, Sampling, SimBackend
from raybench.plan import check_resume, prompt_identity, resolve, run_settings, workload_for
from raybench.store.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
DEEPSEEK = ROOT / "experiments" / "deepseek_r1.py"


def _experiment(**kw) -> Experiment:
    return Experiment(**{
        "name": "rep", "model": "deepseek-ai/DeepSeek-R1", "backends": (SimBackend(name="a"), SimBackend(name="b")),
        "online": (Online(concurrency=(1, 2), input_len=8, output_len=4, num_prompts=3),),
        "offline": (Offline(batch_sizes=(4,), input_len=8, output_len=4),), "seed": 7, **kw})


def test_repeats_add_cells_with_their_own_seeds_one_pass_after_another():
    once = _experiment().cells()
    thrice = _experiment(repeats=3).cells()
    assert [c.id for c in thrice[:3]] == [c.id for c in once[:3]]  # repeat 1 keeps the plain ids
    assert [(c.id, c.repeat, c.seed) for c in thrice if c.backend == "a"] == [
        ("a-online-c1-i8-o4", 1, 7), ("a-online-c2-i8-o4", 1, 7), ("a-offline-engine-b4-i8-o4", 1, 7),
        ("a-online-c1-i8-o4-rep2", 2, 8), ("a-online-c2-i8-o4-rep2", 2, 8), ("a-offline-engine-b4-i8-o4-rep2", 2, 8),
        ("a-online-c1-i8-o4-rep3", 3, 9), ("a-online-c2-i8-o4-rep3", 3, 9), ("a-offline-engine-b4-i8-o4-rep3", 3, 9),
    ]
    assert len(thrice) == 3 * len(once)


def test_each_repeat_sends_other_prompts():
    cells = {c.id: c for c in _experiment(repeats=2).cells()}
    first = workload_for(cells["a-online-c1-i8-o4"]).build(range(3))
    again = workload_for(cells["a-online-c1-i8-o4"]).build(range(3))
    second = workload_for(cells["a-online-c1-i8-o4-rep2"]).build(range(3))
    assert [s.prompt_token_ids.tolist() for s in first] == [s.prompt_token_ids.tolist() for s in again]
    assert [s.prompt_token_ids.tolist() for s in first] != [s.prompt_token_ids.tolist() for s in second]


@pytest.mark.parametrize(("field", "value", "allowed"), [("repeats", 0, "an integer >= 1"),
                                                         ("seed", -1, "an integer >= 0"),
                                                         ("warmup_requests", 1.5, "an integer >= 0")])
def test_bad_repeats_seed_and_warmup_are_refused(field, value, allowed):
    with pytest.raises(ConfigError) as info:
        _experiment(**{field: value})
    assert field in str(info.value) and allowed in str(info.value) and repr(value) in str(info.value)


def test_plan_repeats_override_and_selection_by_repeat():
    def plan(*args):
        result = CliRunner().invoke(main, ["plan", str(DEEPSEEK), "--format", "json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    base = plan("--only", "backend=sglang,hardware=H200,mode=online,output_len=800,prefix_len=0")
    twice = plan("--only", "backend=sglang,hardware=H200,mode=online,output_len=800,prefix_len=0", "--repeats", "2")
    assert [c["repeat"] for c in base] == [1] * 6
    assert [c["id"] for c in twice] == [c["id"] for c in base] + [f"{c['id']}-rep2" for c in base]
    second = plan("--only", "backend=sglang,hardware=H200,mode=online,output_len=800,prefix_len=0,repeat=2",
                  "--repeats", "2")
    assert [c["id"] for c in second] == [f"{c['id']}-rep2" for c in base]


def test_sim_timing_needs_simulate():
    result = CliRunner().invoke(main, ["plan", str(DEEPSEEK), "--sim-timing", "zero"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --sim-timing zero applies to simulated servers: add --simulate"
    experiment, _ = resolve(_experiment(), simulate=True, sim_timing="zero")
    assert {b.timing for b in experiment.backends} == {"zero"}


def _complete(rd: RunDir, cell, **changes) -> None:
    stored = {**cell.to_json(), **changes}
    rd.cell_dir(cell.id).mkdir(parents=True)
    (rd.cell_dir(cell.id) / "summary.json").write_text(json.dumps({"cell_id": cell.id, "cell": stored}))


def test_check_resume_accepts_the_same_settings_and_names_every_difference(tmp_path):
    cells = _experiment().cells()
    rd = RunDir(tmp_path)
    _complete(rd, cells[0])
    legacy = {k: v for k, v in cells[1].to_json().items() if k not in ("repeat", "seed")}  # written before repeats
    rd.cell_dir(cells[1].id).mkdir(parents=True)
    (rd.cell_dir(cells[1].id) / "summary.json").write_text(json.dumps({"cell": legacy}))
    (rd.cell_dir(cells[2].id)).mkdir(parents=True)  # started, never completed
    assert check_resume(cells, rd.completed_cells()) == {cells[0].id, cells[1].id}

    changed = dataclasses.replace(cells[0], num_prompts=5, seed=8, model="other/model")
    with pytest.raises(ConfigError) as info:
        check_resume([changed, *cells[1:]], rd.completed_cells())
    assert str(info.value).startswith(
        f"cell {cells[0].id} is complete in the run directory with other settings "
        "(num_prompts=3 there, 5 now; seed=7 there, 8 now; model='deepseek-ai/DeepSeek-R1' there, 'other/model' now). Resume with the options")


_WORDS = {"tokenizer": {"name": "words", "kind": "words", "vocab_size": 100, "sample_range": [1000, 100000]}, "fallback": None}
_TOKENIZER = {"tokenizer": {"name": "org/tok", "revision": "v1", "kind": "huggingface", "source": "hub",
                            "tokenizer_json_sha256": "ab12", "vocab_size": 600}, "fallback": None}
_FALLBACK = {"tokenizer": None, "fallback": "token_id_range", "token_id_range": [1000, 100000],
             "why": "no network", "tried": "m"}


def test_prompt_identity_names_what_decides_the_ids_and_not_where_they_were_read():
    assert prompt_identity(_TOKENIZER) == "tokenizer org/tok (revision v1, tokenizer_json_sha256 ab12, vocab_size 600)"
    assert prompt_identity({**_TOKENIZER, "tokenizer": {**_TOKENIZER["tokenizer"], "source": "local"}}) == prompt_identity(_TOKENIZER)
    assert prompt_identity(_FALLBACK) == "token ids 1000..99999 (fallback: tokenizer m did not load)"
    assert prompt_identity({**_FALLBACK, "why": "offline"}) == prompt_identity(_FALLBACK)
    assert prompt_identity({**_FALLBACK, "tried": None, "token_id_range": [5, 50]}) == "token ids 5..49"
    assert prompt_identity(_WORDS) == "the simulator's word count (ids [1000, 100000])"


def _settings(prompts=_TOKENIZER, **sampling):
    return {name: run_settings(prompts, Sampling(**sampling).to_json()) for name in ("a", "b")}


def test_check_resume_refuses_other_prompts_or_sampling_naming_each_difference(tmp_path):
    cells = _experiment().cells()
    rd = RunDir(tmp_path)
    _complete(rd, cells[0], **_settings(temperature=0.0)["a"])
    _complete(rd, cells[1])  # written before prompts and sampling were recorded: compared on its Cell fields
    assert check_resume(cells, rd.completed_cells(), _settings(temperature=0.0)) == {cells[0].id, cells[1].id}

    def refused(settings) -> str:
        with pytest.raises(ConfigError) as info:
            check_resume(cells, rd.completed_cells(), settings)
        return str(info.value)

    assert refused(_settings(temperature=0.7, top_p=0.9, extra_body={"seed": 1})).startswith(
        f"cell {cells[0].id} is complete in the run directory with other settings (sampling.temperature=0.0 there, "
        "0.7 now; sampling.top_p=None there, 0.9 now; sampling.extra_body.seed=None there, 1 now). Resume with")
    assert (f"(prompts='{prompt_identity(_TOKENIZER)}' there, 'token ids 1000..99999 (fallback: tokenizer m did not "
            "load)' now)") in refused(_settings(_FALLBACK))
    other_range = {**_FALLBACK, "tried": None, "token_id_range": [1000, 2000]}
    _complete(rd, cells[3], **run_settings({**_FALLBACK, "tried": None}, Sampling().to_json()))  # backend b
    assert "(prompts='token ids 1000..99999' there, 'token ids 1000..1999' now)" in refused(
        {"a": _settings()["a"], "b": run_settings(other_range, Sampling().to_json())})
    new_hash = {**_TOKENIZER, "tokenizer": {**_TOKENIZER["tokenizer"], "tokenizer_json_sha256": "cd34"}}
    assert "tokenizer_json_sha256 cd34" in refused(_settings(new_hash))


def test_prompt_flags_override_the_files_prompt_source_whole():
    from raybench.plan import with_prompts

    with_tokenizer = _experiment(tokenizer="org/tok", tokenizer_revision="v1")
    ranged = with_prompts(with_tokenizer, token_id_range=(5, 50))
    assert (ranged.tokenizer, ranged.tokenizer_revision, ranged.token_id_range) == (None, None, (5, 50))
    named = with_prompts(_experiment(token_id_range=(5, 50)), tokenizer="/tok", tokenizer_revision="main")
    assert (named.tokenizer, named.tokenizer_revision, named.token_id_range) == ("/tok", "main", None)
    assert with_prompts(with_tokenizer) is with_tokenizer
    experiment, cells = resolve(with_tokenizer, prompts={"tokenizer": None, "tokenizer_revision": "v2", "token_id_range": None})
    assert (experiment.tokenizer, experiment.tokenizer_revision) == ("org/tok", "v2")
    assert [c.id for c in cells] == [c.id for c in with_tokenizer.cells()]  # the cells do not change
    with pytest.raises(ConfigError, match="give --tokenizer or --token-id-range, not both"):
        with_prompts(with_tokenizer, tokenizer="a", token_id_range=(5, 50))


@pytest.mark.parametrize(("args", "error"), [
    (["--token-id-range", "5-50"], "Error: Invalid value for --token-id-range: '5-50': expected LOW:HIGH, two integers"),
    (["--token-id-range", "5:50", "--tokenizer", "t"], "Error: give --tokenizer or --token-id-range, not both"),
])
def test_run_refuses_bad_prompt_flags_in_one_line_before_anything_starts(tmp_path, args, error):
    result = CliRunner().invoke(main, ["run", str(DEEPSEEK), "--out", str(tmp_path), *args])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith(error)
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_an_unreadable_summary_names_the_file_and_the_fix(tmp_path):
    rd = RunDir(tmp_path)
    rd.cell_dir("x").mkdir(parents=True)
    (rd.cell_dir("x") / "summary.json").write_text("{half")
    with pytest.raises(RunError) as info:
        rd.completed_cells()
    assert str(rd.cell_dir("x") / "summary.json") in str(info.value)
    # the advice keeps the cell's rows: a resume sets them aside under attempts/ and runs it again
    assert "move it aside" in str(info.value) and "attempts/" in str(info.value)


def test_resume_finds_the_newest_run_of_the_experiment(tmp_path):
    with pytest.raises(RunError) as info:
        RunDir.latest(tmp_path, "rep")
    assert str(info.value) == (f"--resume: no earlier run of 'rep' under {tmp_path / 'rep'}; give the run directory "
                               "with --run-dir, or leave out --resume to start one")
    for stamp in ("20261101-090000", "20261102-080000", "20261103-070000"):
        (tmp_path / "rep" / stamp).mkdir(parents=True)
    for stamp in ("20261101-090000", "20261102-080000"):
        (tmp_path / "rep" / stamp / "plan.json").write_text("{}")
    assert RunDir.latest(tmp_path, "rep").path == tmp_path / "rep" / "20261102-080000"  # 1103 never started


def test_resume_of_a_directory_that_holds_no_run_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["run", str(DEEPSEEK), "--simulate", "--resume", "--run-dir", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: --resume: {tmp_path / 'empty'} holds no run (no plan.json); "
                                     "leave out --resume to start one there")


def test_earlier_env_json_files_are_kept(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.keep_previous_env() is None
    for n in range(3):
        rd.env_json.write_text(json.dumps({"n": n}))
        rd.keep_previous_env()
    assert [json.loads((tmp_path / f"env.{k}.json").read_text())["n"] for k in (1, 2, 3)] == [0, 1, 2]
    assert not rd.env_json.exists()
