"""benchmarks/sim_prefix_rows.py's readings: the row behind a server front end's event loop, and a first
wave that recomputes the prefix it hits."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from raybench.calibration import load_reference, observations, profiled_cost, seed_launches, select_rows
from raybench.sim.profiles import load_profiles
from raybench.sim.virtual import simulate

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sim_prefix_rows.py"


@pytest.fixture(scope="module")
def row():
    spec = importlib.util.spec_from_file_location("sim_prefix_rows", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    frame = select_rows(load_reference(["published"]), "backend=vllm,hardware=H200,prefix_len=2000,concurrency=32")
    (obs,) = observations(frame, seed_launches())
    return script, obs, profiled_cost(obs, load_profiles()[obs.key])


def test_a_front_end_that_takes_no_time_changes_nothing(row):
    script, obs, cost = row
    trace = simulate(cost, obs.requests, concurrency=obs.concurrency)
    sent, first, _ = trace.times_s(cost.coefficients)
    ttft, _ = script.behind_front_end(cost, obs, 0.0)
    assert ttft == pytest.approx((first - sent) * 1000, abs=1e-6)


def test_a_burst_reaches_the_engine_after_every_handler_of_it_ran(row):
    script, obs, cost = row
    none, _ = script.behind_front_end(cost, obs, 0.0)
    ttft, _ = script.behind_front_end(cost, obs, 0.04)
    wave = np.arange(obs.concurrency)  # the first C requests go out at once
    # no request of the burst reaches the engine before 32 x 40 ms, so the whole wave moves by about that
    assert ttft[wave].min() >= 32 * 40
    assert np.median(ttft[wave] - none[wave]) == pytest.approx(32 * 40, rel=0.1)
    # after it a request arrives alone, while the engine runs a step it could not join anyway: a
    # handler shorter than that step (a decode step here takes ~50 ms) hides there
    assert 0 <= np.median(ttft[obs.concurrency:] - none[obs.concurrency:]) <= 40


def test_a_front_end_that_hands_over_each_request_lets_the_engine_start_on_the_first(row):
    script, obs, cost = row
    batch, _ = script.behind_front_end(cost, obs, 0.04, "batch")
    each, _ = script.behind_front_end(cost, obs, 0.04, "each")
    c = obs.concurrency
    # either way no token leaves before the loop is done with the burst's 32 handlers ...
    assert each[:c].min() >= c * 40 - 1e-6
    # ... but the engine took the first of them after one handler, not after all 32: the wave's prompts
    # are done 31 handlers sooner
    assert batch[:c].max() - each[:c].max() == pytest.approx((c - 1) * 40, rel=0.1)
    assert each[:c].mean() < batch[:c].mean()
    with pytest.raises(ValueError, match="'batch' or 'each'"):
        script.behind_front_end(cost, obs, 0.04, "later")


def test_a_cold_first_wave_computes_whole_prompts_in_shared_blocks(row):
    script, obs, cost = row
    c = obs.concurrency
    prompts = np.array([spec.prompt_tokens for spec in obs.requests])

    def run(core):
        computed = np.zeros(len(prompts), dtype=np.int64)
        waiting_first = set(range(c))
        wave_kv = 0  # KV held while the first wave still prefills (later the cache fills the pool)

        def seen(step):
            nonlocal wave_kv
            for req_id, chunk in step.prefill_chunks:
                computed[req_id] += chunk
            if waiting_first:
                wave_kv = max(wave_kv, core.kv_used_tokens)
            waiting_first.difference_update(e.req_id for e in step.emissions)

        trace = simulate(cost, obs.requests, concurrency=c, on_step=seen, core=core)
        return trace, computed, wave_kv

    warm, warm_computed, warm_kv = run(script.EngineCore(cost))
    cold, cold_computed, cold_kv = run(script.ColdFirstWave(cost, c))
    assert warm_computed[:c].sum() < 0.6 * prompts[:c].sum()  # the model: all but each group's first hit
    assert (cold_computed[:c] == prompts[:c]).all()  # every prompt of the first wave computed whole
    assert (cold.cached_tokens[:c] == warm.cached_tokens[:c]).all()  # ... in blocks it shares
    assert (cold_computed[c:] == prompts[c:] - cold.cached_tokens[c:]).all()  # later ones hit
    # the same KV either way: a private copy of the ~2000-token prefix for each of the wave's hits would add ~40K
    assert abs(cold_kv - warm_kv) <= 2048
    _, first, _ = cold.times_s(cost.coefficients)
    _, warm_first, _ = warm.times_s(cost.coefficients)
    assert first[:c].max() > 1.3 * warm_first[:c].max()  # the wave's last first token comes later
