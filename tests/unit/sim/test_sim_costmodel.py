"""The roofline cost model: DeepSeek-R1 facts from sim-study.md and the shape of step times."""

import pytest

from raybench.sim import costmodel
from raybench.sim.config import SimConfig, SimConfigError
from raybench.sim.features import defaults
from raybench.sim.profiles import load_profiles


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


def test_step_cost_is_the_profile_coefficients_times_the_kernel_level_features():
    cost = _deepseek()
    feats = cost.step_features(128, 128, 0.0, 128 * 4000)
    assert len(feats) == len(costmodel.FEATURES) and feats[:2] == (1.0, 128.0)
    expected = sum(c * f for c, f in zip(cost.profile.coefficients, feats))
    assert cost.step_time_s(128, 128, 0.0, 128 * 4000) == pytest.approx(expected)
    assert cost.step_time_s(128, 128, 0.0, 128 * 4000) > cost.profile.fixed_step_ms / 1e3


def test_decode_steps_grow_with_batch_and_context():
    cost = _deepseek()
    times = [cost.step_time_s(b, b, 0.0, b * 3200) for b in (1, 8, 32, 128, 256)]
    assert times == sorted(times)
    assert cost.step_time_s(64, 64, 0.0, 64 * 9000) > cost.step_time_s(64, 64, 0.0, 64 * 3000)
    # at batch 1 the step is mostly its fixed part (launches, scheduling), as measured at c4
    one = cost.step_time_s(1, 1, 0.0, 3200)
    assert one < 1.5 * cost.profile.fixed_step_ms / 1e3


def test_prefill_is_compute_bound_and_scales_with_tokens():
    cost = _deepseek()
    small = cost.step_features(1024, 1, 1024 * 512, 1024)
    big = cost.step_features(8192, 1, 8192 * 4096, 8192)
    assert big[3] > big[2] and big[3] > big[4]  # compute beats weight and KV reads
    assert big[3] / small[3] > 8


def test_a_decode_span_sums_its_steps_in_closed_form():
    cost = _deepseek()
    steps = [cost.step_features(32, 32, 0.0, 32 * 3200 + s * 32) for s in range(50)]
    span = cost.decode_span_features(32, 1, 32 * 3200, 50)
    for i in range(len(span)):
        assert span[i] == pytest.approx(sum(f[i] for f in steps), rel=1e-9)


def test_mla_kv_is_replicated_under_tensor_parallelism_but_gqa_is_split():
    assert _deepseek().kv_bytes_per_token_per_rank == 70_272
    llama = costmodel.resolve(SimConfig(timing="engine", model="meta-llama/Llama-3.1-8B-Instruct", num_gpus=2))
    assert llama.kv_bytes_per_token_per_rank == 131_072 / 2


def test_kv_capacity_from_memory_minus_weights_and_the_fitted_reserve():
    cost = _deepseek(backend_profile="vllm")
    reserve = cost.profile.reserve_gib
    peak = costmodel.profile_peak_bytes(cost.model, 8, 163840) / 2**30  # vLLM's profiling pass
    expected = (140 * 0.9 - cost.model.weight_bytes / 8 / 2**30 - reserve - peak) * 2**30 / 70_272
    assert cost.kv_capacity_tokens == pytest.approx(expected, rel=0.001)
    assert _deepseek(gpu="MI300X").kv_capacity_tokens > 2 * cost.kv_capacity_tokens
    assert _deepseek(kv_capacity_tokens=1234).kv_capacity_tokens == 1234


def test_vllm_keeps_its_profiling_pass_s_peak_activations_out_of_the_kv_pool():
    model = costmodel.find_model("deepseek-ai/DeepSeek-R1")
    peak = {t: costmodel.profile_peak_bytes(model, 8, t) / 2**30 for t in (163840, 32768, 2048)}
    # the residual stream grows with the tokens, the fused MoE buffers stop at 32,768 of them
    assert peak == pytest.approx({163840: 12.62, 32768: 5.62, 2048: 0.35}, abs=0.01)
    whole, chunked = (_deepseek(backend_profile="vllm", max_num_batched_tokens=t) for t in (163840, 2048))
    assert chunked.features.profiled_kv_pool
    gained = (peak[163840] - peak[2048]) * 2**30 / 70_272
    assert chunked.kv_capacity_tokens - whole.kv_capacity_tokens == pytest.approx(gained, abs=1)
    # SGLang sizes its pool by mem_fraction_static alone: the step budget does not move it
    sg = {t: _deepseek(backend_profile="sglang", max_num_batched_tokens=t).kv_capacity_tokens for t in (16384, 2048)}
    assert sg[16384] == sg[2048]


def test_dp_attention_keeps_each_request_on_one_rank():
    tp = _deepseek(backend_profile="sglang")
    dp = _deepseek(backend_profile="sglang", features=defaults("sglang").with_(dp_attention=8))
    assert dp.kv_bytes_per_token_per_rank == tp.kv_bytes_per_token_per_rank / 8
    # 8 x the tokens, less what the attention weights every rank now holds whole take of each rank
    lost_per_rank = (8 * tp.kv_capacity_tokens - dp.kv_capacity_tokens) / 8
    assert lost_per_rank * tp.kv_bytes_per_token_per_rank == pytest.approx(tp.model.attention_bytes * 7 / 8, rel=1e-3)


def test_tensorrt_llm_takes_its_kv_fraction_of_the_memory_the_weights_leave():
    trt = _deepseek(backend_profile="trtllm")
    model, reserve = trt.model, trt.profile.reserve_gib
    assert trt.features.memory_of_free
    left = trt.gpu.memory_gib * 2**30 - model.weight_bytes / 8 - reserve * 2**30
    assert trt.kv_capacity_tokens == int(0.9 * left // trt.kv_bytes_per_token_per_rank)
    # --kv_cache_free_gpu_memory_fraction 0.5 halves the pool; as a share of the whole GPU it would not
    # even hold the weights
    half = _deepseek(backend_profile="trtllm", features=defaults("trtllm").with_(memory_fraction=0.5))
    assert half.kv_capacity_tokens == int(0.5 * left // trt.kv_bytes_per_token_per_rank)
    with pytest.raises(SimConfigError, match="GiB of weights per GPU"):
        _deepseek(backend_profile="trtllm", features=defaults("trtllm").with_(memory_fraction=0.5,
                                                                                   memory_of_free=False))


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


def test_engine_defaults_come_from_the_engine_and_overrides_win():
    trt = _deepseek(backend_profile="trtllm")
    assert trt.features.admission_output_reserve == 1.0 and trt.features.policy.value == "mixed"
    assert _deepseek(max_num_seqs=7).max_num_seqs == 7
    assert _deepseek(max_num_batched_tokens=4096).max_num_batched_tokens == 4096


def test_the_shipped_profiles_cover_the_seed_pairs_with_physical_numbers():
    profiles = load_profiles()
    assert set(profiles) == {"sglang/H200", "sglang/MI300X", "vllm/H200", "vllm/MI300X", "trtllm/H200",
                             "trtllm-engine/H200"}
    for p in profiles.values():
        assert 5 <= p.fixed_step_ms <= 60  # launches + scheduling: 1.5-15 ms of launches alone
        assert 2 <= p.compute_factor <= 60  # prefill reaches 2-50 % of dense peak
        assert 0 <= p.kv_read_factor <= 10 and 0 <= p.moe_read_factor <= 40
        assert "output_len=800" in p.fitted_on


def test_a_profiles_file_with_two_profiles_of_one_pair_is_refused(tmp_path):
    from raybench.sim.profiles import dump_profiles

    path = tmp_path / "twice.json"
    shipped = load_profiles()
    dump_profiles([shipped["vllm/H200"], shipped["sglang/H200"]], path)
    assert set(load_profiles(path)) == {"vllm/H200", "sglang/H200"}
    text = path.read_text().replace('"engine": "sglang"', '"engine": "vllm"')  # now vllm/H200 twice
    path.write_text(text)
    with pytest.raises(SimConfigError, match=r"profiles\[1\]='vllm/H200' is not allowed: one profile per engine x GPU"):
        load_profiles(path)
