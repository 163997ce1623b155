"""vLLM V0's async output processing: a step's tokens leave with the next step's, and a request
that has produced its last token runs once more before its KV is freed."""

import numpy as np
import pytest

from raybench.sim import costmodel
from raybench.sim.engine import EngineCore
from raybench.sim.features import defaults
from raybench.sim.profiles import load_profiles
from raybench.sim.virtual import RequestSpec, simulate

MODEL = costmodel.find_model("deepseek-ai/DeepSeek-R1")


def _cost(**changes) -> costmodel.CostModel:
    return costmodel.build(MODEL, costmodel.GPUS["H200"], 8, load_profiles()["vllm/H200"],
                           defaults("vllm").with_(**changes))


def _steps(core: EngineCore) -> list:
    out = []
    while (step := core.step()) is not None:
        out.append(step)
    return out


def test_vllm_hands_out_each_step_s_tokens_with_the_next_step():
    assert defaults("vllm").async_output and not defaults("sglang").async_output
    runs = {}
    for async_output in (False, True):
        core = EngineCore(_cost(async_output=async_output))
        core.add_request(7, 100, 3)
        runs[async_output] = _steps(core)
    sync, late = runs[False], runs[True]

    def tokens(steps):
        return [[(e.new_tokens, e.total_tokens, e.finished) for e in s.emissions] for s in steps]

    assert tokens(sync) == [[(1, 1, False)], [(1, 2, False)], [(1, 3, True)]]
    # the prefill step hands out nothing; the last token leaves with the finished request's extra step
    assert tokens(late) == [[], [(1, 1, False)], [(1, 2, False)], [(1, 3, True)]]
    assert late[-1].decode_req_ids == (7,)  # it runs once more, its token dropped
    assert [s.features for s in late[:3]] == [s.features for s in sync]


def test_a_finished_request_keeps_its_kv_until_its_extra_step_is_done():
    core = EngineCore(_cost())
    core.add_request(1, 100, 2)
    core.step()  # prefill, first token
    core.step()  # the last token
    assert core.num_running == 1 and core.kv_used_tokens > 0
    last = core.step()
    assert [e.finished for e in last.emissions] == [True]
    assert core.num_running == 0 and core.kv_used_tokens == 0 and not core.has_work()


def test_the_client_sees_the_first_token_one_step_after_its_prefill():
    spec = [RequestSpec(prompt_tokens=3200, output_tokens=50)]
    coefficients = load_profiles()["vllm/H200"].coefficients
    ttft = {}
    for async_output in (False, True):
        sent, first, _ = simulate(_cost(async_output=async_output), spec, concurrency=1).times_s(coefficients)
        ttft[async_output] = float(first[0] - sent[0])
    core = EngineCore(_cost(async_output=False))
    core.add_request(0, 3200, 50)
    prefill, decode = core.step(), core.step()
    assert ttft[False] == pytest.approx(prefill.duration_s, rel=1e-9)
    assert ttft[True] == pytest.approx(prefill.duration_s + decode.duration_s, rel=1e-9)


@pytest.mark.parametrize("policy", ["prefill_first", "mixed"])
def test_fast_forward_keeps_every_first_and_last_token_time(policy, monkeypatch):
    """A span may not swallow the step a held-back first or last token leaves with."""
    cost = _cost(policy=policy, chunked_prefill=policy == "mixed",
                 prefill_tokens_per_step=2048 if policy == "mixed" else 163840)
    specs = [RequestSpec(prompt_tokens=900 + 37 * i, output_tokens=40 + 13 * (i % 5)) for i in range(24)]
    fast = simulate(cost, specs, concurrency=6)
    monkeypatch.setattr(EngineCore, "fast_forward_decode", lambda self, max_duration_s=None, emissions=True: None)
    slow = simulate(cost, specs, concurrency=6)
    assert fast.num_steps == slow.num_steps
    for a, b in ((fast.first, slow.first), (fast.done, slow.done), (fast.sent, slow.sent)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_fast_forward_hands_out_every_token_once_under_async_output(summed_features):
    core = EngineCore(_cost())
    for i in range(4):
        core.add_request(i, 500 + 50 * i, 60)
    received = {}
    while core.has_work():
        span = core.fast_forward_decode()
        for e in (span.emissions if span is not None else core.step().emissions):
            assert e.total_tokens == received.get(e.req_id, 0) + e.new_tokens  # in order, none twice
            received[e.req_id] = e.total_tokens
    assert received == {i: 60 for i in range(4)}


def test_a_client_that_leaves_during_the_extra_step_frees_the_request_once():
    core = EngineCore(_cost())
    core.add_request(1, 100, 1)
    core.add_request(2, 100, 5)
    core.step()  # both prefilled; request 1 is done, its client hears of it a step later
    core.abort(1)
    steps = _steps(core)
    assert core.kv_used_tokens == 0 and not core.has_work()
    assert [e.req_id for s in steps for e in s.emissions if e.finished] == [2]


@pytest.mark.parametrize("async_output", [True, False])
def test_a_span_without_its_emissions_leaves_the_engine_as_one_with_them(async_output):
    def run(emissions: bool) -> tuple[list, list, tuple]:
        core = EngineCore(_cost(async_output=async_output), 2)
        for i in range(12):
            core.add_request(i, 300 + 11 * i, 61 + 7 * i)
        spans, steps = [], []
        while core.has_work():
            span = core.fast_forward_decode(emissions=emissions)
            if span is not None:
                spans.append(span)
                continue
            step = core.step()
            steps.append((step.duration_s, step.emissions))
        return spans, steps, (core.kv_used_tokens, core.eager_steps, core.kv_limited)

    with_them, without = run(True), run(False)
    assert len(with_them[0]) == len(without[0]) > 3
    for a, b in zip(with_them[0], without[0]):
        assert (a.duration_s, a.steps, a.features) == (b.duration_s, b.steps, b.features)
        assert a.emissions and b.emissions == ()
    # what the steps after a span hand out (under async_output, the span's last tokens too) is unchanged
    assert with_them[1] == without[1]
    assert with_them[2] == without[2]
