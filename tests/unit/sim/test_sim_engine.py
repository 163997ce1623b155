"""The engine core: budget, chunked prefill, running cap, KV admission, k tokens per step."""

import dataclasses
import math

import pytest

from raybench.sim import costmodel
from raybench.sim.config import SimConfig
from raybench.sim.engine import EngineCore, KvCapacityError
from raybench.sim.features import Policy, defaults


def _core(k=1, **overrides) -> EngineCore:
    config = SimConfig(timing="engine", model="meta-llama/Llama-3.1-8B-Instruct", gpu="H100", num_gpus=1,
                       tokens_per_chunk=k, **overrides)
    return EngineCore(costmodel.resolve(config), k)


def _run(core: EngineCore) -> list:
    steps = []
    while (step := core.step()) is not None:
        steps.append(step)
    return steps


CHUNKED = dataclasses.replace(defaults("vllm"), chunked_prefill=True, policy=Policy.MIXED)


def test_step_budget_is_never_exceeded():
    core = _core(max_num_batched_tokens=512, max_num_seqs=64, features=CHUNKED)
    for i in range(40):
        core.add_request(i, 100 + 37 * i, 20)
    steps = _run(core)
    for step in steps:
        used = sum(c for _, c in step.prefill_chunks) + len(step.decode_req_ids)
        assert used == step.num_tokens <= 512
    assert max(s.num_tokens for s in steps) == 512  # the budget is actually used
    assert sum(e.new_tokens for s in steps for e in s.emissions) == 40 * 20


def test_long_prompt_is_prefilled_in_chunks_across_steps():
    core = _core(max_num_batched_tokens=4096, features=CHUNKED)
    core.add_request(1, 10_000, 3)
    steps = _run(core)
    assert [s.prefill_chunks for s in steps[:3]] == [((1, 4096),), ((1, 4096),), ((1, 1808),)]
    # no token before the prompt is done; the last chunk samples the first, which vLLM V0 hands
    # out with the next step (async output processing)
    assert [len(s.emissions) for s in steps[:3]] == [0, 0, 0]
    assert steps[3].emissions[0].new_tokens == 1
    # two decodes, then the finished request's extra decode run
    assert len(steps) == 6 and steps[0].duration_s > steps[-1].duration_s


def test_without_chunked_prefill_a_prompt_beyond_a_step_is_refused_or_runs_alone_as_the_engine_does():
    # vLLM V0 and TensorRT-LLM take a prompt whole or not at all
    core = _core(max_num_batched_tokens=4096)
    with pytest.raises(KvCapacityError, match="a prompt of 4097 tokens exceeds the 4096 prompt tokens one step "
                                              "takes without chunked prefill"):
        core.add_request(1, 4097, 3)
    # SGLang with --chunked-prefill-size -1: its prefill adder takes the first prompt whatever its
    # length, in a step of its own; the others wait for the next
    sglang = dataclasses.replace(defaults("sglang"), chunked_prefill=False, prefill_tokens_per_step=4096)
    core = _core(features=sglang)
    core.add_request(1, 1000, 3)
    core.add_request(2, 10_000, 3)
    core.add_request(3, 1000, 3)
    assert [s.prefill_chunks for s in _run(core) if s.prefill_chunks] == [((1, 1000),), ((2, 10_000),), ((3, 1000),)]


def test_running_requests_are_capped_and_the_rest_wait():
    core = _core(max_num_seqs=4)
    for i in range(10):
        core.add_request(i, 50, 5)
    step = core.step()
    assert core.num_running == 4 and core.num_waiting == 6
    assert {r for r, _ in step.prefill_chunks} == {0, 1, 2, 3}
    finish_order = [e.req_id for s in _run(core) for e in s.emissions if e.finished]
    assert finish_order == list(range(10))  # FIFO admission


def test_kv_capacity_queues_requests_until_space_frees():
    core = _core(kv_capacity_tokens=2500, backend_profile="trtllm")  # reserves prompt + max_tokens
    for i in range(3):
        core.add_request(i, 1000, 100)  # each reserves 1100 tokens (35 blocks of 32): only two fit at once
    core.step()
    assert (core.num_running, core.num_waiting, core.kv_used_tokens) == (2, 1, 2 * 1120)
    steps = _run(core)
    first_token_step = {e.req_id: i for i, s in enumerate(steps) for e in s.emissions if e.total_tokens == 1}
    finished_step = {e.req_id: i for i, s in enumerate(steps) for e in s.emissions if e.finished}
    assert first_token_step[2] > finished_step[0]  # admitted only after request 0 left
    assert core.kv_used_tokens == 0
    with pytest.raises(KvCapacityError, match="exceeds the KV capacity of 2500"):
        core.add_request(9, 2000, 600)


@pytest.mark.parametrize("n", [1, 4, 5, 9])
def test_k_tokens_per_step_gives_ceil_n_over_k_emissions(n):
    core = _core(k=4)
    core.add_request(1, 10, n)
    emissions = [e for s in _run(core) for e in s.emissions]
    assert len(emissions) == math.ceil(n / 4)
    assert [e.new_tokens for e in emissions] == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    assert emissions[-1].finished and emissions[-1].total_tokens == n


def test_early_target_finishes_before_max_tokens_and_abort_frees_kv():
    core = _core(backend_profile="trtllm")
    core.add_request(1, 10, 100, target_tokens=7)
    core.add_request(2, 10, 100)
    core.step()
    assert core.kv_used_tokens == 2 * 128  # prompt + max_tokens = 110, in blocks of 32
    core.abort(2)
    assert core.kv_used_tokens == 128
    emitted = sum(e.new_tokens for s in _run(core) for e in s.emissions)
    assert emitted == 6 and core.kv_used_tokens == 0 and not core.has_work()


@pytest.mark.parametrize("limits", [{}, {"kv_capacity_tokens": 2000}, {"max_num_seqs": 5}])
def test_fast_forward_gives_the_same_time_as_stepping(limits):
    def elapsed(use_fast_forward: bool) -> tuple[float, int]:
        core = _core(k=2, **limits)
        for i in range(16):
            core.add_request(i, 300, 101 + 7 * i)
        total, tokens = 0.0, 0
        while core.has_work():
            span = core.fast_forward_decode() if use_fast_forward else None
            if span is not None:
                total += span[0]
                tokens += sum(e.new_tokens for e in span[2])
                continue
            step = core.step()
            total += step.duration_s
            tokens += sum(e.new_tokens for e in step.emissions)
        return total, tokens

    slow, fast = elapsed(False), elapsed(True)
    assert fast[1] == slow[1] == sum(101 + 7 * i for i in range(16))
    assert fast[0] == pytest.approx(slow[0], rel=1e-9)


def test_fast_forward_stops_at_the_first_step_that_reaches_the_time_limit():
    def decoding_core() -> EngineCore:
        core = _core()
        for i in range(4):
            core.add_request(i, 200, 100)
        core.step()  # every prompt prefilled: pure decode from here
        core.step()  # ... and the first tokens handed out (they leave with the step after theirs)
        return core

    stepped = decoding_core()
    ends_s, now_s = [], 0.0
    for _ in range(50):
        now_s += stepped.step().duration_s
        ends_s.append(now_s)
    limit_s = (ends_s[19] + ends_s[20]) / 2  # inside step 21
    duration_s, steps, emissions, _ = decoding_core().fast_forward_decode(limit_s)
    assert steps == 21
    assert duration_s == pytest.approx(ends_s[20], rel=1e-9)
    # the tokens up to the span's last step: that step's wait for the next step
    assert {e.total_tokens for e in emissions} == {2 + 21 - 1}


def test_a_request_beyond_the_context_limit_is_refused_naming_it():
    core = _core()  # Llama-3.1-8B: 131,072 tokens of context unless the launch sets --max-model-len
    core.add_request(1, 131_000, 72)
    with pytest.raises(KvCapacityError, match=r"maximum context length is 131072 tokens, but the request takes "
                                              r"131073 \(131000 in the prompt, 73 in the completion\)"):
        core.add_request(2, 131_000, 73)
    short = _core(features=dataclasses.replace(defaults("vllm"), max_model_len=4096))
    with pytest.raises(KvCapacityError, match="maximum context length is 4096 tokens"):
        short.add_request(1, 4000, 97)
