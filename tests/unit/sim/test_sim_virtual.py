"""The virtual-time closed loop, checked against the engine run other ways."""

import dataclasses

import pytest

from raybench.sim import OfflineEngine, SimConfig, costmodel
from raybench.sim.engine import EngineCore, KvCapacityError
from raybench.sim.features import defaults
from raybench.sim.virtual import RequestSpec, closed_loop, simulate

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def _cost(**overrides) -> costmodel.CostModel:
    return costmodel.resolve(SimConfig(timing="engine", **overrides))


def test_all_requests_at_once_is_one_offline_generate():
    config = SimConfig(timing="engine")
    offline = OfflineEngine(config).generate([3200] * 300, 200)
    loop = closed_loop(costmodel.resolve(config), num_requests=300, prompt_tokens=3200, output_tokens=200,
                       concurrency=300)
    assert loop.elapsed_s == pytest.approx(offline.elapsed_s, rel=1e-12)
    assert loop.num_steps == offline.num_steps


def test_one_slot_runs_the_requests_one_after_another():
    cost = _cost(model=LLAMA, gpu="H100", num_gpus=1)
    alone_s = closed_loop(cost, num_requests=1, prompt_tokens=500, output_tokens=40, concurrency=1).elapsed_s
    five = closed_loop(cost, num_requests=5, prompt_tokens=500, output_tokens=40, concurrency=1)
    assert five.elapsed_s == pytest.approx(5 * alone_s, rel=1e-9)
    # the prefill step also samples the first token; the last one's extra decode run (vLLM V0
    # learns a request is done while the next step runs) is where its client hears of it
    assert five.num_steps == 5 * 41


def test_a_slow_arrival_rate_leaves_the_engine_idle_between_requests():
    cost = _cost(model=LLAMA, gpu="H100", num_gpus=1)
    alone_s = closed_loop(cost, num_requests=1, prompt_tokens=500, output_tokens=40, concurrency=1).elapsed_s
    assert alone_s < 2.0  # so requests 2 s apart never overlap
    slow = closed_loop(cost, num_requests=4, prompt_tokens=500, output_tokens=40, concurrency=4, rate_per_s=0.5)
    assert slow.elapsed_s == pytest.approx(3 * 2.0 + alone_s, rel=1e-9)


def test_an_arrival_during_decoding_joins_at_the_next_step_boundary():
    # request 2 arrives halfway through request 1: the fast-forwarded span must stop there, so
    # the loop takes exactly the steps that stepping one by one takes
    cost = _cost(model=LLAMA, gpu="H100", num_gpus=1)
    alone_s = closed_loop(cost, num_requests=1, prompt_tokens=500, output_tokens=200, concurrency=1).elapsed_s
    rate = 2.0 / alone_s
    loop = closed_loop(cost, num_requests=2, prompt_tokens=500, output_tokens=200, concurrency=2, rate_per_s=rate)
    core = EngineCore(cost)
    core.add_request(0, 500, 200)
    now_s, added, steps = 0.0, False, 0
    while core.has_work():
        result = core.step()
        now_s += result.duration_s
        steps += 1
        if not added and now_s >= 1 / rate:
            core.add_request(1, 500, 200)
            added = True
    assert loop.elapsed_s == pytest.approx(now_s, rel=1e-9)
    assert loop.num_steps == steps
    assert alone_s < loop.elapsed_s < (1 / rate + alone_s) * 1.01  # they overlapped, sharing steps


def test_concurrency_beyond_the_seqs_or_kv_limit_changes_nothing():
    for limits in ({"max_num_seqs": 4}, {"kv_capacity_tokens": 4 * 600}):
        cost = _cost(model=LLAMA, gpu="H100", num_gpus=1, **limits)
        times = [closed_loop(cost, num_requests=32, prompt_tokens=500, output_tokens=100, concurrency=c).elapsed_s
                 for c in (1, 2, 4, 8, 32)]
        assert times[0] > 1.5 * times[1] > 1.5 * 1.5 * times[2]
        # beyond 4 running, the extra requests only wait in the engine's queue
        assert times[3] == pytest.approx(times[2], rel=0.02)
        assert times[4] == pytest.approx(times[2], rel=0.02)


def test_impossible_requests_and_arguments_raise():
    cost = _cost(kv_capacity_tokens=1000)
    with pytest.raises(KvCapacityError):
        closed_loop(cost, num_requests=2, prompt_tokens=900, output_tokens=200, concurrency=1)
    with pytest.raises(ValueError, match="concurrency=0"):
        closed_loop(cost, num_requests=2, prompt_tokens=10, output_tokens=2, concurrency=0)
    with pytest.raises(ValueError, match="rate_per_s"):
        closed_loop(cost, num_requests=2, prompt_tokens=10, output_tokens=2, concurrency=1, rate_per_s=0.0)


def test_a_closed_loop_trace_gives_the_same_times_under_any_profile():
    # calibration simulates each row once, with placeholder coefficients, and then fits: every
    # latency of the trace must come out as if it had been simulated with the fitted ones
    from dataclasses import replace

    from raybench.sim.features import defaults
    from raybench.sim.profiles import load_profiles, uncalibrated
    from raybench.sim.virtual import RequestSpec, simulate

    fitted = load_profiles()["vllm/H200"]
    model = costmodel.find_model("deepseek-ai/DeepSeek-R1")
    specs = [RequestSpec(prompt_tokens=2000 + 97 * i, output_tokens=30 + 7 * (i % 4)) for i in range(40)]
    times = []
    for profile in (uncalibrated("vllm", "H200"), fitted):
        cost = costmodel.build(model, costmodel.GPUS["H200"], 8, replace(profile, reserve_gib=fitted.reserve_gib),
                               defaults("vllm"))
        times.append(simulate(cost, specs, concurrency=8).times_s(fitted.coefficients))
    for a, b in zip(*times):
        assert a == pytest.approx(b, rel=1e-9)


def test_on_step_sees_every_step_and_every_token_and_changes_no_time():
    # the observer turns off the decode fast-forward: the trace must not move, and the steps it
    # sees must add up to the trace's clock, with one emission per token of every request
    from raybench.sim.features import defaults
    from raybench.sim.profiles import load_profiles
    from raybench.sim.virtual import RequestSpec, shared_prefix_requests, simulate

    cost = costmodel.build(costmodel.find_model("deepseek-ai/DeepSeek-R1"), costmodel.GPUS["H200"], 8,
                           load_profiles()["vllm/H200"], defaults("vllm").with_(prefix_cache="block_hash"))
    specs = [RequestSpec(prompt_tokens=500 + 37 * i, output_tokens=20 + 3 * (i % 5)) for i in range(12)]
    specs += shared_prefix_requests(12, 600, 400, 25, 3)
    plain = simulate(cost, specs, concurrency=5)
    steps = []
    seen = simulate(cost, specs, concurrency=5, on_step=steps.append)
    for a, b in zip(plain.times_s(cost.coefficients), seen.times_s(cost.coefficients)):
        assert a == pytest.approx(b, rel=1e-9)
    assert plain.num_steps == seen.num_steps == len(steps)
    assert seen.cached_tokens.sum() > 0  # the shared prefixes were reused
    assert sum(cost.cost_s(s.features) for s in steps) == pytest.approx(seen.times_s(cost.coefficients)[2].max())
    tokens = {}
    for s in steps:
        for e in s.emissions:
            tokens[e.req_id] = tokens.get(e.req_id, 0) + e.new_tokens
    assert tokens == {i: spec.output_tokens for i, spec in enumerate(specs)}


def test_given_arrivals_go_in_time_order_and_an_idle_engine_gathers_a_burst():
    cost = _cost(model=LLAMA, gpu="H100", num_gpus=1)
    specs = [RequestSpec(prompt_tokens=500, output_tokens=20)] * 3
    coef = cost.coefficients
    # request 0 comes last: the trace's rows stay by request, the sends follow the clock
    trace = simulate(cost, specs, concurrency=3, arrivals_s=[5.0, 0.0, 0.001])
    sent, first, _ = trace.times_s(coef)
    assert sent.tolist() == pytest.approx([5.0, 0.0, 0.001])
    assert first[2] > first[1]  # 1 ms apart: the engine started on request 1 alone
    gathered = simulate(cost, specs, concurrency=3, arrivals_s=[5.0, 0.0, 0.001], gather_s=0.004)
    sent, first, _ = gathered.times_s(coef)
    assert sent.tolist() == pytest.approx([5.0, 0.0, 0.001]) and first[2] == pytest.approx(first[1])
    # a slot that opens later holds the request back until then, or until a slot frees (a ramp)
    ramp = simulate(cost, specs[:2], concurrency=2, arrivals_s=[0.0, 0.0], slot_opens_s=[0.0, 0.3])
    sent, _, done = ramp.times_s(coef)
    assert sent.tolist() == pytest.approx([0.0, 0.3]) and done[0] > 0.3
    ramp = simulate(cost, specs[:2], concurrency=2, arrivals_s=[0.0, 0.0], slot_opens_s=[0.0, 30.0])
    sent, _, done = ramp.times_s(coef)
    assert sent.tolist() == pytest.approx([0.0, done[0]])
    for bad in ([0.0, -1.0, 2.0], [0.0, float("nan"), 1.0], [0.0, 1.0]):
        with pytest.raises(ValueError, match="arrivals_s: expected 3 finite seconds >= 0"):
            simulate(cost, specs, concurrency=3, arrivals_s=bad)


def test_a_later_turn_waits_for_its_answer_and_a_think_time_on_its_session_s_slot():
    cost = _cost(model=LLAMA, gpu="H100", num_gpus=1)
    turn = RequestSpec(prompt_tokens=500, output_tokens=20)
    specs = [turn, RequestSpec(prompt_tokens=800, output_tokens=20, after=0), turn,
             RequestSpec(prompt_tokens=800, output_tokens=20, after=2)]
    trace = simulate(cost, specs, concurrency=1, think_s=1.5)
    sent, _, done = trace.times_s(cost.coefficients)
    assert sent[1] == pytest.approx(done[0] + 1.5)
    # due: a first turn at once (the second conversation then queues for the slot), a later
    # turn its think time after the answer before it
    assert trace.due_s(cost.coefficients).tolist() == pytest.approx([0.0, done[0] + 1.5, 0.0, done[2] + 1.5])
    assert sent[2] == pytest.approx(done[1])  # one slot: the second conversation waits for the first
    assert sent[3] == pytest.approx(done[2] + 1.5)
    for broken in ([turn, dataclasses.replace(turn, after=1)],  # itself
                   [turn, dataclasses.replace(turn, after=5)],  # no such request
                   [turn, specs[1], dataclasses.replace(turn, after=0)]):  # 0 is followed already
        with pytest.raises(ValueError, match="expected an earlier request no other one follows"):
            simulate(cost, broken, concurrency=1)


def test_a_refused_request_frees_its_slot_at_once_and_its_conversation_goes_on():
    cost = _cost(model=LLAMA, gpu="H100", num_gpus=1,
                 features=dataclasses.replace(defaults("vllm"), max_model_len=1000))
    ok, long = RequestSpec(prompt_tokens=500, output_tokens=20), RequestSpec(prompt_tokens=990, output_tokens=20)
    with pytest.raises(KvCapacityError, match="maximum context length is 1000"):
        simulate(cost, [ok, long, ok], concurrency=1)
    trace = simulate(cost, [ok, long, ok], concurrency=1, refuse=True)
    sent, first, done = trace.times_s(cost.coefficients)
    assert list(trace.refused) == [1] and "maximum context length is 1000" in trace.refused[1]
    assert sent[1] == first[1] == done[1] == pytest.approx(done[0])
    assert sent[2] == pytest.approx(done[0])  # the slot it held was free again at once
    # a refused turn: the next one follows it after the think time, on the same slot
    chat = [ok, dataclasses.replace(long, after=0), dataclasses.replace(ok, after=1), ok]
    trace = simulate(cost, chat, concurrency=1, think_s=0.5, refuse=True)
    sent, _, done = trace.times_s(cost.coefficients)
    assert list(trace.refused) == [1]
    assert sent[1] == pytest.approx(done[0] + 0.5) and sent[2] == pytest.approx(sent[1] + 0.5)
    assert sent[3] == pytest.approx(done[2])


@pytest.mark.parametrize("name", ["think_s", "gather_s"])
def test_think_and_gather_times_must_be_finite_seconds(name):
    cost = _cost(model=LLAMA, gpu="H100", num_gpus=1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"{name}=.*expected finite seconds >= 0"):
            simulate(cost, [RequestSpec(prompt_tokens=10, output_tokens=2)], concurrency=1, **{name: bad})
