"""The plain logic behind a load-generator actor: a private event loop in its own thread.

The generator runs on its own loop (uvloop where installed) instead of the actor's, so calls
from the driver (poll, stop) never queue behind the hot path and the hot path never waits for
Ray. Everything the driver asks is answered from the loop thread, so nothing is shared.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator, Progress, SelfCheck
from raybench.loadgen.records import ChunkColumns, RequestColumns, chunks_batch, requests_batch
from raybench.workloads.base import Workload

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on every platform but Windows
    uvloop = None


@dataclass(frozen=True, kw_only=True)
class ShardTask:
    """One actor's share of a cell. Prompts are built on the actor from the workload's seed."""

    cell_id: str
    client: ClientConfig
    workload: Workload
    request_ids: tuple[int, ...]
    arrivals_s: np.ndarray
    concurrency: int
    slot_starts_s: tuple[float, ...] = ()  # a ramped cap: when each of this actor's slots opens


@dataclass(frozen=True, kw_only=True)
class PollResult:
    """What one poll hands back: the rows recorded since the last poll, and where it stands."""

    requests: pa.RecordBatch | None
    chunks: pa.RecordBatch | None
    progress: Progress
    finished: bool
    error: str | None = None
    self_check: SelfCheck | None = None


def sample_batches(cell_id: str, actor: str, node: str) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """One made-up request and chunk as Arrow batches, built once before the clock starts.

    The first drain of a process pays one-off costs (Arrow kernels, lazy imports: tens of ms,
    more on a busy host) while holding the GIL, which stalls the generator's loop a second into
    a cell; paying them here keeps that stall out of every measurement. Callers may feed the
    batches to anything else that first touches rows on a poll.
    """
    requests, chunks = RequestColumns(), ChunkColumns()
    for name in ("request_id", "prompt_tokens", "max_tokens", "t_scheduled_ns", "t_sent_ns", "t_done_ns", "status"):
        getattr(requests, name).append(0)
    for name in ("session", "turn", "server_prompt_tokens", "output_tokens", "cached_tokens", "t_first_ns",
                 "http_status", "error"):
        getattr(requests, name).append(None)
    for name in ("request_id", "seq", "t_ns", "code"):
        getattr(chunks, name).append(0)
    return requests_batch(requests, cell_id, actor, node, 0), chunks_batch(chunks, cell_id, 0)


class LoadGenWorker:
    """Runs one ``LoadGenerator`` at a time; times leave it on the driver's time base."""

    def __init__(self, name: str = "loadgen", node: str = "local") -> None:
        self.name = name
        self.node = node
        self._loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-loop", daemon=True)
        self._thread.start()
        self._generator: LoadGenerator | None = None
        self._run: concurrent.futures.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._cell_id = ""
        self._offset_ns = 0
        self._skew_ns = 0

    def clock_ns(self) -> int:
        """The actor's clock, as the driver's anchoring reads it."""
        return time.perf_counter_ns() + self._skew_ns

    def shift_clock(self, skew_ns: int) -> None:
        """Make this actor's clock read ``skew_ns`` ahead, as another machine's would.

        The hot path keeps reading ``perf_counter_ns``; the skew is applied where its readings
        meet the driver's time base (the start time in, the rows out), which is the same as
        skewing every reading. Tests use it to show that anchoring puts the rows right.
        """
        self._skew_ns = int(skew_ns)

    def prepare(self, task: ShardTask, offset_ns: int) -> int:
        """Build prompts and bodies before the clock starts; returns the number of requests."""
        specs = task.workload.build(task.request_ids)
        self._generator = LoadGenerator(
            cell_id=task.cell_id,
            client=task.client,
            specs=specs,
            arrivals_s=task.arrivals_s,
            concurrency=task.concurrency,
            slot_starts_s=task.slot_starts_s,
        )
        self._cell_id, self._offset_ns, self._run = task.cell_id, offset_ns, None
        generator = self._generator
        self._on_loop_async(generator.connect())
        self.warm_batches = sample_batches(task.cell_id, self.name, self.node)
        return len(specs)

    def go(self, t_start_driver_ns: int) -> None:
        """Start sending at ``t_start_driver_ns`` on the driver's time base."""
        if self._generator is None:
            raise RuntimeError("go() before prepare()")
        self._run = asyncio.run_coroutine_threadsafe(
            self._run_as_task(self._generator, t_start_driver_ns + self._offset_ns - self._skew_ns), self._loop
        )

    async def _run_as_task(self, generator: LoadGenerator, t_start_ns: int) -> None:
        self._task = asyncio.current_task()
        await generator.run(t_start_ns)

    def poll(self, wait_s: float = 0.0) -> PollResult:
        """Rows since the last poll; waits up to ``wait_s`` for the run to end first."""
        if self._generator is None:
            raise RuntimeError("poll() before prepare()")
        generator = self._generator
        if wait_s > 0 and self._run is not None:
            concurrent.futures.wait([self._run], timeout=wait_s)
        finished = self._run is not None and self._run.done()
        chunks, requests = self._on_loop(lambda: generator.drain())
        error = None
        shift_ns = self._offset_ns - self._skew_ns  # perf_counter_ns -> actor clock -> driver
        if finished and not self._run.cancelled() and self._run.exception() is not None:
            error = repr(self._run.exception())
        return PollResult(
            requests=requests_batch(requests, self._cell_id, self.name, self.node, shift_ns)
            if len(requests)
            else None,
            chunks=chunks_batch(chunks, self._cell_id, shift_ns) if len(chunks) else None,
            progress=self._on_loop(generator.progress),
            finished=finished,
            error=error,
            self_check=generator.self_check() if finished else None,
        )

    def stop(self) -> None:
        """Cancel what is in flight; the cancelled requests come back as rows on the next poll."""
        if self._run is not None and not self._run.done():
            # cancel the task, not the future: the future then ends only after the generator
            # has recorded its cancelled requests and closed its session
            self._loop.call_soon_threadsafe(lambda: self._task and self._task.cancel())
            try:
                self._run.result(timeout=30)
            except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
                pass

    def shutdown(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _on_loop(self, fn):
        async def call():
            return fn()

        return self._on_loop_async(call())

    def _on_loop_async(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
