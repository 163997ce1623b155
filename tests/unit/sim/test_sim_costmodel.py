"""The roofline cost model: DeepSeek-R1 facts from sim-study.md and the shape of step times."""

import pytest

from raybench.sim import costmodel
from raybench.sim.config import SimConfig, SimConfigError


def _deepseek(**overrides) -> costmodel.CostModel:
    return costmodel.resolve(SimConfig(timing="engine", **overrides))


def test_deepseek_profile_matches_the_published_architecture():
    model = costmodel.find_model("deepseek-ai/DeepSeek-R1")
    assert model.kv_bytes_per_token == 70_272  # (512 + 64) x 2 B x 61 layers
    assert model.active_params == pytest.approx(36.5e9, rel=0.02)  # paper: 37B active
    # 671B parameters, FP8 except the BF16 embedding and lm_head: about 79 GiB per GPU at TP8
    assert model.weight_bytes / 8 / 2**30 == pytest.approx(78.3, abs=1.0)
    assert costmodel.find_model("DeepSeek-R1") is model  # aliases, case-insensitive


def test_touched_experts_grow_from_top_k_to_all_experts():
    cost = _deepseek()
    assert cost.touched_experts(1) == pytest.approx(8.0)
    assert cost.touched_experts(4) == pytest.approx(256 * (1 - (248 / 256) ** 4))
    assert 250 < cost.touched_experts(128) < 256


def test_small_decode_steps_are_mostly_fixed_overhead():
    cost = _deepseek()
    t0_s = cost.backend.t0_ms / 1e3
    one = cost.step_time_s(1, 0, 3200, 3200)
    assert t0_s < one < t0_s + 0.005  # the roofline alone is a few ms at batch 1
    times = [cost.step_time_s(b, 0, b * 3200, b * 3200) for b in (1, 8, 32, 128, 256)]
    assert times == sorted(times)


def test_prefill_is_compute_bound_and_scales_with_tokens():
    cost = _deepseek()
    c_small, m_small = cost.step_terms_s(1024, 1024 * 512, 0, 1024)
    c_big, m_big = cost.step_terms_s(8192, 8192 * 4096, 0, 8192)
    assert c_big > m_big  # compute dominates prefill
    assert c_big / c_small > 8


def test_mla_kv_is_replicated_under_tensor_parallelism_but_gqa_is_split():
    assert _deepseek().kv_bytes_per_token_per_rank == 70_272
    llama = costmodel.resolve(SimConfig(timing="engine", model="meta-llama/Llama-3.1-8B-Instruct", num_gpus=2))
    assert llama.kv_bytes_per_token_per_rank == 131_072 / 2


def test_kv_capacity_from_memory_minus_weights():
    cost = _deepseek(backend_profile="vllm")
    # 141 GiB x 0.9 - 78.3 GiB weights - 32 GiB reserve, over 70,272 B per token
    expected = (141 * 0.9 - 672.88e9 / 8 / 2**30 - 32) * 2**30 / 70_272
    assert cost.kv_capacity_tokens == pytest.approx(expected, rel=0.001)
    assert _deepseek(gpu="MI300X").kv_capacity_tokens > 3 * cost.kv_capacity_tokens
    assert _deepseek(kv_capacity_tokens=1234).kv_capacity_tokens == 1234


def test_model_that_does_not_fit_names_the_field_to_change():
    with pytest.raises(SimConfigError) as err:
        SimConfig(timing="engine", gpu="H100", num_gpus=8)
    assert err.value.field == "num_gpus"
    assert "GiB of weights per GPU" in str(err.value)
    SimConfig(timing="engine", gpu="H100", num_gpus=8, kv_capacity_tokens=100_000)  # explicit: accepted


def test_engine_timing_needs_a_profiled_model_but_other_timings_do_not():
    with pytest.raises(SimConfigError, match="model='my-model'.*profiled model"):
        SimConfig(timing="engine", model="my-model")
    SimConfig(timing="zero", model="my-model")


def test_engine_defaults_come_from_the_backend_profile():
    trt = _deepseek(backend_profile="trtllm")
    assert (trt.max_num_seqs, trt.max_num_batched_tokens) == (512, 16384)
    assert _deepseek(max_num_seqs=7).max_num_seqs == 7
    for backend in costmodel.BACKENDS.values():
        assert 0.03 <= backend.e_compute <= 0.07
        assert 21 <= backend.t0_ms <= 46
