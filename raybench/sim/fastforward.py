"""The engine core's virtual-time fast path: a run of pure-decode steps taken at once.

Between admissions, preemptions and finishes a continuous-batching engine repeats the same
decode step with a context growing by k tokens per request: ``FastForward`` (a part of
``engine.EngineCore``) takes such a span in one go, with exactly the features stepping would
sum, which is what makes a whole benchmark matrix simulate in seconds.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Emission(NamedTuple):
    """Tokens one request got from one step (a NamedTuple: one per request per step, cheap to build)."""

    req_id: int
    new_tokens: int
    total_tokens: int
    finished: bool
    cached_tokens: int = 0  # prompt tokens the prefix cache served (on its first emission and after)


class Span(NamedTuple):
    """A run of pure-decode steps taken at once."""

    duration_s: float
    steps: int
    emissions: tuple[Emission, ...]
    features: tuple[float, ...]


class FastForward:
    """Pure-decode spans of an EngineCore (it provides the queues, the KV and the cost model)."""

    def fast_forward_decode(self, max_duration_s: float = math.inf, *, emissions: bool = True) -> Span | None:
        """Take every step of a pure-decode span at once (virtual-time engines, calibration).

        Applies when every running request is decoding and no waiting request can be admitted
        (none waits, or max_running or the KV blocks the head; decoding only fills the KV, so
        that stays true): the next S steps then have the same batch and a context growing by k
        per request per step. S stops before the first request could finish and before the KV
        runs out. ``max_duration_s`` ends the span after the first step that ends at or past it
        (an arrival then joins at that step boundary). None when it does not apply.

        Under async_output a first or last token the last step holds back, or a finished request's
        extra step, must end a step of its own (when it reaches the client is a step's end): then
        None too. The tokens held back from the last step leave with the span's, and the span's
        last step's wait for the next step. ``emissions=False``: the span's emissions are left
        out (a caller that only needs its time; a span never holds a first or a last token).
        """
        held = self._held
        if not self._running or (held is not None and (self._lingering or self._held_events)):
            return None
        if self._waiting and self._head_admissible():
            return None
        reqs = list(self._running.values())
        left = math.inf  # the fewest output tokens any request has still to produce
        for r in reqs:
            if r.prefilled < r.prefill_target:
                return None
            if r.target_tokens - r.generated < left:  # noqa: PLR1730 -- as in EngineCore._decodes
                left = r.target_tokens - r.generated
        k = self.tokens_per_chunk
        steps = left // k - 1
        if steps < 1:
            return None
        steps = self._kv_steps(reqs, k, steps)
        if steps < 1:
            return None
        n, context0, longest, ranks = self._decode_batch(reqs)
        if math.isfinite(max_duration_s):
            import numpy as np

            times = np.cumsum(self.cost.decode_step_times_s(n, k, context0, steps, longest, ranks))
            steps = min(steps, int(np.searchsorted(times, max_duration_s, side="left")) + 1)
        feats = self.cost.decode_span_features(n, k, context0, steps, longest, ranks)
        self.eager_steps += self.features.eager_decode_steps(longest, k, steps)
        grown, bt = steps * k, self.features.block_tokens
        for req in reqs:  # _grow, inline
            req.generated += grown
            private = req.private_kv = req.private_kv + grown
            if private > req.charge:
                charge = -(-private // bt) * bt
                self._kv_used += charge - req.charge
                req.charge = charge
        self._remaining_out -= grown * len(reqs)
        out: tuple[Emission, ...] = ()
        if held is None:
            if emissions:
                out = tuple(Emission(r.req_id, grown, r.generated, False, r.cached_tokens) for r in reqs)
        else:
            if emissions:
                before = {e.req_id: e.new_tokens for e in held}
                out = tuple(Emission(r.req_id, n, r.generated - k, False, r.cached_tokens) for r in reqs
                            if (n := before.get(r.req_id, 0) + (steps - 1) * k) > 0)
            self._held = tuple(Emission(r.req_id, k, r.generated, False, r.cached_tokens) for r in reqs)
        return Span(self.cost.cost_s(feats), steps, out, feats)

    def _decode_batch(self, reqs: list) -> tuple:
        """(num_seqs, total context, longest context, per DP rank (requests, context) or None)."""
        contexts = [r.prompt_tokens + r.generated for r in reqs]
        discount = self._reread_discount(reqs)
        ranks = None
        if self.features.dp_attention > 1:
            counts, sums = [0] * self.features.dp_attention, [-d for d in discount]
            for r, c in zip(reqs, contexts):
                counts[r.rank] += 1
                sums[r.rank] += c
            ranks = tuple(zip(counts, sums))
        return len(reqs), sum(contexts) - sum(discount), max(contexts), ranks

    def _kv_steps(self, reqs: list, k: int, upper: int) -> int:
        """Most steps (at most ``upper``, itself >= 1) every request can grow by k per step without running out of KV."""
        import numpy as np

        free = self.cost.kv_capacity_tokens - self._kv_used
        bt = self.features.block_tokens
        if free >= len(reqs) * (upper * k + bt):  # a request grows by fewer tokens than that
            return upper
        private = np.fromiter((r.private_kv for r in reqs), dtype=np.int64, count=len(reqs))
        charge = np.fromiter((r.charge for r in reqs), dtype=np.int64, count=len(reqs))

        def growth(steps: int) -> int:
            # as _grow: a request that outgrows its charge holds whole blocks of its own KV, and a
            # charge need not be whole blocks (what its prefill moved into the prefix cache left it)
            return int(np.maximum(-(-(private + steps * k) // bt) * bt - charge, 0).sum())

        if growth(upper) <= free:
            return upper
        self.kv_limited = True
        lo, hi = 0, upper
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if growth(mid) <= free:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _head_admissible(self) -> bool:
        if len(self._running) >= self.features.max_running:
            return False
        head = self._waiting[0]
        _, need = self._admission(head, self._lookup(head))
        return need <= self.cost.kv_capacity_tokens - self._kv_used + self._cache.evictable()
