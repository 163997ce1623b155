"""raybench calibrate: the shipped profiles are its output, and the method holds on unseen rows."""

import statistics

import numpy as np
import pytest

from raybench.calibration import (calibrate, load_reference, observations, row_errors, seed_launches,
                                  select_rows)
from raybench.sim import costmodel
from raybench.sim.calibrate import METRICS, _nnls_ridge, fit_pair, metric_vectors, predict_metrics
from raybench.sim.profiles import EngineProfile, load_profiles
from raybench.sim.virtual import simulate

SHIPPED_ROWS = "output_len=800,prefix_len=0"


@pytest.fixture(scope="module")
def published():
    return load_reference(["published"])


def test_the_shipped_profiles_are_calibrate_on_the_seed_output_800_rows(published):
    fits = calibrate(select_rows(published, SHIPPED_ROWS), seed_launches(), fitted_on="rebuilt")
    shipped = load_profiles()
    assert {f.profile.key for f in fits} == set(shipped)
    for fit in fits:
        have = shipped[fit.profile.key]
        for name in ("fixed_step_ms", "per_seq_ms", "moe_read_factor", "compute_factor", "kv_read_factor",
                     "eager_factor", "reserve_gib"):
            assert getattr(fit.profile, name) == pytest.approx(getattr(have, name), rel=1e-4, abs=1e-6), name
        assert fit.profile.fitted_regimes == have.fitted_regimes
        assert fit.profile.fitted_model == have.fitted_model == "deepseek-ai/DeepSeek-R1"
        assert fit.pool_unpinned is None, fit.profile.key  # every pair's c128 and b1024 rows pin its KV pool
    # what the output-800 rows of vLLM on H200 exercise: the prefix and chunked launch's steps are not among them
    assert load_profiles()["vllm/H200"].fitted_regimes == ("kv_limited", "preemption")


def test_a_fit_recovers_the_profile_that_made_the_rows(published):
    rows = select_rows(published, "hardware=MI300X,backend=vllm,output_len=800,prefix_len=0")
    truth = EngineProfile(engine="vllm", gpu="MI300X", fixed_step_ms=30.0, per_seq_ms=0.02, moe_read_factor=3.0,
                          compute_factor=15.0, kv_read_factor=2.0, reserve_gib=16.0)
    made = []
    for obs in observations(rows, seed_launches()):
        cost = obs.build(truth.reserve_gib)
        cost = costmodel.build(cost.model, cost.gpu, 8, truth, cost.features)
        m = predict_metrics(metric_vectors(simulate(cost, obs.requests, concurrency=obs.concurrency)),
                            truth.coefficients)
        made.append(type(obs)(**{**obs.__dict__, "throughput_tokens_per_s": m["throughput"],
                                 "ttft_ms": m["ttft"] if obs.ttft_ms else None,
                                 "tpot_ms": m["tpot"] if obs.tpot_ms else None,
                                 "e2e_ms": m["e2e"] if obs.e2e_ms else None}))
    fit = fit_pair(made)
    for row in fit.rows:  # the rows come back; the prior may trade coefficients the rows cannot tell apart
        errors = row_errors(fit.profile.key, row.label, row.measured, row.predicted).errors_pct
        assert max(abs(e) for e in errors.values()) < 5.0, (row.label, errors)
    assert fit_pair(made).profile == fit.profile  # deterministic


def test_fitting_a_third_of_the_rows_predicts_the_rest_within_1_5_x_the_held_out_targets(published):
    # in-sample: only concurrencies 4, 16, 64 and batches 32, 128, 512 of the output-800 rows
    only = "output_len=800,prefix_len=0,concurrency=4|16|64|none,batch_size=32|128|512|none"
    train = select_rows(published, only)
    assert train.height >= published.height / 4
    fits = {f.profile.key: f for f in calibrate(train, seed_launches(), fitted_on="split")}
    profiles = {key: fit.profile for key, fit in fits.items()}
    trained = set(train["cell_id"].to_list())
    held = published.filter(~published["cell_id"].is_in(list(trained)))
    errors = {m: [] for m in METRICS}
    unmarked_misses = []
    for obs in observations(held, seed_launches()):
        p = profiles[obs.key]
        cost = obs.build(p.reserve_gib)
        cost = costmodel.build(cost.model, cost.gpu, 8, p, cost.features)
        trace = simulate(cost, obs.requests, concurrency=obs.concurrency)
        pred = predict_metrics(metric_vectors(trace), p.coefficients)
        measured = {"throughput": obs.throughput_tokens_per_s, "ttft": obs.ttft_ms, "tpot": obs.tpot_ms,
                    "e2e": obs.e2e_ms}
        for m, e in row_errors(obs.key, obs.label, measured, pred).errors_pct.items():
            errors[m].append(abs(e))
            if abs(e) > 40 and not p.extrapolated(trace.regimes):
                unmarked_misses.append((obs.label, m, round(e)))
    medians = {m: statistics.median(v) for m, v in errors.items()}
    limits = {"throughput": 12.0, "ttft": 22.5, "tpot": 12.0, "e2e": 12.0}  # 1.5 x (8, 15, 8, 8) %
    assert all(medians[m] <= limits[m] for m in METRICS), medians
    # the rows this split leaves out are where its worst misses are (c128, longer outputs): those cells go
    # through what the fit never pinned (here the KV pools of SGLang on MI300X and TensorRT-LLM) and say so
    assert unmarked_misses == []
    assert fits["sglang/MI300X"].pool_unpinned is not None
    assert "kv_limited" not in fits["sglang/MI300X"].profile.fitted_regimes


def test_prefix_rows_send_their_groups_interleaved_as_the_seed_client_did(published):
    # SGLang's generated-shared-prefix shuffles its G x P prompts; one group at a time would make a
    # prefix cache look far better at the start of a run than it was
    from raybench.calibration import row_requests
    from raybench.sim.virtual import shared_prefix_requests

    row = select_rows(published, "hardware=H200,backend=vllm,prefix_len=2000,concurrency=32").row(0, named=True)
    requests = row_requests(row)
    # the server counted 1,636,216 prompt tokens for 500 requests: the text re-encoded to 3272 a prompt
    assert list(requests) == shared_prefix_requests(500, 3272, 2045, 800, 50)
    first_wave = {r.segments[0][0] for r in requests[:32]}
    assert len(first_wave) == 10  # every group's prefix is in the first 32 requests
    assert all(sum(t for _, t in r.segments) == 3272 for r in requests)


def test_a_row_is_simulated_with_the_prompt_tokens_its_server_counted(published):
    from raybench.calibration import counted_prompt_tokens, row_requests

    random_row = select_rows(published, "hardware=H200,backend=vllm,prefix_len=0,concurrency=32").row(0, named=True)
    assert counted_prompt_tokens(random_row) == 3200  # token ids sent as drawn
    assert {r.prompt_tokens for r in row_requests(random_row)} == {3200}
    # a row that records no counts (no input throughput) keeps its nominal length
    bare = {**random_row, "input_throughput_tokens_per_s": None, "input_len": 1000}
    assert counted_prompt_tokens(bare) is None
    assert {r.prompt_tokens for r in row_requests(bare)} == {1000}
    for broken in (float("nan"), 0.0, -1.0):  # a run that measured nothing usable keeps its nominal length
        assert counted_prompt_tokens({**random_row, "duration_s": broken}) is None
    grown = {**random_row, "input_throughput_tokens_per_s": random_row["input_throughput_tokens_per_s"] * 1.1}
    assert {r.prompt_tokens for r in row_requests(grown)} == {3520}


def test_the_seed_s_offline_vllm_rows_ran_their_own_engine_with_max_model_len_32768(published):
    # benchmark_throughput.py --max-model-len=32768: without chunked prefill that is the step
    # budget, and so the size of the profiling pass that sets the KV pool
    from raybench.calibration import row_setting

    offline = row_setting(select_rows(published, "hardware=H200,backend=vllm,mode=offline").row(0, named=True),
                          seed_launches()).features
    online = row_setting(select_rows(published, "hardware=H200,backend=vllm,mode=online,prefix_len=0").row(0, named=True),
                         seed_launches()).features
    assert (offline.max_model_len, offline.prefill_tokens_per_step) == (32768, 32768)
    assert (online.max_model_len, online.prefill_tokens_per_step) == (None, 163840)
    # SGLang's pool does not depend on its context length: its offline rows keep the server's features
    sglang = [row_setting(select_rows(published, f"hardware=H200,backend=sglang,mode={mode},prefix_len=0").row(0, named=True),
                          seed_launches()).features for mode in ("offline", "online")]
    assert sglang[0] == sglang[1]


def test_profiles_record_the_regimes_their_fit_saw_and_predictions_beyond_them_say_so(published, tmp_path):
    from raybench.calibration import error_table, predicted_row_error
    from raybench.sim.config import SimConfigError
    from raybench.sim.profiles import dump_profiles

    unchunked = select_rows(published, "hardware=H200,backend=vllm,prefix_len=0,output_len=800,mode=online")
    (fit,) = calibrate(unchunked, seed_launches(), fitted_on="online")
    assert "mixed_steps" not in fit.profile.fitted_regimes and "prefix_hits" not in fit.profile.fitted_regimes
    prefix = select_rows(published, "hardware=H200,backend=vllm,prefix_len=2000,concurrency=32")
    (obs,) = observations(prefix, seed_launches())
    error = predicted_row_error(obs, fit.profile)
    assert {"mixed_steps", "prefix_hits"} <= set(error.extrapolated)
    assert "[extrapolated: " in error_table({"x": [error]}, worst=1)
    (in_sample,) = observations(select_rows(unchunked, "concurrency=4"), seed_launches())
    assert predicted_row_error(in_sample, fit.profile).extrapolated == ()

    path = tmp_path / "p.json"  # written and read back; a profile without the record extrapolates nothing known
    dump_profiles([fit.profile], path)
    (back,) = load_profiles(path).values()
    assert back.fitted_regimes == fit.profile.fitted_regimes
    unknown = EngineProfile(**{**back.__dict__, "fitted_regimes": None})
    assert unknown.extrapolated({"prefix_hits"}) is None
    for bad in (["warp_drive"], "prefix_hits", 3):
        with pytest.raises(SimConfigError, match="fitted_regimes"):
            EngineProfile(**{**back.__dict__, "fitted_regimes": bad})


def test_the_fit_s_least_squares_step_meets_its_optimality_conditions():
    """min |a u - y|^2 + ridge |u - 1|^2 over u >= 0: at the answer the gradient is zero where u > 0
    and points into the bound where u = 0 (here the data push one coefficient below zero)."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 6))
    y = a @ np.array([2.0, -1.0, 1.5, 0.0, 3.0, 0.5]) + rng.normal(scale=0.1, size=40)
    ridge = 0.2
    u = _nnls_ridge(a, y, ridge, np.ones(6))
    gradient = (a.T @ a + ridge * np.eye(6)) @ u - (a.T @ y + ridge)
    assert (u >= 0).all() and u[1] == 0.0
    assert gradient[1] > 1.0  # the bound holds it
    assert np.abs(gradient[u > 0]).max() < 1e-9
