"""The engine core: continuous batching under one engine's scheduling and memory features.

It knows nothing about clocks. ``step()`` decides one engine iteration, applies it and returns
its feature vector and cost (costmodel.CostModel) and which requests produced tokens; the caller
decides what time means: the server sleeps ``duration_s`` before delivering the tokens, the
virtual-time paths add it to a clock, calibration keeps the feature vectors. So the same
scheduling runs in real time, in virtual time and under the fit.

Per step, by ``EngineFeatures.policy``:
- PREFILL_FIRST (SGLang, vLLM V0): partly prefilled requests take their next chunk, then waiting
  requests are admitted in FIFO order while the step's prompt budget, max_running and the KV
  allow; if that gave the step any prompt work, decoding pauses for it (a prefill wave);
  otherwise every running request decodes k tokens.
- MIXED (vLLM chunked prefill, TensorRT-LLM): every running request decodes first, the rest of
  the budget goes to prompt chunks and then to admissions.
Without chunked prefill a prompt must fit the rest of a step's budget whole; one longer than the
whole budget runs alone in a step where the engine allows it (SGLang), and is refused elsewhere.

KV: admission charges the prompt tokens not found in the prefix cache plus
``admission_output_reserve`` x max_tokens (all of it without preemption); decoding grows a
request past its charge token by token, and under MIXED the decodes' new blocks are set aside
before any prompt is admitted. ``add_request`` refuses a request the pool could never admit
with the same arithmetic, a re-admission after a preemption included, so every accepted one runs. When a decode step cannot grow, requests are preempted (vLLM: the newest; SGLang retract:
the one with the fewest output tokens), give their KV back, and queue first to prefill
prompt + output so far again. The prefix cache holds prompt segments per DP rank (a radix cache
hits any matching prefix, a block-hash cache whole blocks only); a cached segment lives in the
KV pool once, pinned while a running request uses it, evicted least recently used when the pool
needs room. Requests of a rank that read one cached segment in the same decode step pay
``GpuProfile.kv_reread_cost`` of a first read for all but one of those reads (L2 still holds it).

With ``async_output`` (vLLM V0) a step's tokens leave with the NEXT step's result: the engine
processes one step's outputs while the next one runs, so every token, the first and the last
included, reaches the client a step late, and a request that has produced its last token takes
part in one more decode step (its token dropped) before its KV is freed.

``regimes()`` says which parts of the model a run exercised (features.REGIMES): a profile records
the ones its fit saw, and a prediction that needs another is marked as extrapolated.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from raybench.sim.costmodel import CostModel
from raybench.sim.fastforward import Emission, FastForward
from raybench.sim.features import Policy, Preemption
from raybench.sim.prefixcache import PrefixStore


@dataclass(slots=True)
class _Request:
    req_id: int
    prompt_tokens: int
    target_tokens: int  # output tokens it will produce (<= max_tokens; EOS may come first)
    max_tokens: int
    segments: tuple  # ((key, tokens), ...): the prompt's content, for the prefix cache
    rank: int  # DP-attention rank that holds it
    order: int = 0  # admission counter, for newest-first preemption
    prefill_target: int = 0  # prompt, or prompt + output so far after a preemption
    prefilled: int = 0
    generated: int = 0
    cached_tokens: int = -1  # prompt tokens served from the prefix cache at first admission
    private_kv: int = 0  # KV tokens held by this request alone
    charge: int = 0  # KV tokens counted against the pool for it (>= private_kv)
    pinned: list = field(default_factory=list)  # cache keys it pins
    segs_cached: int = 0  # leading segments now in the cache (hit or inserted)
    growing: object = None  # key of the segment it has cached in part and extends as its prefill goes on
    growing_tokens: int = 0  # ... and how much of it is cached
    hit: int = 0  # prompt tokens the cache served at its last admission ...
    hit_segments: int = 0  # ... from this many leading segments, the last perhaps in part
    shared_reads: tuple | None = None  # ((key, tokens), ...) a decode step reads from the cache
    lingering: bool = False  # finished, in its one extra decode step before its KV is freed (async_output)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One engine iteration: what ran, what it cost, what came out."""

    duration_s: float
    prefill_chunks: tuple[tuple[int, int], ...]  # (req_id, prompt tokens processed)
    decode_req_ids: tuple[int, ...]
    num_tokens: int
    emissions: tuple[Emission, ...]
    features: tuple[float, ...]  # costmodel.FEATURES of this step
    preempted: tuple[int, ...] = ()


class KvCapacityError(ValueError):
    """A request whose prompt + max_tokens can never fit the KV capacity."""


#: decode steps SGLang's retract leaves room for (global_config.retract_decode_steps)
RETRACT_STEPS = 20


class EngineCore(FastForward):
    """Continuous-batching scheduler over a CostModel; see the module docstring for the policy."""

    def __init__(self, cost: CostModel, tokens_per_chunk: int = 1, prefix_cache: PrefixStore | None = None) -> None:
        """``prefix_cache``: what an earlier core of the same server left cached (``prefix_cache``
        of a core with no work left), so a server's cells run one after another as on one server."""
        self.cost = cost
        self.features = cost.features
        self.tokens_per_chunk = tokens_per_chunk
        self._waiting: deque[_Request] = deque()
        self._running: dict[int, _Request] = {}
        if prefix_cache is None:
            prefix_cache = PrefixStore(self.features.prefix_cache, self.features.block_tokens, self.features.dp_attention)
        elif prefix_cache.evictable() < prefix_cache.tokens or prefix_cache.tokens > cost.kv_capacity_tokens:
            raise ValueError("prefix_cache: pass the cache of a core with no work left and the same KV pool")
        self._cache = prefix_cache
        # requests can share cached KV, and this GPU reads it again for less than the first time
        self._rereads_cheaper = prefix_cache.enabled and cost.gpu.kv_reread_cost < 1.0
        self._kv_used = prefix_cache.tokens  # charges of running requests + cached segments
        self._reserved = 0  # free KV this step's decodes will take (MIXED: scheduled before prompts)
        self._decode_growth = 0  # ... as _decodes last counted it, after any preemption
        self._admitted = 0
        self._remaining_out = 0  # output tokens running requests have still to produce
        self._arrivals = 0
        self.prefix_query_tokens = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hit_tokens = 0  # ... and found there
        self.num_preemptions = 0
        self.mixed_steps = 0  # steps with prompt chunks and decodes together
        self.eager_steps = 0  # decode steps that ran without their CUDA graph
        self.kv_limited = False  # the KV capacity ever held something back or evicted a cached prompt
        watermark = 0.01 if self.features.preemption is Preemption.RECOMPUTE else 0.0
        self._watermark = int(watermark * cost.kv_capacity_tokens)
        self._held: tuple[Emission, ...] | None = () if self.features.async_output else None  # last step's tokens
        self._held_events = False  # they include a first or a last token
        self._lingering: list[_Request] = []  # finished at the last step, in their extra step now

    # -- queue ---------------------------------------------------------------------------------
    def add_request(self, req_id: int, prompt_tokens: int, max_tokens: int, target_tokens: int | None = None,
                    segments: tuple = ()) -> None:
        """Queue a request; raises KvCapacityError if it could never be admitted.

        ``segments``: the prompt as ((key, tokens), ...) runs whose keys identify their content
        and everything before it (a shared prefix, chained block hashes); empty: never cached.
        """
        target = max_tokens if target_tokens is None else target_tokens
        if prompt_tokens < 1 or not 1 <= target <= max_tokens:
            raise ValueError(f"bad request {req_id}: prompt {prompt_tokens}, target {target}/{max_tokens}")
        total = prompt_tokens + max_tokens
        # the server's context limit comes first, as its front end refuses before the engine sees it
        limit = self.features.max_model_len or self.cost.model.max_model_len
        if total > limit:
            raise KvCapacityError(
                f"this model's maximum context length is {limit} tokens, but the request takes {total} "
                f"({prompt_tokens} in the prompt, {max_tokens} in the completion): shorten the prompt or max_tokens")
        whole = self.features.prefill_tokens_per_step // self.features.dp_attention
        if not self.features.chunked_prefill and prompt_tokens > whole and not self.features.oversized_prompt_alone:
            raise KvCapacityError(
                f"a prompt of {prompt_tokens} tokens exceeds the {whole} prompt tokens one step takes without chunked "
                "prefill: shorten it, or launch with chunked prefill or a larger budget (--max-num-batched-tokens, "
                "--max-num-tokens)")
        capacity = self.cost.kv_capacity_tokens
        if total > capacity:
            raise KvCapacityError(f"prompt_tokens + max_tokens = {total} exceeds the KV capacity of {capacity} tokens")
        need = self._largest_need(prompt_tokens, max_tokens)
        if need > capacity:
            raise KvCapacityError(
                f"prompt_tokens + max_tokens = {total} takes up to {need} KV tokens (whole "
                f"{self.features.block_tokens}-token blocks, the admission's reserve and free margin, "
                "a prompt held in the prefix cache, a re-admission after a preemption), which exceeds the KV "
                f"capacity of {capacity} tokens")
        rank = self._arrivals % self.features.dp_attention  # DP attention: round robin over ranks
        self._arrivals += 1
        self._waiting.append(_Request(req_id, prompt_tokens, target, max_tokens, tuple(segments), rank,
                                      prefill_target=prompt_tokens))

    def abort(self, req_id: int) -> None:
        """Forget a request (client went away); frees its KV. Unknown ids are ignored."""
        if self._held:
            self._held = tuple(e for e in self._held if e.req_id != req_id)
        req = self._running.pop(req_id, None)
        if req is not None:
            if req.lingering:
                self._lingering.remove(req)
            self._release(req)
            return
        for queued in self._waiting:
            if queued.req_id == req_id:
                self._waiting.remove(queued)
                return

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_used_tokens(self) -> int:
        return self._kv_used

    def has_work(self) -> bool:
        return bool(self._running or self._waiting)

    @property
    def prefix_cache(self) -> PrefixStore:
        return self._cache

    def reset_prefix_cache(self) -> int:
        """Drop every cached segment no running request uses (vLLM's /reset_prefix_cache, SGLang's
        /flush_cache); returns the KV tokens freed."""
        unused = self._cache.evictable()
        freed = self._cache.evict(unused) if unused else 0
        self._kv_used -= freed
        return freed

    def start_run(self) -> None:
        """Count ``regimes()`` and the prefix-cache hits from here: a new cell on the same server."""
        self.prefix_query_tokens = self.prefix_hit_tokens = 0
        self.num_preemptions = self.mixed_steps = self.eager_steps = 0
        self.kv_limited = False
        if self._held is not None:  # a token still held back belongs to the run that ended
            self._held, self._held_events = (), False

    def regimes(self) -> frozenset[str]:
        """The features.REGIMES this core's steps so far went through."""
        seen = {"mixed_steps": self.mixed_steps, "prefix_hits": self.prefix_hit_tokens,
                "preemption": self.num_preemptions, "eager_decode": self.eager_steps, "kv_limited": self.kv_limited}
        return frozenset(name for name, count in seen.items() if count)

    # -- one step ------------------------------------------------------------------------------
    def step(self) -> StepResult | None:
        """Schedule, cost and apply one iteration; None when nothing can run."""
        budget = self.features.prefill_tokens_per_step
        preempted: list[int] = []
        decode: list[tuple[_Request, int]] = []
        # finished last step: this step runs them once more if it decodes, and frees their KV after it
        finishing, self._lingering = self._lingering, []
        if self.features.policy is Policy.MIXED:
            decode = self._decodes(preempted)
            budget -= sum(n for _, n in decode)
            # the decodes' new blocks are theirs before any prompt is admitted into the free KV
            self._reserved = self._decode_growth
        prefill = self._prefills(max(budget, 0))
        self._reserved = 0
        if self.features.policy is Policy.PREFILL_FIRST and not prefill:
            decode = self._decodes(preempted)
        if not prefill and not decode:
            return None
        return self._apply(prefill, decode, preempted, finishing)

    def _prefills(self, budget: int) -> list[tuple[_Request, int]]:
        """Prompt work of one step. Under DP attention every rank has budget / dp of its own
        (SGLang divides chunked_prefill_size by dp_size) and its own queue of requests."""
        chunked = self.features.chunked_prefill
        dp = self.features.dp_attention
        whole = self.features.prefill_tokens_per_step // dp
        budgets = [budget // dp] * dp
        out: list[tuple[_Request, int]] = []
        for req in self._running.values():
            left = req.prefill_target - req.prefilled
            if left <= 0 or budgets[req.rank] <= 0:
                continue
            chunk = min(left, budgets[req.rank])
            if chunk < left and not chunked:
                if left <= whole or budgets[req.rank] < whole:
                    continue  # a whole prompt or nothing
                chunk = left  # longer than a whole step (re-admitted after a preemption): alone
            out.append((req, chunk))
            budgets[req.rank] -= chunk
        open_ranks = sum(b > 0 for b in budgets)
        for head in list(self._waiting) if dp > 1 else self._waiting_head():
            if not open_ranks or len(self._running) >= self.features.max_running:
                break
            rank_budget = budgets[head.rank]
            if rank_budget <= 0:
                continue
            hit = self._lookup(head)
            left = head.prefill_target - hit
            # a prompt longer than a whole step's budget (where the engine runs it at all) goes alone
            alone = not chunked and left > whole and rank_budget == whole
            if not chunked and left > rank_budget and not alone:
                if dp == 1:
                    break
                budgets[head.rank] = 0
                open_ranks -= 1
                continue
            if not self._admit(head, hit):
                # alone on an idle engine, a request whose hit pins more than the pool can spare
                # beside it (the cached segment is held whole, its tail too) goes in as a miss,
                # its segments evictable, rather than wait for room that never comes
                if not (hit and not self._running and self._admit(head, 0)):
                    break
                hit, left = 0, head.prefill_target
                alone = not chunked and left > whole and rank_budget == whole
            chunk = left if alone else min(left, rank_budget)
            out.append((head, chunk))
            budgets[head.rank] -= chunk
            open_ranks -= budgets[head.rank] <= 0
        return out

    def _waiting_head(self):
        """The waiting queue's head again and again while admissions take it (one queue, FIFO)."""
        while self._waiting:
            yield self._waiting[0]

    def _decodes(self, preempted: list[int]) -> list[tuple[_Request, int]]:
        k, bt = self.tokens_per_chunk, self.features.block_tokens
        decode: list[tuple[_Request, int]] = []
        growth = 0  # KV tokens the decoding requests' new blocks take
        for r in self._running.values():
            if r.prefilled < r.prefill_target:
                continue
            if r.lingering:  # its extra token is dropped with its KV a step later: it needs no new block
                decode.append((r, k))
                continue
            n = r.target_tokens - r.generated
            if n > k:  # noqa: PLR1730 -- min() here, per request per step, costs the seed plan's estimate ~10 %
                n = k
            decode.append((r, n))
            blocks = -(-(r.private_kv + n) // bt) * bt  # as _blocks, inline: this runs per request per step
            if blocks > r.charge:
                growth += blocks - r.charge
        dropped: set[int] = set()
        self._decode_growth = growth
        if growth <= self._free(growth):
            return decode
        # SGLang retracts until the rest can decode RETRACT_STEPS more steps; vLLM preempts one at a time
        ahead = RETRACT_STEPS if self.features.preemption is Preemption.RETRACT else 1
        while len(dropped) < len(decode):
            need = growth if ahead == 1 else (len(decode) - len(dropped)) * k * ahead
            if need <= self._free(need):
                break
            victim = self._victim()
            if victim is None:  # only finished requests left, and they free their KV after this step
                break
            preempted.append(victim.req_id)
            dropped.add(victim.req_id)
            if victim.prefilled >= victim.prefill_target:
                n = min(k, victim.target_tokens - victim.generated)
                growth -= max(0, self._blocks(victim.private_kv + n) - victim.charge)
            self._preempt(victim)
        self._decode_growth = growth
        return [(r, n) for r, n in decode if r.req_id not in dropped] if dropped else decode

    def _apply(self, prefill, decode, preempted, finishing=()) -> StepResult:
        """Run one step. Under DP attention every rank runs the attention of its own requests
        (projections, prompt attention, KV read) at once, so the step pays the busiest rank's
        share dp_attention times over; the MoE and dense layers see every rank's tokens."""
        k, dp = self.tokens_per_chunk, self.features.dp_attention
        tokens, pairs, kv_read = [0] * dp, [0.0] * dp, [0] * dp
        emissions: list[Emission] = []
        for req, chunk in prefill:
            context = req.prefilled
            pairs[req.rank] += chunk * (context + (chunk + 1) / 2)  # causal: each query sees its past
            kv_read[req.rank] += context + chunk
            tokens[req.rank] += chunk
            req.prefilled += chunk
            self._grow(req, chunk)
            self._insert_segments(req)
            if req.prefilled == req.prefill_target:
                emissions.append(self._produce(req, min(k, req.target_tokens - req.generated)))
        events = bool(emissions)  # so far only prompts that got their first token
        if self._rereads_cheaper:
            for rank, tokens_reread in enumerate(self._reread_discount([r for r, _ in decode])):
                kv_read[rank] -= tokens_reread
        longest = 0
        if dp == 1:
            contexts = [r.prompt_tokens + r.generated for r, _ in decode]
            if contexts:
                longest = max(contexts)
                kv_read[0] += sum(contexts)
                tokens[0] += sum([n for _, n in decode])
        else:
            for req, n in decode:
                context = req.prompt_tokens + req.generated
                longest = max(longest, context)
                kv_read[req.rank] += context
                tokens[req.rank] += n
        # _grow and _produce for every decoding request, inline: this loop is most of a simulation
        produced, bt, emit = 0, self.features.block_tokens, emissions.append
        for req, n in decode:
            if req.lingering:
                continue
            private = req.private_kv = req.private_kv + n
            if private > req.charge:  # paged KV: it takes whole blocks
                charge = -(-private // bt) * bt
                self._kv_used += charge - req.charge
                req.charge = charge
            generated = req.generated = req.generated + n
            produced += n
            finished = generated >= req.target_tokens
            if finished:
                self._finish(req)
                events = events or req.lingering
            emit(Emission(req.req_id, n, generated, finished, req.cached_tokens))  # admitted: cached_tokens >= 0
        self._remaining_out -= produced
        for req in finishing:
            del self._running[req.req_id]
            self._release(req)
        eager = not prefill and self.features.eager_decode_steps(longest, 1, 1) > 0
        self.eager_steps += eager
        self.mixed_steps += bool(prefill and decode)
        num_tokens = sum(tokens)
        feats = self.cost.step_features(num_tokens, len(prefill) + len(decode), dp * max(pairs), dp * max(kv_read),
                                        eager, attn_tokens=dp * max(tokens))
        return StepResult(duration_s=self.cost.cost_s(feats),
                          prefill_chunks=tuple((r.req_id, c) for r, c in prefill),
                          decode_req_ids=tuple([r.req_id for r, _ in decode]), num_tokens=num_tokens,
                          emissions=self._hand_out(tuple(emissions), events), features=feats,
                          preempted=tuple(preempted))

    def _reread_discount(self, reqs) -> list[float]:
        """Per DP rank, the KV tokens these decoding requests' step is spared: of a cached segment
        that several of them read, every read but the longest costs ``kv_reread_cost`` of a first
        read (what the longest brought in is found in L2)."""
        saved = 1.0 - self.cost.gpu.kv_reread_cost
        out = [0.0] * self.features.dp_attention
        if not self._rereads_cheaper:
            return out
        reads: dict = {}  # (rank, key) -> [tokens all readers read, the most one reads]
        for r in reqs:
            if r.shared_reads is None:
                r.shared_reads = self._shared_reads(r)
            for key, tokens in r.shared_reads:
                entry = reads.get((r.rank, key))
                if entry is None:
                    reads[r.rank, key] = [tokens, tokens]
                else:
                    entry[0] += tokens
                    entry[1] = max(entry[1], tokens)
        for (rank, _), (total, most) in reads.items():
            out[rank] += saved * (total - most)  # the longest read brings the segment in; the rest re-read it
        return out

    @staticmethod
    def _shared_reads(req: _Request) -> tuple:
        """The cached segments a decoding request reads and how much of each: the whole of those its
        prefill put in the cache, and of those its hit found the tokens the hit covered (a
        block-hash hit may end inside a segment; the request computed the rest and keeps it)."""
        pinned, reads, offset = set(req.pinned), [], 0
        for i, (key, tokens) in enumerate(req.segments):
            if key in pinned:
                read = min(tokens, req.hit - offset) if i < req.hit_segments else tokens
                if read > 0:
                    reads.append((key, read))
            offset += tokens
        return tuple(reads)

    def _hand_out(self, emissions: tuple[Emission, ...], events: bool) -> tuple[Emission, ...]:
        """What a step hands to the server: its own tokens, or under async_output the last step's
        (``events``: these include a first or a last token)."""
        if self._held is None:
            return emissions
        out, self._held, self._held_events = self._held, emissions, events
        return out

    def _produce(self, req: _Request, n: int) -> Emission:
        req.generated += n
        self._remaining_out -= n
        finished = req.generated >= req.target_tokens
        if finished:
            self._finish(req)
        return Emission(req.req_id, n, req.generated, finished, max(req.cached_tokens, 0))

    def _finish(self, req: _Request) -> None:
        """A request produced its last token: under async_output it decodes once more before its KV
        is freed (the engine learns it is done while the next step runs); else it leaves now."""
        if self._held is not None:
            req.lingering = True
            self._lingering.append(req)
        else:
            del self._running[req.req_id]
            self._release(req)

    # -- KV and the prefix cache ---------------------------------------------------------------
    def _free(self, need: int) -> int:
        """Free KV tokens, after evicting unpinned cached segments (LRU) until ``need`` fits."""
        free = self.cost.kv_capacity_tokens - self._kv_used - self._reserved
        if free >= need or not self._cache.tokens:
            return free
        freed = self._cache.evict(need - free)
        self._kv_used -= freed
        self.kv_limited = self.kv_limited or freed > 0  # a larger pool would have kept them for later hits
        return free + freed

    def _lookup(self, req: _Request) -> int:
        """Prompt tokens of ``req`` the prefix cache of its rank holds (0 without a cache)."""
        return self._cache.lookup(req.rank, req.segments, req.prefill_target)

    def _admission(self, req: _Request, hit: int, others_left: int | None = None) -> tuple[int, int]:
        """(KV charged to the request, free KV its admission needs).

        TensorRT-LLM and vLLM charge a request for its reservation alone; SGLang also keeps
        room for the outputs every running request has still to write (new_token_ratio x the
        tokens left; ``others_left``, default the running requests'), which is what keeps it from
        retracting again at once. Without preemption the reservation is the whole output."""
        no_preemption = self.features.preemption is Preemption.NONE
        ratio = 1.0 if no_preemption else self.features.admission_output_reserve
        left = req.max_tokens - req.generated
        if self.features.preemption is Preemption.RETRACT:
            others = self._remaining_out if others_left is None else others_left
            charge = self._blocks(req.prefill_target - hit)
            return charge, charge + math.ceil(ratio * (others + left)) + self._watermark
        charge = self._blocks(req.prefill_target - hit + math.ceil(ratio * left))
        return charge, charge + self._watermark

    def _largest_need(self, prompt_tokens: int, max_tokens: int) -> int:
        """The most free KV a request can need with the pool otherwise empty: admitted, re-admitted
        after a preemption at its last token (prompt + output so far to prefill again), or grown to
        its end. ``add_request`` refuses what exceeds the pool, so every request runs at last."""
        probe = _Request(-1, prompt_tokens, max_tokens, max_tokens, (), 0)
        needs = [self._blocks(prompt_tokens + max_tokens)]
        if self._cache.enabled:
            # a prompt in the prefix cache is held there to the token, and the outputs in whole
            # blocks of their own after it
            needs.append(prompt_tokens + self._blocks(max_tokens))
        preemptible = self.features.preemption is not Preemption.NONE
        for generated in (0, max_tokens - 1) if preemptible else (0,):
            probe.generated, probe.prefill_target = generated, prompt_tokens + generated
            needs.append(self._admission(probe, 0, others_left=0)[1])
        return max(needs)

    def _admit(self, req: _Request, hit: int) -> bool:
        charge, need = self._admission(req, hit)
        # the hit's segments are pinned before room is made, or freeing it could evict them
        pinned = self._cache.pin_hits(req.rank, req.segments, hit)
        # a request that will not fit evicts nothing: vLLM and SGLang check first, and evict what
        # they allocate in place of
        free = self.cost.kv_capacity_tokens - self._kv_used - self._reserved
        if need > free + self._cache.evictable() or need > self._free(need):
            self._cache.unpin(req.rank, pinned)
            self.kv_limited = True
            return False
        if self._waiting[0] is req:
            self._waiting.popleft()
        else:
            self._waiting.remove(req)
        if req.cached_tokens < 0:
            req.cached_tokens = hit
            self.prefix_query_tokens += req.prompt_tokens
            self.prefix_hit_tokens += hit
        req.prefilled = hit
        req.private_kv = 0
        req.charge = charge
        self._kv_used += charge
        req.pinned = pinned
        req.segs_cached = req.hit_segments = len(pinned)
        if pinned:
            # a hit that ends inside a segment cached in part (a shorter prompt's last block, a
            # prefill still going): this prefill extends that entry as it passes its end
            last, size = pinned[-1], self._cache.cached(req.rank, pinned[-1])
            if size < req.segments[len(pinned) - 1][1]:
                req.segs_cached -= 1
                req.growing, req.growing_tokens = last, size
        req.hit, req.shared_reads = hit, None
        self._admitted += 1
        req.order = self._admitted
        self._remaining_out += req.target_tokens - req.generated
        self._running[req.req_id] = req
        return True

    def _insert_segments(self, req: _Request) -> None:
        """What the prefill has now passed moves from the request's KV into the cache: whole
        segments, and the part of the next one computed so far."""
        if not self._cache.enabled:
            return
        end = sum(t for _, t in req.segments[:req.segs_cached])
        passed_to = min(req.prefilled, req.prompt_tokens)
        while req.segs_cached < len(req.segments) and passed_to > end:
            key, tokens = req.segments[req.segs_cached]
            passed = min(passed_to - end, tokens)
            if key == req.growing:
                # another prefill may have extended it further meanwhile: only what is new moves
                more = passed - self._cache.cached(req.rank, key)
                if more > 0:
                    self._cache.extend(req.rank, key, more)
                    self._to_cache(req, more)
                req.growing_tokens = passed
            elif self._cache.insert(req.rank, key, passed):
                req.pinned.append(key)
                self._to_cache(req, passed)
                req.growing, req.growing_tokens = key, passed
            if passed < tokens:
                break
            req.growing, req.growing_tokens = None, 0
            end += tokens
            req.segs_cached += 1

    @staticmethod
    def _to_cache(req: _Request, tokens: int) -> None:
        req.private_kv -= tokens  # the pool holds the same tokens, now under the cache
        req.charge -= tokens  # the pool's total is unchanged: the charge moved to the cache

    def _grow(self, req: _Request, n: int) -> None:
        req.private_kv += n
        if req.private_kv > req.charge:  # paged KV: it takes whole blocks
            charge = self._blocks(req.private_kv)
            self._kv_used += charge - req.charge
            req.charge = charge

    def _blocks(self, tokens: int) -> int:
        bt = self.features.block_tokens
        return -(-tokens // bt) * bt

    def _release(self, req: _Request) -> None:
        self._remaining_out -= req.target_tokens - req.generated
        self._kv_used -= req.charge
        req.charge = req.private_kv = 0
        self._cache.unpin(req.rank, req.pinned)
        req.pinned = []
        req.growing, req.growing_tokens = None, 0  # what it cached in part stays, as far as it got

    def _victim(self) -> _Request | None:
        running = [r for r in self._running.values() if not r.lingering]
        if not running:
            return None
        if self.features.preemption is Preemption.RETRACT:
            return min(running, key=lambda r: (r.generated, -r.order))
        return max(running, key=lambda r: r.order)

    def _preempt(self, req: _Request) -> None:
        del self._running[req.req_id]
        self._release(req)
        self.num_preemptions += 1
        self.kv_limited = True
        req.prefill_target = req.prompt_tokens + req.generated
        req.prefilled = 0
        self._waiting.appendleft(req)
