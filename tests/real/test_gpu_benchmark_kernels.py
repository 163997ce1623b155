"""The GPU benchmarks' kernels, run on a CPU: Triton's interpreter runs them in the real-engine venv
(it has PyTorch and Triton), so a session that is lent a GPU spends its minutes measuring."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import vllm_env

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def interpreted(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(vllm_env.venv_python()), *args], env=dict(os.environ, TRITON_INTERPRET="1"),
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("script", ["fused_moe_tiles.py", "shared_prefix_decode.py"])
def test_the_kernel_matches_pytorch(vllm_venv, script):
    done = interpreted(str(BENCHMARKS / script), "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("relative error") >= 2


# the GPU run's loop at shapes the interpreter takes in seconds (16 experts, top 2), every call run
# once and timed as 1 us; then the padding the full run reports, at DeepSeek-R1's 256 experts, top 8
MEASURE = """
import importlib.util, json, sys, torch
spec = importlib.util.spec_from_file_location("fused_moe_tiles", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
m.EXPERTS, m.TOP_K, m.HIDDEN, m.SHARD = 16, 2, 128, 128
rows = m.measure([20, 780], ["fp8"], device="cpu", timer=lambda call: (call(), 1.0)[1])
m.summarize(rows, 780)
gen = torch.Generator().manual_seed(0)
steps = {}
for tokens in (128, 1321, 2048, 32768):
    ids = m.route(tokens, 256, 8, gen)
    slots, tile_expert = m.align(ids, 256, m.table_block_m(tokens))
    flat = ids.flatten()
    real = slots[slots < flat.numel()].long()
    tile_of = torch.arange(slots.numel()) // m.table_block_m(tokens)
    steps[tokens] = {"tiles": m.padding(ids, 256, m.table_block_m(tokens))[0], "aligned_tiles": tile_expert.numel(),
                     "padded_over_real": m.padding(ids, 256, m.table_block_m(tokens))[1] / flat.numel(),
                     "experts_touched": int(flat.unique().numel()),
                     "each_slot_once": bool((real.sort().values == torch.arange(flat.numel())).all()),
                     "slots_in_their_experts_tiles": bool((flat[real] == tile_expert[tile_of[slots < flat.numel()]]).all())}
print("RESULT " + json.dumps({"rows": rows, "steps": steps}))
"""


def test_the_measuring_loop_and_its_padding(vllm_venv):
    done = interpreted("-c", MEASURE, str(BENCHMARKS / "fused_moe_tiles.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    rows = result["rows"]
    # both GEMMs at both step sizes, each with tiles of 16 and 64 rows, vLLM's choice marked once
    assert sorted((r["gemm"], r["tokens"], r["block_m"]) for r in rows) == sorted(
        (g, t, b) for g in ("gate_up", "down") for t in (20, 780) for b in (16, 64))
    assert {(r["tokens"], r["block_m"]) for r in rows if r["table_tile"]} == {(20, 16), (780, 64)}
    for r in rows:
        assert r["real_rows"] == 2 * r["tokens"]
        assert r["padded_rows"] == r["tiles"] * r["block_m"] >= r["real_rows"]
    assert "time/row x 1.00" in done.stdout  # the summary, against the largest step
    steps = {int(k): v for k, v in result["steps"].items()}
    for s in steps.values():
        assert s["each_slot_once"] and s["slots_in_their_experts_tiles"]
        assert s["tiles"] == s["aligned_tiles"]
    # decode (16-row tiles): one tile per expert a step touches, so a weight read per touched expert
    assert steps[128]["tiles"] == steps[128]["experts_touched"]
    # a chunked-prefill step: ~41 slots an expert, one 64-row tile each (a rare expert two); 2048 tokens:
    # 64 an expert, 1.47 tiles
    assert 256 <= steps[1321]["tiles"] <= 260 and steps[1321]["padded_over_real"] == pytest.approx(1.55, abs=0.02)
    assert steps[2048]["padded_over_real"] == pytest.approx(1.47, abs=0.04)
    assert steps[32768]["padded_over_real"] == pytest.approx(1.03, abs=0.01)


def test_compile_cost_compiles_each_variant_for_a_gpu_target(vllm_venv):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([str(vllm_env.venv_python()), str(BENCHMARKS / "triton_compile_cost.py"), "--repeat", "1"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "target sm_90" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.split() and line.split()[0] in {"16", "64", "128"}]
    # tiles of 16, 64 and 128 rows, each with the step's slot count divisible by 16 and not
    assert [(r[0], r[1] == "0") for r in rows] == [(m, d) for m in ("16", "64", "128") for d in (True, False)]
    assert all(0 < float(r[-1]) < 120 for r in rows), done.stdout


def test_compile_cost_refuses_what_it_cannot_do(vllm_venv):
    for args, env_extra, said in ((["--repeat", "0"], {}, "--repeat"), ([], {"TRITON_INTERPRET": "1"}, "unset it")):
        done = subprocess.run([str(vllm_env.venv_python()), str(BENCHMARKS / "triton_compile_cost.py"), *args],
                              env=dict(os.environ, **env_extra), capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode != 0 and said in done.stderr, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
