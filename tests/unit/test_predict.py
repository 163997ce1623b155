"""raybench predict: launch settings to engine features, run directories in virtual time, bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from raybench.backends import seed
from raybench.cli import main
from raybench.errors import ConfigError
from raybench.experiment import Experiment, Hardware, Mode, Online, load_experiment
from raybench.plan import resolve, schedule_for, workload_for
from raybench.predict import engine_name, extrapolation_lines, launch_features, predict_cell, predict_run
from raybench.report.sources import load_run_dir
from raybench.sim.features import Policy, Preemption, PrefixCache
from raybench.sim.profiles import load_profiles

ROOT = Path(__file__).resolve().parents[2]


def test_the_seed_servers_launch_settings_become_engine_features():
    sg = launch_features(seed.SEED_SGLANG_H200, "sglang", 8)
    # --enable-dp-attention without --dp-size: dp = tp and 8192 // 2 prompt tokens a rank (8 x 4096 a step)
    assert (sg.dp_attention, sg.prefill_tokens_per_step, sg.policy, sg.prefix_cache, sg.preemption) == (
        8, 32768, Policy.PREFILL_FIRST, PrefixCache.RADIX, Preemption.RETRACT)
    assert sg.memory_fraction == 0.81  # SGLang's default at TP 8
    sm = launch_features(seed.SEED_SGLANG_MI300X, "sglang", 8)
    assert (sm.dp_attention, sm.prefill_tokens_per_step, sm.memory_fraction) == (1, 8192, 0.81)
    v = launch_features(seed.SEED_VLLM_H200, "vllm", 8)
    assert (v.policy, v.chunked_prefill, v.prefill_tokens_per_step, v.prefix_cache) == (
        Policy.PREFILL_FIRST, False, 163840, PrefixCache.NONE)
    vp = launch_features(seed.SEED_VLLM_H200_PREFIX, "vllm", 8)
    assert (vp.policy, vp.prefill_tokens_per_step, vp.prefix_cache) == (Policy.MIXED, 2048, PrefixCache.BLOCK_HASH)
    assert vp.block_tokens == 64  # VLLM_ATTENTION_BACKEND=FLASHMLA: the kernel's 64-token pages
    vm = launch_features(seed.SEED_VLLM_MI300X, "vllm", 8)
    assert (vm.prefill_tokens_per_step, vm.max_model_len) == (32768, 32768)
    # the offline script's engine: a 32,768-token budget, as the MI300X server has
    vo = launch_features(seed.SEED_VLLM_H200_OFFLINE, "vllm", 8)
    assert (vo.policy, vo.prefill_tokens_per_step, vo.max_model_len) == (Policy.PREFILL_FIRST, 32768, 32768)
    t = launch_features(seed.SEED_TRTLLM_H200, "trtllm", 8)
    assert (t.max_running, t.prefill_tokens_per_step, t.max_model_len, t.admission_output_reserve) == (
        512, 16384, 16384, 1.0)
    # the seed's offline TensorRT-LLM rows ran a TensorRT engine build: their own profile
    assert engine_name(seed.SEED_TRTLLM_H200, Mode.OFFLINE) == "trtllm-engine"
    assert engine_name(seed.SEED_TRTLLM_H200, Mode.ONLINE) == "trtllm"


def test_sglang_dp_attention_and_memory_follow_its_server_args():
    from dataclasses import replace

    # releases since 2025-03-13 need --dp-size and give each rank chunked_prefill_size // dp
    with_dp = replace(seed.SEED_SGLANG_H200, dp=4)
    f = launch_features(with_dp, "sglang", 8)
    assert (f.dp_attention, f.prefill_tokens_per_step) == (4, 8192)
    assert launch_features(replace(seed.SEED_SGLANG_H200, chunked_prefill_size=16384), "sglang", 8
                           ).prefill_tokens_per_step == 8 * 8192
    # --mem-fraction-static's default falls as the TP group grows; an explicit value wins
    fractions = [launch_features(replace(seed.SEED_SGLANG_MI300X, tp=tp), "sglang", tp).memory_fraction
                 for tp in (1, 2, 4, 8, 16)]
    assert fractions == [0.88, 0.87, 0.85, 0.81, 0.79]
    assert launch_features(replace(seed.SEED_SGLANG_MI300X, mem_fraction_static=0.7), "sglang", 8
                           ).memory_fraction == 0.7


def test_sglang_without_chunked_prefill_takes_max_prefill_tokens_a_rank_a_step():
    from dataclasses import replace

    off = replace(seed.SEED_SGLANG_H200, chunked_prefill_size=-1)  # dp attention, dp = tp = 8
    f = launch_features(off, "sglang", 8)
    assert (f.chunked_prefill, f.prefill_tokens_per_step, f.dp_attention) == (False, 8 * 16384, 8)
    f = launch_features(replace(off, enable_dp_attention=False, extra_args=("--max-prefill-tokens", "32768")),
                        "sglang", 8)
    assert (f.chunked_prefill, f.prefill_tokens_per_step, f.dp_attention) == (False, 32768, 1)
    for zero in ({"chunked_prefill_size": 0}, {"extra_args": ("--chunked-prefill-size", "0")}):  # <= 0: off too
        f = launch_features(replace(off, **{"enable_dp_attention": False, "chunked_prefill_size": None, **zero}),
                            "sglang", 8)
        assert (f.chunked_prefill, f.prefill_tokens_per_step) == (False, 16384)


def test_extra_args_reach_the_features():
    from dataclasses import replace

    sg = replace(seed.SEED_SGLANG_MI300X, extra_args=("--chunked-prefill-size", "4096"))
    assert launch_features(sg, "sglang", 8).prefill_tokens_per_step == 4096
    v = launch_features(seed.SEED_VLLM_H200, "vllm", 8)
    assert v.cuda_graphs and v.graph_max_context == 8192  # vLLM's max_seq_len_to_capture default
    longer = replace(seed.SEED_VLLM_H200, extra_args=("--max-seq-len-to-capture", "16384"))
    assert launch_features(longer, "vllm", 8).graph_max_context == 16384
    eager = replace(seed.SEED_VLLM_H200, extra_args=("--enforce-eager",))
    assert not launch_features(eager, "vllm", 8).cuda_graphs
    plain = replace(seed.SEED_VLLM_H200, attention_backend=None)
    assert launch_features(plain, "vllm", 8).block_tokens == 16  # vLLM's default block
    assert launch_features(replace(plain, extra_args=("--block-size", "32")), "vllm", 8).block_tokens == 32
    # FlashMLA takes 64-token pages only, whatever --block-size says; the env variable selects it too
    flash = replace(plain, env={"VLLM_ATTENTION_BACKEND": "FLASHMLA"}, extra_args=("--block-size", "32"))
    assert launch_features(flash, "vllm", 8).block_tokens == 64


def test_vllm_v0_hands_out_tokens_a_step_late_unless_its_launch_turns_that_off():
    from dataclasses import replace

    v = launch_features(seed.SEED_VLLM_H200, "vllm", 8)
    assert v.async_output and v.profiled_kv_pool
    for changes in ({"extra_args": ("--disable-async-output-proc",)}, {"extra_args": ("--enforce-eager",)},
                    {"env": {"VLLM_USE_V1": "1"}}, {"pp": 2}):
        off = launch_features(replace(seed.SEED_VLLM_H200, **changes), "vllm", 8)
        assert not off.async_output and off.profiled_kv_pool, changes
    for backend, engine in ((seed.SEED_SGLANG_H200, "sglang"), (seed.SEED_TRTLLM_H200, "trtllm")):
        f = launch_features(backend, engine, 8)
        assert not f.async_output and not f.profiled_kv_pool


def test_predict_writes_a_run_directory_the_report_reads_as_a_prediction(tmp_path):
    experiment, cells = resolve(load_experiment(ROOT / "experiments" / "deepseek_r1.py"),
                                only="backend=sglang-mi300x,output_len=800")
    run_dir, summaries = predict_run(experiment, cells, tmp_path, report=True)
    assert run_dir.path.parent.name == "deepseek_r1-prediction"
    for cell in cells:
        cell_dir = run_dir.cell_dir(cell.id)
        assert (cell_dir / "requests.parquet").is_file() and (cell_dir / "chunks.parquet").is_file()
        summary = json.loads((cell_dir / "summary.json").read_text())
        assert summary["prediction"] is True and summary["predicted_with"]["profile"] == "sglang/MI300X"
    requests = pl.read_parquet(run_dir.cell_dir(cells[0].id) / "requests.parquet")
    assert requests.height == cells[0].num_prompts and (requests["t_first_ns"] > requests["t_sent_ns"]).all()
    frame = load_run_dir(run_dir.path)
    assert frame.height == len(cells) and frame["label"].str.ends_with("(predicted)").all()
    assert pl.read_parquet(run_dir.summary_parquet).height == len(cells)
    assert "(predicted)" in (run_dir.path / "report.html").read_text()


def test_prefix_cells_report_cached_tokens(tmp_path):
    experiment, cells = resolve(load_experiment(ROOT / "experiments" / "deepseek_r1.py"),
                                only="backend=vllm-h200-prefix,concurrency=32")
    run_dir, _ = predict_run(experiment, cells, tmp_path, report=False)
    cached = pl.read_parquet(run_dir.cell_dir(cells[0].id) / "requests.parquet")["cached_tokens"]
    # the warm-up sent request 0 first: all of it but its last token, in whole 64-token FlashMLA blocks
    assert cached[0] == 3136
    # then the prefix alone (31 blocks), and a miss per group but the warm-up's
    assert cached[1:].max() == 1984 and (cached == 0).sum() >= 9


def test_a_servers_cells_run_in_a_row_and_keep_its_prefix_cache_unless_it_is_reset(tmp_path):
    """As raybench run sends them to one server: vLLM's prefix command keeps its cache, so c64
    starts with every prefix c32 left; SGLang's is flushed after each warm-up, as the seed did."""
    experiment, cells = resolve(load_experiment(ROOT / "experiments" / "deepseek_r1.py"),
                                only="backend=vllm-h200-prefix|sglang-mi300x,prefix_len=2000,concurrency=32|64")
    # in the experiment's order whatever the order asked for: c32, then c64
    run_dir, _ = predict_run(experiment, list(reversed(cells)), tmp_path, report=False)
    misses = {}
    for cell in cells:
        cached = pl.read_parquet(run_dir.cell_dir(cell.id) / "requests.parquet")["cached_tokens"]
        misses[(cell.backend, cell.concurrency)] = int((cached == 0).sum())
    assert misses[("vllm-h200-prefix", 64)] == 0 < misses[("vllm-h200-prefix", 32)]
    summaries = {(c.backend, c.concurrency): json.loads((run_dir.cell_dir(c.id) / "summary.json").read_text())
                 for c in cells}
    started = {key: s["predicted_with"]["start_cached_tokens"] for key, s in summaries.items()}
    # c32: its warm-up's prompt; c64: what c32 left besides (the ten prefixes and its last questions)
    assert 3000 < started[("vllm-h200-prefix", 32)] < 3300 < started[("vllm-h200-prefix", 64)]
    assert started[("sglang-mi300x", 32)] == started[("sglang-mi300x", 64)] == 0  # flushed after the warm-up
    assert misses[("sglang-mi300x", 64)] >= 10 and misses[("sglang-mi300x", 32)] >= 10


def test_a_prediction_beyond_what_its_profile_was_fitted_on_is_marked_extrapolated(tmp_path):
    # the shipped vLLM/H200 profile saw the unchunked launch only: chunked steps and prefix hits are new
    experiment, cells = resolve(load_experiment(ROOT / "experiments" / "deepseek_r1.py"),
                                only="hardware=H200,mode=online,output_len=800,concurrency=32")
    run_dir, summaries = predict_run(experiment, cells, tmp_path, report=True)
    marks = {s["cell"]["backend"]: s["extrapolated"] for s in summaries}
    assert marks["vllm-h200-prefix"] == ["mixed_steps", "prefix_hits"]
    assert marks["vllm-h200"] == [] and marks["trtllm-h200"] == []
    prefix = next(s for s in summaries if s["cell"]["backend"] == "vllm-h200-prefix")
    assert prefix["predicted_with"]["fitted_regimes"] == ["kv_limited", "preemption"]
    assert {"mixed_steps", "prefix_hits"} <= set(prefix["predicted_with"]["regimes"])
    report = (run_dir.path / "report.html").read_text()
    assert "extrapolate" in report and f"{prefix['cell_id']}: mixed_steps, prefix_hits" in report
    frame = load_run_dir(run_dir.path)  # and on the charts: the point's tooltip says so
    marked = dict(zip(frame["cell_id"].to_list(), frame["extrapolated"].to_list()))
    assert marked[prefix["cell_id"]] == "mixed_steps, prefix_hits" and marked[cells[0].id] in (None, "prefix_hits")
    assert '{"field":"extrapolated"' in report and '"extrapolated":"prefix_hits"' in report  # SGLang's cached point
    assert '"extrapolated":"mixed_steps, prefix_hits"' in report  # vLLM's, paired with its uncached launch
    lines = extrapolation_lines(summaries)
    assert lines[0].startswith(f"2 of {len(summaries)} cells extrapolate")  # SGLang's prefix cell: its hits
    assert any(line.startswith("  mixed_steps, 1 cell (") for line in lines)
    assert extrapolation_lines([s for s in summaries if not s["extrapolated"]]) == []


def test_a_pair_without_a_profile_is_a_one_line_error_naming_the_pairs_and_the_fix(tmp_path):
    experiment = Experiment(name="h100", model="deepseek-ai/DeepSeek-R1", backends=(seed.SEED_VLLM_H200,),
                            hardware={"vllm-h200": Hardware(name="H100", count=8)},
                            online=(Online(concurrency=(4,), input_len=100, output_len=10, num_prompts=8),))
    with pytest.raises(ConfigError) as err:
        predict_run(experiment, experiment.cells(), tmp_path)
    message = str(err.value)
    assert "vllm/H100" in message and "vllm/MI300X" in message and "raybench calibrate" in message
    assert "\n" not in message and not any(tmp_path.iterdir())  # nothing written


def test_predict_and_its_reference_table_on_the_command_line(tmp_path):
    result = CliRunner().invoke(main, [
        "predict", str(ROOT / "experiments" / "deepseek_r1.py"), "--only", "backend=vllm-mi300x,mode=online",
        "--out", str(tmp_path), "--reference", "published"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "vllm/MI300X" in result.stdout and "throughput med/max %" in result.stdout
    assert "prediction" in result.stderr
    assert "c128-i3200-o6400" in result.stderr and "eager_decode" in result.stderr  # past the graphs' limit
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    overlay = (run_dir / "comparison" / "report.html").read_text()  # predicted and published points together
    assert "deepseek_r1-prediction" in overlay and "dstack (published)" in overlay


def test_predict_takes_num_prompts_as_run_does(tmp_path):
    result = CliRunner().invoke(main, ["predict", str(ROOT / "experiments" / "deepseek_r1.py"), "--only",
                                       "backend=vllm-mi300x,concurrency=4", "--num-prompts", "12",
                                       "--out", str(tmp_path), "--no-report"])
    assert result.exit_code == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    (summary,) = [json.loads(p.read_text()) for p in run_dir.glob("cells/*/summary.json")]
    assert summary["completed"] == 12 and summary["prediction"] is True


@pytest.mark.parametrize("args, expected", [
    (["--only", "output_len=999"], "selects none of the 117 reference rows"),
    (["--only", "colour=red"], "expected KEY=V1|V2"),
])
def test_calibrate_bad_filters_are_one_line_errors(tmp_path, args, expected):
    result = CliRunner().invoke(main, ["calibrate", "--reference", "published", *args,
                                                       "--out", str(tmp_path / "p.json")])
    *notes, error = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and expected in error and "Traceback" not in result.stderr
    # before it: only what reading the reference said (the published row with a failed request)
    assert all(line.startswith("--reference published: line ") for line in notes), notes


def test_calibrate_writes_profiles_and_says_what_regimes_its_rows_went_through(tmp_path):
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["calibrate", "--reference", "published", "--only",
                                       "hardware=MI300X,backend=vllm,output_len=800,prefix_len=0", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    (profile,) = json.loads(out.read_text())["profiles"]
    assert profile["fitted_regimes"] == ["kv_limited", "preemption"]
    assert "vllm/MI300X" in result.stdout and "kv_limited, preemption" in result.stdout


# a run's cells name their backends (vllm-h200, sglang-h200), where the seed's rows name the engine
RUN_CELLS = ["--only", "backend=vllm-h200|sglang-h200,concurrency=4|32,output_len=800,prefix_len=0", "--num-prompts", "64"]


@pytest.fixture(scope="module")
def raybench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(main, ["predict", str(ROOT / "experiments" / "deepseek_r1.py"), *RUN_CELLS,
                                       "--out", str(out), "--no-report"])
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def as_measured(run_dir: str, to: Path) -> Path:
    """A copy of a predicted run that reads as a measured one (what a run of the same cells leaves)."""
    copy = shutil.copytree(run_dir, to)
    for summary_file in copy.glob("cells/*/summary.json"):
        summary = json.loads(summary_file.read_text())
        del summary["prediction"]
        summary_file.write_text(json.dumps(summary))
    return copy


def test_calibrate_refuses_a_prediction_as_its_reference(raybench_run, tmp_path):
    result = CliRunner().invoke(main, ["calibrate", "--reference", raybench_run, "--out", str(tmp_path / "p.json")])
    assert result.exit_code != 0 and "holds predictions (raybench predict), not measurements" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.json").exists()


def test_calibrate_on_a_raybench_run_fits_each_backend_s_own_engine(raybench_run, tmp_path):
    out = tmp_path / "p.json"
    run_dir = as_measured(raybench_run, tmp_path / "run")
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    profiles = json.loads(out.read_text())["profiles"]
    assert sorted((p["engine"], p["gpu"]) for p in profiles) == [("sglang", "H200"), ("vllm", "H200")]


def test_predict_against_a_raybench_run_matches_its_cells_by_engine(raybench_run, tmp_path):
    run_dir = as_measured(raybench_run, tmp_path / "run")
    result = CliRunner().invoke(main, ["predict", str(ROOT / "experiments" / "deepseek_r1.py"), *RUN_CELLS,
                                       "--reference", str(run_dir), "--out", str(tmp_path), "--no-report"])
    assert result.exit_code == 0, result.stderr
    # the same cells predicted twice: every one matched, and nothing differs
    (total,) = [line for line in result.stdout.splitlines() if line.startswith("ALL ")]
    assert total.split()[1:] == ["4", "0.0", "/", "0", "0.0", "/", "0", "0.0", "/", "0", "0.0", "/", "0"]


def test_a_run_s_incomplete_cell_is_no_reference_and_the_commands_say_so(raybench_run, tmp_path):
    run_dir = as_measured(raybench_run, tmp_path / "run")
    summary_file = next(run_dir.glob("cells/vllm-h200*c32*/summary.json"))
    summary = json.loads(summary_file.read_text())
    summary.update(outcome="incomplete", outcome_reason="a load generator was lost", recorded_requests=40)
    summary_file.write_text(json.dumps(summary))
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert f"--reference {run_dir}: left out cell {summary['cell_id']}: incomplete" in result.stderr
    assert "(3 rows)" in json.loads(out.read_text())["profiles"][0]["fitted_on"]
    result = CliRunner().invoke(main, ["predict", str(ROOT / "experiments" / "deepseek_r1.py"), *RUN_CELLS,
                                       "--reference", str(run_dir), "--out", str(tmp_path / "p"), "--no-report"])
    assert result.exit_code == 0 and "left out cell" in result.stderr
    (total,) = [line for line in result.stdout.splitlines() if line.startswith("ALL ")]
    assert total.split()[1] == "3"  # the cell that lost requests is compared with nothing


def test_a_cell_a_prefix_cache_may_have_answered_is_no_reference_and_the_commands_say_so(raybench_run, tmp_path):
    run_dir = as_measured(raybench_run, tmp_path / "run")
    summary_file = next(run_dir.glob("cells/sglang-h200*c32*/summary.json"))
    summary = json.loads(summary_file.read_text())
    earlier = summary["cell_id"].replace("c32", "c4")
    summary["prompts_sent_before"] = {"share": 0.98, "cells": [earlier], "sampled_prompts": 64, "block_tokens": 16,
                                      "flagged": True}
    summary_file.write_text(json.dumps(summary))
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert (f"left out cell {summary['cell_id']}: 98% of its prompt tokens had been sent to its server by {earlier} "
            "(prompts_sent_before), so its TTFT may measure a prefix cache") in result.stderr
    assert "(3 rows)" in json.loads(out.read_text())["profiles"][0]["fitted_on"]


def test_calibrate_says_when_its_rows_never_fill_the_kv_pool(tmp_path):
    # c4 and c8 with 800-token outputs hold a few hundred thousand KV tokens at most: every reserve fits alike
    out = tmp_path / "p.json"
    only = "hardware=MI300X,backend=vllm,mode=online,concurrency=4|8,output_len=800,prefix_len=0"
    result = CliRunner().invoke(main, ["calibrate", "--reference", "published", "--only", only, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "vllm/MI300X: the rows do not pin the KV pool (reserves 0 to 48 GiB" in result.stdout
    (profile,) = json.loads(out.read_text())["profiles"]
    assert "kv_limited" not in profile["fitted_regimes"]


def test_a_reference_file_without_usable_rows_is_a_one_line_error(tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("mode,hardware,backend,output_len,total_throughput_tok_s,input_len\n"
                   "online,H200,vllm,800,,3200\n")
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(csv),
                                                       "--out", str(tmp_path / "p.json")])
    assert result.exit_code != 0 and "no usable rows" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_reference_value_that_is_no_number_is_a_one_line_error_naming_its_line(tmp_path):
    csv = tmp_path / "typo.csv"
    csv.write_text("mode,hardware,backend,output_len,total_throughput_tok_s,input_len,max_concurrency\n"
                   "online,H200,vllm,800,4000,3200,4\n"
                   "online,H200,vllm,800,4O00,3200,8\n")
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(csv), "--out", str(tmp_path / "p.json")])
    assert result.exit_code != 0 and "typo.csv line 3: total_throughput_tok_s='4O00' is not a number" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.json").exists()


def test_predict_filter_selecting_no_cell_is_a_one_line_error_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(main, ["predict", str(ROOT / "experiments" / "deepseek_r1.py"), "--only",
                                       "concurrency=999", "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0 and "no cell matches" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_predict_reference_without_usable_rows_is_a_one_line_error_and_writes_nothing(tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("mode,hardware,backend,output_len,total_throughput_tok_s,input_len\n"
                   "online,H200,vllm,800,,3200\n")
    result = CliRunner().invoke(main, ["predict", str(ROOT / "experiments" / "deepseek_r1.py"), "--only",
                                       "backend=vllm-mi300x,concurrency=4", "--reference", str(csv),
                                       "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0 and "no usable rows" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_unknown_profiles_file_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, [
        "predict", str(ROOT / "experiments" / "deepseek_r1.py"), "--profiles", str(tmp_path / "none.json"),
        "--out", str(tmp_path)])
    assert result.exit_code != 0 and "raybench calibrate --out" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_simulated_stand_in_passes_its_launch_features_to_the_simulator_server():
    from raybench.backends.sim import feature_flags
    from raybench.sim.command import _features, sim_command

    features = launch_features(seed.SEED_SGLANG_H200, "sglang", 8)
    ctx = sim_command.make_context("sim", ["--timing", "engine", "--backend-profile", "sglang",
                                           *feature_flags(features)])
    options = dict(ctx.params)
    # the step budget and the running cap travel as the server's own options (config.resolve applies them)
    assert options["max_num_batched_tokens"] == 32768 and options["max_num_seqs"] == features.max_running
    assert _features(options).with_(prefill_tokens_per_step=32768) == features
    from dataclasses import replace

    for args in (("--enforce-eager",), ("--max-seq-len-to-capture", "16384"), ("--disable-async-output-proc",), ()):
        features = launch_features(replace(seed.SEED_VLLM_H200, extra_args=args), "vllm", 8)
        assert features.block_tokens == 64  # FlashMLA's pages reach the stand-in too
        ctx = sim_command.make_context("sim", ["--timing", "engine", "--backend-profile", "vllm",
                                               *feature_flags(features)])
        assert _features(dict(ctx.params)) == features


# a user's own server: another name, model, GPU count and scheduler than any of the seed's
OWN_EXPERIMENT = '''
from raybench.backends.vllm import VLLMBackend
from raybench.experiment import Experiment, Hardware, Online

mine = VLLMBackend(name="my-vllm", tp=2, enable_chunked_prefill=True, max_num_batched_tokens=1024,
                   enable_prefix_caching=True, gpu_memory_utilization=0.8, reset_cache=True)
experiment = Experiment(
    name="own", model="meta-llama/Llama-3.1-8B-Instruct", backends=(mine,),
    hardware={"my-vllm": Hardware(name="H200", count=2)}, warmup_requests=0,
    online=(Online(concurrency=(4, 32), input_len=1000, output_len=200, num_prompts=64),
            Online(concurrency=(32,), input_len=1000, output_len=200, num_prompts=64, dataset="prefix",
                   prefix_len=600, num_groups=4, prompts_per_group=16)),
)
'''


def test_calibrate_fits_a_run_s_rows_with_the_launch_settings_the_run_recorded(tmp_path):
    from raybench.calibration import load_reference, observations, predicted_row_error, seed_launches
    from raybench.sim.profiles import load_profiles

    experiment_file = tmp_path / "own.py"
    experiment_file.write_text(OWN_EXPERIMENT)
    result = CliRunner().invoke(main, ["predict", str(experiment_file), "--out", str(tmp_path), "--no-report"])
    assert result.exit_code == 0, result.stderr
    run_dir = as_measured(result.stdout.strip().splitlines()[-1], tmp_path / "run")
    env = json.loads((run_dir / "env.json").read_text())
    assert env["servers"]["my-vllm"]["simulator"]["modes"]["online"]["features"]["prefill_tokens_per_step"] == 1024

    # no --experiment: the run dir alone says what each row ran with, and the profile that made
    # the rows predicts every one of them again exactly (with the seed's vLLM launch, DeepSeek-R1
    # on 8 GPUs, it would not: the old matching by engine took that one)
    frame = load_reference([str(run_dir)], measured_only=True)
    obs = observations(frame, seed_launches())
    mine = load_experiment(experiment_file).backend("my-vllm")
    assert [(o.key, o.build(0.0).num_gpus, o.build(0.0).model.name) for o in obs] == \
        [("vllm/H200", 2, "meta-llama/Llama-3.1-8B-Instruct")] * 3
    assert obs[0].build(0.0).features == launch_features(mine, "vllm", 2)
    # matched by engine instead (what calibrate did before runs recorded their launches)
    unrecorded = observations(frame.drop("launch"), seed_launches())
    assert (unrecorded[0].build(0.0).num_gpus, unrecorded[0].build(0.0).features.chunked_prefill) == (8, False)
    shipped = load_profiles()["vllm/H200"]
    for o in obs:
        errors = predicted_row_error(o, shipped).errors_pct
        assert set(errors) == {"throughput", "ttft", "tpot", "e2e"}
        assert all(abs(e) < 1e-6 for e in errors.values()), (o.label, errors)

    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert [p["engine"] + "/" + p["gpu"] for p in json.loads(out.read_text())["profiles"]] == ["vllm/H200"]


def test_a_run_that_recorded_no_launch_settings_is_matched_as_before_and_says_so(raybench_run, tmp_path):
    run_dir = as_measured(raybench_run, tmp_path / "run")
    env = json.loads((run_dir / "env.json").read_text())
    del env["servers"]  # what a run of an earlier raybench left
    (run_dir / "env.json").write_text(json.dumps(env))
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    for name in ("sglang-h200", "vllm-h200"):  # one line each, and the fit goes on as before
        assert f"env.json records no launch settings of {name} (a run of an earlier raybench)" in result.stderr
    assert sorted(p["engine"] for p in json.loads(out.read_text())["profiles"]) == ["sglang", "vllm"]


def test_an_env_json_of_the_wrong_json_type_is_said_to_be_damaged_not_an_earlier_raybench_s(raybench_run, tmp_path):
    run_dir = as_measured(raybench_run, tmp_path / "run")
    (run_dir / "env.json").write_text("[1, 2]")
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(run_dir), "--out", str(tmp_path / "p.json")])
    assert "env.json records no launch settings of vllm-h200 (env.json holds a JSON array, not an object)" \
        in result.stderr
    assert "earlier raybench" not in result.stderr


def test_a_damaged_launch_record_is_a_one_line_error_naming_it(raybench_run, tmp_path):
    run_dir = as_measured(raybench_run, tmp_path / "run")
    env = json.loads((run_dir / "env.json").read_text())
    env["servers"]["vllm-h200"]["simulator"]["modes"]["online"]["features"]["policy"] = "fifo"
    (run_dir / "env.json").write_text(json.dumps(env))
    result = CliRunner().invoke(main, ["calibrate", "--reference", str(run_dir), "--out", str(tmp_path / "p.json")])
    assert result.exit_code != 0 and len(result.stderr.strip().splitlines()) == 1
    assert "env.json: servers.vllm-h200.simulator: policy='fifo' is not allowed" in result.stderr


def test_predict_flags_the_cells_a_run_would_flag_for_resent_prompts(tmp_path):
    # the seed's prefix vLLM keeps a block-hash cache and is not reset: c64 and c128 resend c32's
    # prompts; SGLang resets its radix cache before each cell
    only = "backend=vllm-h200-prefix|sglang-h200,prefix_len=2000"
    result = CliRunner().invoke(main, ["predict", str(ROOT / "experiments" / "deepseek_r1.py"), "--only", only,
                                       "--num-prompts", "64", "--out", str(tmp_path), "--no-report"])
    assert result.exit_code == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    flags = {}
    for path in run_dir.glob("cells/*/summary.json"):
        summary = json.loads(path.read_text())
        flags[f"{summary['cell']['backend']} c{summary['cell']['concurrency']}"] = summary["prompts_sent_before"]
    first = "vllm-h200-prefix.H200-online-c32-i3200p2000-o800"
    assert {k: v and (v["share"], v["cells"]) for k, v in flags.items()} == {
        "vllm-h200-prefix c32": None, "vllm-h200-prefix c64": (1.0, [first]), "vllm-h200-prefix c128": (1.0, [first]),
        "sglang-h200 c32": None, "sglang-h200 c64": None, "sglang-h200 c128": None}
    assert ("vllm-h200-prefix: 2 cells (vllm-h200-prefix.H200-online-c64-i3200p2000-o800, "
            "vllm-h200-prefix.H200-online-c128-i3200p2000-o800) send prompts that earlier cells sent") in result.stderr
    assert "sglang-h200:" not in result.stderr


def test_a_cell_that_replays_a_data_set_is_predicted_with_its_lengths_and_a_missing_file_is_an_error(tmp_path):
    lengths = [(5, 7), (40, 4), (12, 30), (90, 11)]  # (prompt words, reply words), each passing the filters
    records = [{"conversations": [{"from": "human", "value": " ".join(["w"] * p)},
                                  {"from": "gpt", "value": " ".join(["r"] * o)}]} for p, o in lengths]
    (tmp_path / "chats.json").write_text(json.dumps(records))
    body = ("from raybench.experiment import Experiment, Online, VLLMBackend\n"
            "experiment = Experiment(name='chats', model='deepseek-ai/DeepSeek-R1',\n"
            "    backends=(VLLMBackend(name='vllm-h200', tp=8),),\n"
            "    online=(Online(concurrency=[2], input_len=3200, output_len=800, num_prompts=4, dataset='sharegpt',\n"
            "                   dataset_path={path!r}),))\n")
    (tmp_path / "exp.py").write_text(body.format(path=str(tmp_path / "chats.json")))
    experiment, cells = resolve(load_experiment(tmp_path / "exp.py"))
    run_dir, _ = predict_run(experiment, cells, tmp_path / "out", report=False)
    requests = pl.read_parquet(run_dir.cell_dir(cells[0].id) / "requests.parquet")
    # the file's lengths, not the nominal 3200 in / 800 out
    assert sorted(zip(requests["prompt_tokens"], requests["output_tokens"])) == sorted(lengths)
    (tmp_path / "exp.py").write_text(body.format(path=str(tmp_path / "missing.json")))
    experiment, cells = resolve(load_experiment(tmp_path / "exp.py"))
    with pytest.raises(ConfigError, match="missing.json does not exist"):
        predict_run(experiment, cells, tmp_path / "out2", report=False)
    assert not (tmp_path / "out2").exists()


def test_a_trace_is_predicted_at_its_own_times_and_a_rate_by_the_run_s_arrival_process(tmp_path):
    stamps_ms = [0, 40, 45, 2000, 2010, 9000]
    (tmp_path / "trace.jsonl").write_text("".join(
        json.dumps({"timestamp": t, "input_length": 600, "output_length": 8, "hash_ids": [t]}) + "\n" for t in stamps_ms))
    body = ("import math\n"
            "from raybench.experiment import Experiment, Online, VLLMBackend\n"
            "experiment = Experiment(name='times', model='deepseek-ai/DeepSeek-R1',\n"
            "    backends=(VLLMBackend(name='vllm-h200', tp=8),),\n"
            f"    online=(Online(concurrency=[64], input_len=3200, output_len=800, num_prompts=6, dataset='trace',\n"
            f"                   dataset_path={str(tmp_path / 'trace.jsonl')!r}, time_scale=2.0),\n"
            "            Online(concurrency=[64], input_len=600, output_len=8, num_prompts=40, request_rate=5.0,\n"
            "                   burstiness=0.5)), goodput_slos_ms={'ttft': 500.0})\n")
    (tmp_path / "exp.py").write_text(body)
    experiment, cells = resolve(load_experiment(tmp_path / "exp.py"))
    run_dir, summaries = predict_run(experiment, cells, tmp_path / "out", report=False)
    # the summary says what the run's would: the rate and burstiness it was sent at, goodput by the SLOs
    assert (summaries[1]["request_rate_per_s"], summaries[1]["burstiness"]) == (5.0, 0.5)
    assert summaries[0]["request_rate_per_s"] is None and summaries[0]["request_rate"] == "inf"
    assert 0 < summaries[1]["request_goodput"] <= summaries[1]["request_throughput"]
    trace_cell, rate_cell = cells
    sent = pl.read_parquet(run_dir.cell_dir(trace_cell.id) / "requests.parquet").sort("request_id")["t_sent_ns"]
    # each request goes at its time (twice the trace's, time_scale 2), none waits for a slot
    assert (sent.to_numpy() / 1e6).tolist() == pytest.approx([2 * t for t in stamps_ms], abs=1e-3)
    sent = pl.read_parquet(run_dir.cell_dir(rate_cell.id) / "requests.parquet").sort("request_id")["t_sent_ns"]
    expected = schedule_for(rate_cell, workload_for(rate_cell)).arrivals_s  # gamma gaps, as the run draws them
    assert np.ptp(np.diff(expected)) > 0.2  # bursty, not one every 0.2 s
    assert (sent.to_numpy() / 1e9).tolist() == pytest.approx(expected.tolist(), abs=1e-6)


def test_conversations_sent_again_hit_the_cache_and_are_flagged_as_a_run_flags_them(tmp_path):
    chat = ("Online(concurrency=[{c}], input_len=600, output_len=8, num_prompts=24, dataset='multiturn', "
            "num_turns=3)")
    body = ("from raybench.backends import seed\n"
            "from raybench.experiment import Experiment, Hardware, Online\n"
            "experiment = Experiment(name='chats', model='deepseek-ai/DeepSeek-R1',\n"
            "    backends=(seed.SEED_VLLM_H200_PREFIX,), hardware={'vllm-h200-prefix': Hardware(name='H200')},\n"
            f"    online=({chat.format(c=2)}, {chat.format(c=4)}), warmup_requests=0)\n")
    (tmp_path / "exp.py").write_text(body)
    experiment, cells = resolve(load_experiment(tmp_path / "exp.py"))
    _, summaries = predict_run(experiment, cells, tmp_path / "out", report=False)
    first, second = summaries
    assert first["prompts_sent_before"] is None
    assert second["prompts_sent_before"]["flagged"] and second["prompts_sent_before"]["cells"] == [cells[0].id]
    # the same conversations again: the first cell left every prompt cached
    cold = predict_cell(experiment, cells[1], load_profiles(), tmp_path / "cold")
    assert second["mean_ttft_ms"] < 0.6 * cold["mean_ttft_ms"]


def test_a_data_set_sent_again_hits_the_cache_and_is_flagged_as_a_run_flags_it(tmp_path):
    prompts = [" ".join(f"p{j}w{i}" for i in range(300 + 20 * j)) for j in range(8)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p, "output_tokens": 8}) + "\n"
                                                    for p in prompts))
    cell = "Online(concurrency=[{c}], input_len=1, output_len=8, num_prompts=8, dataset='custom', dataset_path={path!r})"
    body = ("from raybench.backends import seed\n"
            "from raybench.experiment import Experiment, Hardware, Online\n"
            "experiment = Experiment(name='texts', model='deepseek-ai/DeepSeek-R1',\n"
            "    backends=({backend},), hardware={{'{name}': Hardware(name='H200')}},\n"
            "    online=({one}, {two}), warmup_requests=0)\n")
    path = str(tmp_path / "prompts.jsonl")
    summaries, ids = {}, {}
    for backend, name in (("seed.SEED_VLLM_H200_PREFIX", "vllm-h200-prefix"), ("seed.SEED_SGLANG_H200", "sglang-h200")):
        (tmp_path / "exp.py").write_text(body.format(backend=backend, name=name, one=cell.format(c=2, path=path),
                                                     two=cell.format(c=4, path=path)))
        experiment, cells = resolve(load_experiment(tmp_path / "exp.py"))
        _, summaries[name] = predict_run(experiment, cells, tmp_path / name, report=False)
        ids[name] = [c.id for c in cells]
    first, second = summaries["vllm-h200-prefix"]
    assert first["prompts_sent_before"] is None
    # the run's share counts whole 16-token blocks of its sample: all but the prompts' last ones
    assert second["prompts_sent_before"]["flagged"] and second["prompts_sent_before"]["share"] > 0.95
    assert second["prompts_sent_before"]["cells"] == ids["vllm-h200-prefix"][:1]
    (path,) = (tmp_path / "vllm-h200-prefix").glob(f"*/*/cells/{ids['vllm-h200-prefix'][1]}/requests.parquet")
    requests = pl.read_parquet(path)
    # every prompt's whole 64-word blocks come from the first cell, but for one token to compute
    # (the 320-word prompt computes its last block again)
    assert requests["cached_tokens"].to_list() == [(n - 1) // 64 * 64 for n in requests["prompt_tokens"].to_list()]
    # SGLang's seed launch flushes its cache before each cell: nothing to flag, nothing cached
    assert [s["prompts_sent_before"] for s in summaries["sglang-h200"]] == [None, None]


def test_an_output_longer_than_a_chunk_can_count_is_several_chunks_and_summarises_right(tmp_path):
    backend = seed.SEED_SGLANG_H200
    experiment = Experiment(name="long", model="deepseek-ai/DeepSeek-R1", backends=(backend,),
                            hardware={backend.name: Hardware(name="H200", count=8)}, warmup_requests=0,
                            online=(Online(concurrency=(2,), input_len=1000, output_len=70000, num_prompts=3),))
    (cell,) = experiment.cells()
    summary = predict_cell(experiment, cell, load_profiles(), tmp_path / "cell")
    chunks = pl.read_parquet(tmp_path / "cell" / "chunks.parquet")
    per_request = chunks.group_by("request_id").agg(pl.col("n_tokens").sum(), pl.len(), pl.col("seq").max())
    # 1 + 32767 + 32767 + 4465 tokens in four chunks, then the stream's end
    assert per_request["n_tokens"].to_list() == [70000] * 3 and per_request["len"].to_list() == [5] * 3
    assert per_request["seq"].to_list() == [4] * 3 and (chunks["n_tokens"] >= 0).all()
    assert summary["total_output_tokens"] == 3 * 70000
    assert summary["mean_tpot_ms"] == pytest.approx((summary["mean_e2el_ms"] - summary["mean_ttft_ms"]) / 69999, rel=1e-6)


def test_calibrate_out_never_replaces_results_or_a_file_that_is_no_profiles_file(tmp_path, monkeypatch):
    from raybench.report import sources

    published = tmp_path / "published.csv"
    shutil.copy(sources.published_csv(), published)
    monkeypatch.setattr(sources, "published_csv", lambda: published)
    keep = tmp_path / "keep.json"
    keep.write_text('{"keep": 1}')
    for out, expected in ((published, "is --reference published"), (keep, "exists and is not a profiles file"),
                          ("", "is no file name")):
        result = CliRunner().invoke(main, ["calibrate", "--reference", "published", "--only", "backend=vllm,"
                                           "hardware=MI300X,output_len=800", "--out", str(out)])
        assert result.exit_code != 0 and expected in result.stderr, (out, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert published.read_bytes() == sources.published_csv().read_bytes() and keep.read_text() == '{"keep": 1}'
    assert pl.read_csv(published).height == 117


def test_a_reference_that_is_no_utf8_text_is_a_one_line_error(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("mode,hardware,backend,output_len,total_throughput_tok_s\nonline,H200,vllm né,800,1\n"
                    .encode("latin-1"))
    for args in (["calibrate", "--reference", str(bad), "--out", str(tmp_path / "p.json")],
                 ["report", str(bad), "--out", str(tmp_path / "r")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0 and "is not UTF-8 text" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_predict_refuses_a_prediction_as_its_reference(tmp_path):
    args = ["predict", str(ROOT / "experiments" / "deepseek_r1.py"), "--only", "backend=vllm-h200,concurrency=4",
            "--no-report"]
    first = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.stderr
    run_dir = first.stdout.strip().splitlines()[-1]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b"), "--reference", run_dir])
    assert result.exit_code != 0 and "not measurements" in result.stderr, result.stderr


@pytest.mark.parametrize("rate, fixed_step_ms", [(1e-9, None), (float("inf"), 1e300)])
def test_a_prediction_past_what_ns_timestamps_hold_is_a_one_line_error_and_writes_nothing(tmp_path, rate, fixed_step_ms):
    from dataclasses import replace

    backend = seed.SEED_VLLM_H200
    experiment = Experiment(name="slow", model="deepseek-ai/DeepSeek-R1", backends=(backend,),
                            hardware={backend.name: Hardware(name="H200", count=8)}, warmup_requests=0,
                            online=(Online(concurrency=(4,), input_len=100, output_len=10, num_prompts=20,
                                           request_rate=rate),))
    (cell,) = experiment.cells()
    profiles = dict(load_profiles())
    if fixed_step_ms is not None:
        profiles["vllm/H200"] = replace(profiles["vllm/H200"], fixed_step_ms=fixed_step_ms)
    with pytest.raises(ConfigError, match=r"beyond the 9.22e\+09 s \(~292 years\).*vllm/H200 profile"):
        predict_cell(experiment, cell, profiles, tmp_path / "cell")
    assert not (tmp_path / "cell").exists()
