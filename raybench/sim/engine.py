"""The engine core: continuous batching with chunked prefill, a token budget and a KV cap.

It knows nothing about clocks. ``step()`` decides one engine iteration, applies it and returns
how long it takes (from the cost model) and which requests produced tokens; the caller decides
what time means: the server sleeps ``duration_s`` before delivering the tokens, the offline
engine adds it to a virtual clock. So the same scheduling runs in real time and in virtual time.

Policy per step (in the spirit of vLLM's V1 scheduler, kept simple):
1. running requests in admission order: a decoding request takes k tokens of the budget
   (k = tokens_per_chunk, one MTP / speculative step), a partly prefilled one the next chunk
   of its prompt that fits the budget;
2. then waiting requests in FIFO order, while fewer than max_num_seqs run, the budget is not
   spent and prompt + max_tokens fits the free KV tokens (reserved whole at admission, so no
   preemption is ever needed); the first that does not fit blocks the queue.
The step that finishes a prompt also samples its first min(k, target) tokens.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from raybench.sim.costmodel import CostModel


@dataclass(slots=True)
class _Request:
    req_id: int
    prompt_tokens: int
    target_tokens: int  # output tokens it will produce (<= max_tokens; EOS may come first)
    kv_reserved_tokens: int
    prefilled: int = 0
    generated: int = 0


class Emission(NamedTuple):
    """Tokens one request got from one step.

    A NamedTuple, not a frozen dataclass: one is made per request per step (millions in a
    virtual-time run of a large plan), and a frozen dataclass takes three times as long to build.
    """

    req_id: int
    new_tokens: int
    total_tokens: int
    finished: bool


@dataclass(frozen=True, slots=True)
class StepResult:
    """One engine iteration: what ran, how long it takes, what came out."""

    duration_s: float
    prefill_chunks: tuple[tuple[int, int], ...]  # (req_id, prompt tokens processed)
    decode_req_ids: tuple[int, ...]
    num_tokens: int  # budget used: prefill tokens + tokens verified by decoding requests
    emissions: tuple[Emission, ...]


class KvCapacityError(ValueError):
    """A request whose prompt + max_tokens can never fit the KV capacity."""


class EngineCore:
    """Continuous-batching scheduler over a CostModel; see the module docstring for the policy."""

    def __init__(self, cost: CostModel, tokens_per_chunk: int = 1) -> None:
        self.cost = cost
        self.tokens_per_chunk = tokens_per_chunk
        self._waiting: deque[_Request] = deque()
        self._running: dict[int, _Request] = {}
        self._kv_used_tokens = 0

    # -- queue ---------------------------------------------------------------------------------
    def add_request(
        self, req_id: int, prompt_tokens: int, max_tokens: int, target_tokens: int | None = None
    ) -> None:
        """Queue a request; raises KvCapacityError if it could never be admitted."""
        target = max_tokens if target_tokens is None else target_tokens
        if prompt_tokens < 1 or not 1 <= target <= max_tokens:
            raise ValueError(f"bad request {req_id}: prompt {prompt_tokens}, target {target}/{max_tokens}")
        need = prompt_tokens + max_tokens
        if need > self.cost.kv_capacity_tokens:
            raise KvCapacityError(
                f"prompt_tokens + max_tokens = {need} exceeds the KV capacity of "
                f"{self.cost.kv_capacity_tokens} tokens"
            )
        self._waiting.append(_Request(req_id, prompt_tokens, target, need))

    def abort(self, req_id: int) -> None:
        """Forget a request (client went away); frees its KV. Unknown ids are ignored."""
        req = self._running.pop(req_id, None)
        if req is not None:
            self._kv_used_tokens -= req.kv_reserved_tokens
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
        return self._kv_used_tokens

    def has_work(self) -> bool:
        return bool(self._running or self._waiting)

    # -- one step ------------------------------------------------------------------------------
    def step(self) -> StepResult | None:
        """Schedule, cost and apply one iteration; None when nothing can run."""
        budget = self.cost.max_num_batched_tokens
        k = self.tokens_per_chunk
        prefill: list[tuple[_Request, int]] = []
        decode: list[tuple[_Request, int]] = []
        for req in self._running.values():
            if budget <= 0:
                break
            if req.prefilled < req.prompt_tokens:
                chunk = min(req.prompt_tokens - req.prefilled, budget)
                prefill.append((req, chunk))
                budget -= chunk
            else:
                n = min(k, req.target_tokens - req.generated)
                if n <= budget:
                    decode.append((req, n))
                    budget -= n
        budget = self._admit(budget, prefill)
        if not prefill and not decode:
            return None
        return self._apply(prefill, decode, self.cost.max_num_batched_tokens - budget)

    def _head_admissible(self) -> bool:
        head = self._waiting[0]
        return (len(self._running) < self.cost.max_num_seqs
                and self._kv_used_tokens + head.kv_reserved_tokens <= self.cost.kv_capacity_tokens)

    def _admit(self, budget: int, prefill: list[tuple[_Request, int]]) -> int:
        capacity = self.cost.kv_capacity_tokens
        while self._waiting and budget > 0 and len(self._running) < self.cost.max_num_seqs:
            head = self._waiting[0]
            if self._kv_used_tokens + head.kv_reserved_tokens > capacity:
                break
            self._waiting.popleft()
            self._running[head.req_id] = head
            self._kv_used_tokens += head.kv_reserved_tokens
            chunk = min(head.prompt_tokens, budget)
            prefill.append((head, chunk))
            budget -= chunk
        return budget

    def _apply(self, prefill, decode, num_tokens: int) -> StepResult:
        k = self.tokens_per_chunk
        prefill_pairs = 0.0
        decode_pairs = 0
        kv_read = 0
        emissions: list[Emission] = []
        for req, chunk in prefill:
            context = req.prefilled
            prefill_pairs += chunk * (context + (chunk + 1) / 2)  # causal: each query sees its past
            kv_read += context + chunk
            req.prefilled += chunk
            if req.prefilled == req.prompt_tokens:
                emissions.append(self._produce(req, min(k, req.target_tokens)))
        for req, n in decode:
            context = req.prompt_tokens + req.generated
            decode_pairs += n * context
            kv_read += context
            emissions.append(self._produce(req, n))
        duration = self.cost.step_time_s(num_tokens, prefill_pairs, decode_pairs, kv_read)
        return StepResult(
            duration_s=duration,
            prefill_chunks=tuple((r.req_id, c) for r, c in prefill),
            decode_req_ids=tuple(r.req_id for r, _ in decode),
            num_tokens=num_tokens,
            emissions=tuple(emissions),
        )

    def _produce(self, req: _Request, n: int) -> Emission:
        req.generated += n
        finished = req.generated >= req.target_tokens
        if finished:
            del self._running[req.req_id]
            self._kv_used_tokens -= req.kv_reserved_tokens
        return Emission(req.req_id, n, req.generated, finished)

    # -- virtual-time fast path ----------------------------------------------------------------
    def fast_forward_decode(
        self, max_duration_s: float = math.inf
    ) -> tuple[float, int, tuple[Emission, ...]] | None:
        """Run every step of a pure-decode span at once, for the virtual-time engines.

        Applies when every running request is decoding and no waiting request can be admitted
        (none waits, or the head is blocked by max_num_seqs or KV; nothing finishes during the
        span, so that stays true): then each of the next S steps (S = steps until the first
        request could finish) has the same batch and a context that grows by k per request per
        step, so their durations can be summed in one vector expression. ``max_duration_s``
        (seconds) ends the span early, after the first step that ends at or past it: a request
        the caller adds then (a new arrival) joins at that step boundary, as it would if the
        steps were taken one by one. Returns (seconds, steps, emissions summed over the span)
        or None when it does not apply.
        """
        import numpy as np

        if not self._running or (self._waiting and self._head_admissible()):
            return None
        k = self.tokens_per_chunk
        reqs = list(self._running.values())
        if any(r.prefilled < r.prompt_tokens for r in reqs):
            return None
        if len(reqs) * k > self.cost.max_num_batched_tokens:
            return None
        steps = min((r.target_tokens - r.generated) // k for r in reqs)
        if steps < 2:
            return None
        steps -= 1  # leave the last step, where some request may emit fewer than k, to step()
        n = len(reqs)
        context0 = sum(r.prompt_tokens + r.generated for r in reqs)
        context = context0 + np.arange(steps, dtype=np.float64) * (n * k)
        compute_s, memory_s = self.cost.step_terms_s(n * k, 0.0, k * context, context)
        step_s = np.maximum(compute_s, memory_s) + self.cost.backend.t0_ms / 1e3
        if math.isfinite(max_duration_s):
            # the steps that end before the limit, and the one that reaches it
            steps = min(steps, int(np.searchsorted(np.cumsum(step_s), max_duration_s, side="left")) + 1)
            step_s = step_s[:steps]
        total_s = float(np.sum(step_s))
        for req in reqs:
            req.generated += steps * k
        emissions = tuple(Emission(r.req_id, steps * k, r.generated, False) for r in reqs)
        return total_s, steps, emissions
