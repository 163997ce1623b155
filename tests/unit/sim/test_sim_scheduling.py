"""Engine features in the core: prefill waves vs mixed steps, preemption, prefix caches, DP attention."""

import dataclasses

import pytest

from raybench.sim import costmodel
from raybench.sim.config import SimConfig
from raybench.sim.engine import EngineCore, KvCapacityError
from raybench.sim.features import Policy, Preemption, PrefixCache, defaults


def _core(engine="vllm", kv=None, gpu="H200", reread_cost=None, **features) -> EngineCore:
    """``reread_cost``: the GPU's kv_reread_cost replaced by this one."""
    f = defaults(engine).with_(**features)
    cost = costmodel.resolve(SimConfig(timing="engine", backend_profile=engine, gpu=gpu, features=f,
                                       kv_capacity_tokens=kv))
    if reread_cost is not None:
        cost = dataclasses.replace(cost, gpu=dataclasses.replace(cost.gpu, kv_reread_cost=reread_cost))
    return EngineCore(cost)


def _drain(core: EngineCore) -> list:
    steps = []
    while core.has_work():
        step = core.step()
        assert step is not None
        steps.append(step)
    return steps


def test_prefill_first_pauses_decoding_while_mixed_shares_the_step():
    for policy, expect_mixed in ((Policy.PREFILL_FIRST, False), (Policy.MIXED, True)):
        core = _core(policy=policy, chunked_prefill=True, prefill_tokens_per_step=2048)
        core.add_request(0, 100, 50)
        core.step()  # request 0 prefilled, decoding from here
        core.add_request(1, 4000, 10)
        step = core.step()
        assert bool(step.decode_req_ids) is expect_mixed
        assert step.prefill_chunks[0][0] == 1


def test_without_chunked_prefill_a_prompt_waits_for_a_step_it_fits_whole():
    core = _core(policy=Policy.MIXED, chunked_prefill=False, prefill_tokens_per_step=5000)
    core.add_request(0, 3000, 5)
    core.add_request(1, 3000, 5)
    first = core.step()
    assert first.prefill_chunks == ((0, 3000),)  # 1 would only partly fit: it waits whole
    assert core.step().prefill_chunks == ((1, 3000),)


def test_vllm_preempts_the_newest_request_and_recomputes_it():
    core = _core(kv=2 * 1024 + 400, preemption=Preemption.RECOMPUTE)
    for i in range(2):
        core.add_request(i, 1000, 400)
    steps = _drain(core)
    preempted = [r for s in steps for r in s.preempted]
    assert preempted and preempted[0] == 1  # the newest gives its KV back
    recompute = [c for s in steps for r, c in s.prefill_chunks if r == 1]
    assert len(recompute) == 2 and recompute[1] > 1000  # prompt + the tokens it had already made
    emitted = {}
    for s in steps:
        for e in s.emissions:
            emitted[e.req_id] = emitted.get(e.req_id, 0) + e.new_tokens
    assert emitted == {0: 400, 1: 400} and core.kv_used_tokens == 0


def test_sglang_retracts_the_request_with_the_fewest_output_tokens():
    core = _core("sglang", kv=3 * 1000 + 500, admission_output_reserve=0.0)
    for i in range(3):
        core.add_request(i, 1000, 300 - 50 * i)
    steps = _drain(core)
    retracted = [r for s in steps for r in s.preempted]
    assert retracted and core.num_preemptions >= 1
    assert sum(e.new_tokens for s in steps for e in s.emissions) == 300 + 250 + 200


def test_sglang_admission_keeps_room_for_the_running_outputs():
    loose = _core("sglang", kv=6000, admission_output_reserve=0.0)
    strict = _core("sglang", kv=6000, admission_output_reserve=1.0)
    for core in (loose, strict):
        for i in range(4):
            core.add_request(i, 1000, 1000)
        core.step()
    assert loose.num_running == 4 and strict.num_running == 3  # 3 x (1000 + 1000) fill 6000


@pytest.mark.parametrize("mode, hit", [(PrefixCache.RADIX, 2000), (PrefixCache.BLOCK_HASH, 1984)])
def test_a_shared_prefix_is_computed_once_and_reported_as_cached(mode, hit):
    core = _core("sglang", prefix_cache=mode, block_tokens=1 if mode is PrefixCache.RADIX else 64)
    segments = lambda i: ((("prefix", 0), 2000), (("question", i), 1200))  # noqa: E731
    core.add_request(0, 3200, 4, segments=segments(0))
    steps = _drain(core)
    core.add_request(1, 3200, 4, segments=segments(1))
    second = _drain(core)
    assert sum(c for s in second for _, c in s.prefill_chunks) == 3200 - hit
    assert second[0].emissions[0].cached_tokens == hit if second[0].emissions else True
    assert [e.cached_tokens for s in steps for e in s.emissions] == [0] * len([e for s in steps for e in s.emissions])
    assert (core.prefix_query_tokens, core.prefix_hit_tokens) == (6400, hit)


@pytest.mark.parametrize("mode, block, hit, whole", [(PrefixCache.BLOCK_HASH, 64, 1984, 2944),
                                                     (PrefixCache.RADIX, 1, 2000, 3000)])
def test_a_prefix_longer_than_a_step_is_reused_as_far_as_it_is_computed(mode, block, hit, whole):
    core = _core(policy=Policy.MIXED, chunked_prefill=True, prefill_tokens_per_step=2000,
                 prefix_cache=mode, block_tokens=block)
    prompt = lambda q: ((("prefix", 0), 3000), (("question", q), 200))  # noqa: E731
    core.add_request(0, 3200, 4, segments=prompt(0))
    assert core.step().prefill_chunks == ((0, 2000),)  # two thirds of the prefix
    core.add_request(1, 3200, 4, segments=prompt(1))  # admitted with the rest of it still to compute
    core.step()
    firsts = {e.req_id: e.cached_tokens for s in _drain(core) for e in s.emissions if e.total_tokens == e.new_tokens}
    assert firsts[1] == hit  # what request 0 had computed of the prefix, in whole blocks for a block hash
    assert core.prefix_hit_tokens == hit
    core.add_request(2, 3200, 4, segments=prompt(2))  # after both: the prefix whole, grown as it went on
    assert {e.req_id: e.cached_tokens for s in _drain(core) for e in s.emissions}[2] == whole
    # the pool holds the cache alone once every request is done: each prefix token counted once
    assert core.kv_used_tokens == core.prefix_cache.tokens == 3000 + 3 * 200


@pytest.mark.parametrize("mode, block, hits", [(PrefixCache.BLOCK_HASH, 16, [0, 688, 1008]),
                                               (PrefixCache.RADIX, 1, [0, 700, 1023])])
def test_a_segment_a_shorter_prompt_cached_in_part_grows_with_the_longer_prompt_that_hits_it(mode, block, hits):
    # a trace's last block cut short (700 tokens of blocks [0, 1]) and then the same blocks whole:
    # the second prompt computes the rest of block 1 and the third finds all of it, as the
    # server finds it in the ids
    core = _core("sglang", prefix_cache=mode, block_tokens=block)
    for i, length in enumerate((700, 1024, 1024)):
        core.add_request(i, length, 4, segments=((("b0",), 512), (("b0", "b1"), length - 512)))
        firsts = [e.cached_tokens for s in _drain(core) for e in s.emissions if e.total_tokens == e.new_tokens]
        assert firsts == [hits[i]]
    assert core.prefix_cache.tokens == 1024 and core.kv_used_tokens == 1024  # block 1 counted once


def test_a_block_hash_hit_pins_the_prefix_it_reads_so_a_full_pool_evicts_something_else():
    core = _core(kv=7000, policy=Policy.MIXED, chunked_prefill=True, prefill_tokens_per_step=2048,
                 prefix_cache=PrefixCache.BLOCK_HASH, block_tokens=64)

    def group(g, q):
        return (("prefix", g), 2000), (("question", q), 1200)

    core.add_request(0, 3200, 4, segments=group(0, 0))
    _drain(core)  # group 0's prefix and question 0 stay cached, unused
    core.add_request(1, 3200, 400, segments=group(0, 1))  # hits 1984 of the prefix: whole 64-token blocks
    for _ in range(3):
        core.step()
    core.add_request(2, 3200, 4, segments=group(1, 2))  # needs room: an unused segment must go
    while core.num_waiting:
        core.step()
    core.add_request(3, 3200, 4, segments=group(0, 3))
    firsts = {e.req_id: e.cached_tokens for s in _drain(core) for e in s.emissions if e.total_tokens == e.new_tokens}
    assert firsts[2] == 0 and firsts[3] == 1984  # request 1 still reads the prefix: question 0 was evicted


def test_a_request_that_does_not_fit_yet_waits_without_evicting_the_cache():
    core = _core(kv=7000, policy=Policy.MIXED, chunked_prefill=True, prefill_tokens_per_step=4096,
                 prefix_cache=PrefixCache.BLOCK_HASH, block_tokens=16)
    system = (("system", 0), 1000)
    core.add_request(0, 1000, 4, segments=(system,))
    _drain(core)  # the system prompt stays cached, unused
    core.add_request(1, 3000, 400)
    core.step()
    # 4000 + the watermark exceed the free KV and the cache together: it waits, and evicting the
    # cache would not have let it in
    core.add_request(2, 4000, 4)
    for _ in range(5):
        core.step()
    assert core.num_waiting == 1 and core.prefix_cache.tokens == 1000
    core.add_request(3, 1200, 4, segments=(system, (("question", 3), 200)))
    firsts = {e.req_id: e.cached_tokens for s in _drain(core) for e in s.emissions if e.total_tokens == e.new_tokens}
    assert firsts == {2: 0, 3: 992}  # once 1 is done, 2 fits beside the cache, and 3 finds it


def test_fast_forward_grows_kv_by_whole_blocks_after_a_prompt_went_into_the_cache():
    """A prompt that moved into the prefix cache leaves its request a charge of part of a block;
    a decode span must grow it as a step does, or the span overfills the pool and skips a preemption."""
    def run(fast: bool) -> tuple:
        core = _core(kv=908, prefix_cache=PrefixCache.BLOCK_HASH, block_tokens=64, async_output=False,
                     prefill_tokens_per_step=4096)
        core.add_request(0, 600, 150)
        core.add_request(1, 100, 80, segments=((("doc", 0), 100),))
        total_s, peak, preempted = 0.0, 0, 0
        while core.has_work():
            span = core.fast_forward_decode() if fast else None
            if span is None:
                step = core.step()
                total_s, preempted = total_s + step.duration_s, preempted + len(step.preempted)
            else:
                total_s += span.duration_s
            peak = max(peak, core.kv_used_tokens)
        return peak, preempted, total_s
    stepped, fast = run(False), run(True)
    assert stepped[0] <= 908 and stepped[1] == 1
    assert fast[:2] == stepped[:2] and fast[2] == pytest.approx(stepped[2], rel=1e-9)


@pytest.mark.parametrize("preemption", [Preemption.NONE, Preemption.RECOMPUTE])
def test_every_request_a_caching_engine_accepts_runs_to_its_end(preemption):
    def core(kv: int, block: int) -> EngineCore:
        return _core(kv=kv, prefix_cache=PrefixCache.BLOCK_HASH, block_tokens=block, async_output=False,
                     prefill_tokens_per_step=4096, preemption=preemption)
    doc = lambda n: ((("doc", n), n),)  # noqa: E731
    # a cached prompt is held to the token and the outputs take blocks of their own after it:
    # 499 + two 64-token blocks would not fit 600, and the request is refused, not left to stall
    with pytest.raises(KvCapacityError, match="a prompt held in the prefix cache"):
        core(600, 64).add_request(0, 499, 67, segments=doc(499))
    lone = core(600, 64)
    lone.add_request(0, 499, 40, segments=doc(499))
    _drain(lone)
    # the second prompt's hit pins the first one's cached segment, and beside it there is no room:
    # alone on the idle engine it goes in as a miss
    pair = core(427, 16)
    pair.add_request(0, 400, 10, segments=doc(400))
    pair.add_request(1, 400, 13, segments=doc(400))
    done = {e.req_id for s in _drain(pair) for e in s.emissions if e.finished}
    assert done == {0, 1}


def test_evicting_a_cached_prompt_marks_the_run_as_shaped_by_the_kv_pool():
    for kv, evicts in ((5000, True), (100_000, False)):
        core = _core(kv=kv, prefix_cache=PrefixCache.BLOCK_HASH)
        for i in range(2):  # nothing shared: the second prompt needs the room the first one's cache holds
            core.add_request(i, 3200, 4, segments=((("prefix", i), 2000), (("question", i), 1200)))
            _drain(core)
        assert ("kv_limited" in core.regimes()) is evicts
        assert core.prefix_hit_tokens == 0


def test_dp_attention_ranks_have_their_own_prompt_budget_and_prefix_cache():
    core = _core("sglang", dp_attention=8, prefill_tokens_per_step=8192)
    core.add_request(0, 3200, 2)
    chunks = [c for s in _drain(core) for _, c in s.prefill_chunks]
    assert chunks == [1024, 1024, 1024, 128]  # 8192 / 8 per rank: one request spans four steps
    seg = ((("prefix", 0), 2000), (("question", 1), 1200))
    core.add_request(1, 3200, 2, segments=seg)  # rank 1
    _drain(core)
    core.add_request(2, 3200, 2, segments=seg)  # rank 2: its own, empty radix cache
    _drain(core)
    assert core.prefix_hit_tokens == 0


def test_a_run_reports_the_regimes_of_the_model_it_went_through():
    plain = _core(policy=Policy.PREFILL_FIRST, chunked_prefill=False, prefill_tokens_per_step=8192)
    for i in range(2):
        plain.add_request(i, 1000, 20)
    _drain(plain)
    assert plain.regimes() == frozenset()  # prefill waves and decodes only

    mixed = _core(policy=Policy.MIXED, chunked_prefill=True, prefill_tokens_per_step=2048)
    mixed.add_request(0, 100, 50)
    mixed.step()
    mixed.add_request(1, 4000, 10)
    _drain(mixed)
    assert mixed.regimes() == {"mixed_steps"}

    cached = _core("sglang", prefix_cache=PrefixCache.RADIX, block_tokens=1)
    for i in range(2):
        cached.add_request(i, 3200, 4, segments=((("prefix", 0), 2000), (("question", i), 1200)))
        _drain(cached)
    assert cached.regimes() == {"prefix_hits"}

    tight = _core(kv=2 * 1024 + 400, preemption=Preemption.RECOMPUTE)
    for i in range(2):
        tight.add_request(i, 1000, 400)
    _drain(tight)
    assert tight.regimes() == {"preemption", "kv_limited"}


def _shared_prefix_core(gpu="H200", reread_cost=None) -> EngineCore:
    """vLLM's block-hash cache in 64-token blocks; the client gets each step's own tokens."""
    return _core(gpu=gpu, reread_cost=reread_cost, prefix_cache=PrefixCache.BLOCK_HASH, block_tokens=64,
                 async_output=False)


def _prompt(question: int) -> tuple:
    return (("prefix", 0), 2000), (("question", question), 1200)


@pytest.mark.parametrize("gpu, reread_cost", [("H200", 0.75), ("MI300X", 1.0)])
def test_a_decode_step_pays_a_reduced_price_for_the_prefix_kv_its_requests_share(gpu, reread_cost):
    core = _shared_prefix_core(gpu)
    assert core.cost.gpu.kv_reread_cost == reread_cost  # measured on H200; a GPU without a measurement: none
    core.add_request(0, 3200, 40, segments=_prompt(0))
    core.step()  # request 0 computes the prefix and caches it
    for q in (1, 2):
        core.add_request(q, 3200, 40, segments=_prompt(q))
    while not (step := core.step()).decode_req_ids or step.prefill_chunks:
        pass
    assert sorted(step.decode_req_ids) == [0, 1, 2]
    contexts = sum(3200 + e.total_tokens - e.new_tokens for e in step.emissions)
    # request 0 reads the 2000 prefix tokens it cached, 1 and 2 the 1984 their block-hash hits covered:
    # one of the reads brings the prefix in, the other two re-read 2 x 1984 tokens
    kv_tokens = contexts - (1 - reread_cost) * 2 * 1984
    cost = core.cost
    assert step.features[4] == pytest.approx(kv_tokens * cost.kv_bytes_per_token_per_rank
                                             / cost.gpu.bandwidth_bytes_per_s, rel=1e-12)


def test_fast_forward_gives_the_same_time_as_stepping_when_requests_share_a_prefix():
    def elapsed(use_fast_forward: bool, reread_cost: float) -> tuple[float, int]:
        core = _shared_prefix_core(reread_cost=reread_cost)
        core.add_request(0, 3200, 60, segments=_prompt(0))
        total, tokens = core.step().duration_s, 0  # the prefix computed once; the others reuse it
        for q in range(1, 6):
            core.add_request(q, 3200, 60 + 10 * q, segments=_prompt(q % 4))
        while core.has_work():
            span = core.fast_forward_decode() if use_fast_forward else None
            result = span if span is not None else core.step()
            total += result.duration_s
            tokens += sum(e.new_tokens for e in result.emissions)
        return total, tokens

    shared, full = elapsed(True, 0.75), elapsed(True, 1.0)
    assert shared == pytest.approx(elapsed(False, 0.75), rel=1e-9)
    assert shared[1] == full[1] and shared[0] < full[0]


def test_under_dp_attention_only_requests_of_one_rank_share_their_reads():
    def decode_kv(members: set[int], reread_cost: float) -> float:
        core = _core("sglang", reread_cost=reread_cost, dp_attention=8, prefill_tokens_per_step=8192)
        n = max(members) + 1
        for i in range(n):  # DP ranks take requests round robin: i on rank i % 8
            core.add_request(i, 3200, 30, segments=_prompt(i) if i in members else ())
        while len((step := core.step()).decode_req_ids) < n or step.prefill_chunks:
            pass
        return step.features[4]

    assert decode_kv({0, 1}, 0.75) == decode_kv({0, 1}, 1.0)  # ranks 0 and 1: each reads its own copy
    assert decode_kv({0, 8}, 0.75) < decode_kv({0, 8}, 1.0)  # both on rank 0, the busiest


@pytest.mark.parametrize(("engine", "kv", "prompt", "out"), [
    ("vllm", 1000, 990, 10),  # fits the pool, not with vLLM's 1 % free margin on top
    ("vllm", 120, 100, 20),  # fits, but a preemption at its 13th token re-admits 113 tokens: 128 in blocks of 16
    ("trtllm", 120, 100, 20),  # blocks of 32: 128 tokens
    ("vllm", 2, 1, 1),  # one block of 16
])
def test_a_request_the_pool_could_never_admit_is_refused_at_once(engine, kv, prompt, out):
    core = _core(engine, kv=kv)
    with pytest.raises(KvCapacityError, match=f"exceeds the KV capacity of {kv} tokens"):
        core.add_request(0, prompt, out)
    assert not core.has_work()


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_every_request_the_pool_accepts_runs_to_its_end_even_preempted(engine):
    """The smallest pool that accepts a request admits it, and re-admits it after any preemption."""
    for prompt, out in ((100, 20), (990, 10), (47, 200), (1, 1)):
        kv = next(kv for kv in range(prompt + out, 4 * (prompt + out) + 200) if _accepts(engine, kv, prompt, out))
        core = _core(engine, kv=kv)
        for i in range(3):  # three at once: they preempt one another
            core.add_request(i, prompt, out)
        tokens = sum(e.new_tokens for s in _drain(core) for e in s.emissions)
        assert tokens == 3 * out and core.kv_used_tokens <= kv


def _accepts(engine, kv, prompt, out) -> bool:
    try:
        _core(engine, kv=kv).add_request(0, prompt, out)
    except KvCapacityError:
        return False
    return True


def test_a_prefix_hit_is_pinned_before_its_admission_makes_room():
    """The segment a request hits cannot be what its own admission evicts: it is reported as cached
    and kept, and the pool never holds more than its capacity."""
    core = _core("sglang", kv=200)  # admission keeps room for a tenth of the output too
    core.add_request(0, 120, 5, segments=(("prefix", 100), ("question a", 20)))
    _drain(core)  # both segments stay cached, unused; the prefix is the least recently used
    core.add_request(1, 180, 5, segments=(("prefix", 100), ("question b", 80)))  # 80 + 1 > 80 free: one must go
    steps = _drain(core)
    assert steps[0].prefill_chunks == ((1, 80),)
    assert [e.cached_tokens for e in steps[-1].emissions] == [100]
    assert core.prefix_cache.lookup(0, (("prefix", 100), ("question a", 20)), 120) == 100  # question a went
    assert core.prefix_cache.tokens == core.kv_used_tokens <= 200


@pytest.mark.parametrize("engine", ["generic", "vllm"])
def test_mixed_steps_admit_prompts_only_into_kv_the_decodes_leave(engine):
    core = _core(engine, kv=800, policy=Policy.MIXED, chunked_prefill=True, prefill_tokens_per_step=2048)
    for i in range(40):
        core.add_request(i, 48, 40)
    most = 0
    while core.has_work():
        assert core.step() is not None
        most = max(most, core.kv_used_tokens)
    assert most <= 800


def test_eviction_takes_the_least_recently_used_segment_of_any_rank():
    core = _core("sglang", kv=700, dp_attention=2, admission_output_reserve=0.0)

    def serve(req_id, key):
        core.add_request(req_id, 300, 1, segments=((key, 300),))
        _drain(core)

    serve(0, "a")  # rank 0
    serve(1, "b")  # rank 1
    serve(2, "a")  # rank 0: hits a, so b is now the least recently used
    serve(3, "c")  # rank 1: needs room
    assert core.prefix_cache.lookup(0, (("a", 300),), 301) == 300
    assert core.prefix_cache.lookup(1, (("b", 300),), 301) == 0


def test_without_preemption_admission_reserves_the_whole_output():
    for engine in ("vllm", "sglang"):
        core = _core(engine, kv=2000, preemption=Preemption.NONE)
        for i in range(8):
            core.add_request(i, 100, 300)
        _drain(core)
        assert core.num_preemptions == 0
