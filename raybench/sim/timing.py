"""When steps are due, in real time: the fixed-latency scheduler and the engine-core driver.

Both run every stream from ONE timer on the event loop (a deadline heap, or the engine's step
chain), never a task or a sleep per chunk: at concurrency 1024 and 20 ms ITL that is 50,000
chunks/s, and per-chunk tasks would make the simulator, not the client, the bottleneck.
Deadlines are absolute (perf_counter_ns), so lateness never accumulates.
"""

from __future__ import annotations

import asyncio
import heapq
from time import perf_counter, perf_counter_ns
from typing import TYPE_CHECKING

from raybench.sim.api import prompt_segments
from raybench.sim.engine import EngineCore, StepResult
from raybench.sim.features import PrefixCache

if TYPE_CHECKING:
    from raybench.sim.streams import Stream

#: a due time this close counts as now: event-loop timers have about 1 ms resolution
SLACK_NS = 500_000
#: how long an idle engine waits for the rest of a burst of arrivals before its first step
IDLE_GATHER_S = 0.004
#: longest run of writes before the scheduler yields to the event loop (only when behind)
SLICE_NS = 1_000_000


class FixedScheduler:
    """Step j of a stream is due at arrival + ttft + j * itl * k; no capacity limits."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ttft_ms: float, itl_ms: float, k: int) -> None:
        self._loop = loop
        self._ttft_ns = round(ttft_ms * 1e6)
        self._step_ns = round(itl_ms * 1e6 * k)
        self._heap: list[tuple[int, int, int, Stream]] = []
        self._counter = 0  # tie-breaker: streams never get compared
        self._timer: asyncio.Handle | None = None
        self._timer_due_ns = 0

    def add(self, stream: Stream) -> None:
        stream.send_head()
        self._push(stream.t_arrival_ns + self._ttft_ns, 0, stream)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def _push(self, due_ns: int, step: int, stream: Stream) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (due_ns, self._counter, step, stream))

    def _arm(self) -> None:
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None:
            if self._timer_due_ns <= due:
                return
            self._timer.cancel()
        self._timer_due_ns = due
        self._timer = self._loop.call_later(max(0.0, (due - perf_counter_ns()) / 1e9), self._fire)

    def _fire(self) -> None:
        self._timer = None
        heap = self._heap
        now = perf_counter_ns()
        slice_end = now + SLICE_NS
        try:
            while heap and heap[0][0] <= now + SLACK_NS:
                if now > slice_end:  # behind: let reads, accepts and other timers in, then go on
                    self._timer = self._loop.call_soon(self._fire)
                    self._timer_due_ns = 0
                    return
                _, _, step, stream = heapq.heappop(heap)
                if stream.advance():
                    self._push(stream.t_arrival_ns + self._ttft_ns + (step + 1) * self._step_ns, step + 1, stream)
                now = perf_counter_ns()
        finally:  # also when a stream failed: one stream must not stop every other stream's clock
            if self._timer is None:
                self._arm()


class EngineDriver:
    """Runs EngineCore steps back to back in real time and hands out their tokens at step end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, core: EngineCore) -> None:
        self._loop = loop
        self.core = core
        self._streams: dict[int, Stream] = {}
        self._next_id = 0
        self._pending: StepResult | None = None
        self._step_end_s = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, stream: Stream, max_tokens: int, target_tokens: int) -> None:
        """Queue a stream's request; raises KvCapacityError when it can never fit."""
        self._next_id += 1
        segments = ()
        if self.core.features.prefix_cache is not PrefixCache.NONE:
            segments = prompt_segments(stream.req.prompt_raw, self.core.features.block_tokens)
        self.core.add_request(self._next_id, stream.req.prompt_tokens, max_tokens, target_tokens, segments=segments)
        stream.engine_id = self._next_id
        self._streams[self._next_id] = stream
        stream.send_head()
        if self._pending is None and self._timer is None:
            # an idle engine waits a moment, so a burst the client sends at once (over a few ms)
            # meets one step, as it does in virtual time
            self._timer = self._loop.call_later(IDLE_GATHER_S, self._start_from_idle)

    def remove(self, stream: Stream) -> None:
        if self._streams.pop(stream.engine_id, None) is not None:
            self.core.abort(stream.engine_id)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = None
        for req_id in list(self._streams):
            self.core.abort(req_id)
        self._streams.clear()

    def _start_from_idle(self) -> None:
        self._timer = None
        self._start_step()

    def _start_step(self, back_to_back: bool = False) -> None:
        result = self.core.step()
        self._pending = result
        if result is None:
            return
        now = perf_counter()
        # a step that follows one starts where that one was due to end, not where its timer
        # fired: timer lateness must not add up over thousands of steps (the virtual-time
        # paths have none); after an idle spell the engine starts now
        start = self._step_end_s if back_to_back else max(now, self._step_end_s)
        self._step_end_s = start + result.duration_s
        self._timer = self._loop.call_later(self._step_end_s - now, self._deliver)

    def _deliver(self) -> None:
        self._timer = None
        result = self._pending
        try:
            for emission in result.emissions:
                stream = self._streams.get(emission.req_id)
                if stream is None:
                    continue
                if emission.finished:
                    del self._streams[emission.req_id]
                if emission.cached_tokens and emission.total_tokens == emission.new_tokens:
                    stream.report_cached(emission.cached_tokens)
                stream.advance()
        finally:  # one failing stream must not stop the engine
            self._start_step(back_to_back=True)
