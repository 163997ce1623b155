"""Decode steps that cannot replay a CUDA graph: vLLM past max_seq_len_to_capture runs eagerly."""

import pytest

from raybench.calibration import load_reference, observations, predicted_row_error, seed_launches, select_rows
from raybench.sim import costmodel
from raybench.sim.engine import EngineCore
from raybench.sim.features import VLLM_GRAPH_MAX_CONTEXT, defaults
from raybench.sim.profiles import load_profiles


def _cost(engine: str = "vllm", **changes) -> costmodel.CostModel:
    model = costmodel.find_model("deepseek-ai/DeepSeek-R1")
    profile = load_profiles()[f"{engine}/H200"]
    features = defaults(engine).with_(**changes)
    return costmodel.build(model, costmodel.GPUS["H200"], 8, profile, features)


def test_eager_step_cost_is_the_launch_gap_of_every_kernel():
    cost = _cost()
    # ~2,700 kernels x (8.1 - 1.09) us (h200-microbench.md): ~19 ms a step
    assert cost.eager_step_s == pytest.approx(45 * 61 * 7.01e-6)
    assert 0.015 < cost.eager_step_s < 0.025


def test_vllm_decode_steps_past_the_capture_limit_run_eagerly():
    features = defaults("vllm")
    assert features.cuda_graphs and features.graph_max_context == VLLM_GRAPH_MAX_CONTEXT == 8192
    assert features.eager_decode_steps(8190, 1, 5) == 2  # contexts 8190..8194: the last two are past it
    assert features.eager_decode_steps(9000, 1, 5) == 5
    assert features.eager_decode_steps(100, 1, 5) == 0
    assert features.eager_decode_steps(8190, 2, 5) == 3  # 8190, 8192 graphed; 8194.. eager
    assert defaults("sglang").eager_decode_steps(10**6, 1, 5) == 0  # no context limit on its graphs
    assert defaults("trtllm").eager_decode_steps(10**6, 1, 5) == 0  # no graphs: every step alike


def _steps(core: EngineCore) -> list:
    out = []
    while (step := core.step()) is not None:
        out.append(step)
    return out


def test_only_decode_steps_past_the_limit_pay_the_eager_cost():
    cost = _cost()
    core = EngineCore(cost)
    core.add_request(0, 8190, 6)
    steps = _steps(core)
    eager = [s.features[5] for s in steps]
    # the prefill step (it also emits the first token), decodes at contexts 8191..8195, then the
    # finished request's extra decode run (vLLM V0 processes a step's outputs during the next)
    assert eager == [0.0, 0.0, 0.0, cost.eager_step_s, cost.eager_step_s, cost.eager_step_s, cost.eager_step_s]
    assert steps[3].duration_s - steps[2].duration_s == pytest.approx(cost.eager_step_s, rel=0.01)
    graphed = EngineCore(_cost(cuda_graphs=False))
    graphed.add_request(0, 8190, 6)
    assert all(s.features[5] == 0.0 for s in _steps(graphed))


def test_fast_forward_counts_the_eager_steps_as_stepping_does(summed_features):
    def run(fast: bool) -> tuple[float, ...]:
        core = EngineCore(_cost())
        for i in range(4):
            core.add_request(i, 8000 + 50 * i, 400)
        return summed_features(core, fast=fast)

    slow, fast = run(False), run(True)
    assert fast == pytest.approx(slow, rel=1e-9)
    assert slow[5] > 0


def test_h200_vllm_c128_output_6400_is_predicted_within_40_percent():
    # the published row's median ITL jumps from 60 ms (output 3200) to 95 ms (output 6400), where
    # sequences pass 8192 tokens: without eager steps the throughput came out 62 % too high
    published = load_reference(["published"])
    row = select_rows(published, "hardware=H200,backend=vllm,concurrency=128,output_len=6400")
    (obs,) = observations(row, seed_launches())
    errors = predicted_row_error(obs, load_profiles()[obs.key]).errors_pct
    assert max(abs(e) for e in errors.values()) < 40.0, errors


def test_a_profiles_file_written_before_eager_factor_loads_with_the_physical_value(tmp_path):
    import json

    from raybench.sim.profiles import dump_profiles

    path = tmp_path / "old.json"
    dump_profiles([load_profiles()["vllm/H200"]], path)
    data = json.loads(path.read_text())
    del data["profiles"][0]["eager_factor"]
    path.write_text(json.dumps(data))
    (old,) = load_profiles(path).values()
    assert old.eager_factor == 1.0 and old.coefficients[5] == 1.0


def test_a_run_with_eager_decode_steps_says_so_stepping_or_fast_forwarding():
    counted = {}
    for fast in (False, True):
        core = EngineCore(_cost())
        core.add_request(0, 8190, 40)
        while core.has_work():
            span = core.fast_forward_decode() if fast else None
            if span is None:
                core.step()
        assert core.regimes() == {"eager_decode"}, fast
        counted[fast] = core.eager_steps
    assert counted[True] == counted[False] > 30  # the span counts its eager steps as stepping does
    short = EngineCore(_cost())
    short.add_request(0, 100, 40)
    while short.has_work():
        short.step()
    assert "eager_decode" not in short.regimes()
