import asyncio
import contextlib
import time

import pytest

from raybench import cluster


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray cluster for the whole session (starting one takes seconds)."""
    cluster.connect(None, num_cpus=4)
    yield
    cluster.disconnect()


class LoopStalls:
    """When this event loop could not run while a test ran: the machine's stalls, measured.

    A timing test that shares its loop (and a core) with the simulator cannot tell a 60 ms
    preemption on a busy machine from a late token, unless it measures the stalls themselves:
    a token due while the loop was stalled may be late by the rest of that stall
    (``excused_ms``), and by nothing more. On a quiet machine the bounds are as tight as before;
    lower bounds (never early) need no slack at all, so the tests can still fail.
    """

    period_s = 0.002
    stall_ns = 1_000_000

    def __init__(self) -> None:
        self.samples_ms: list[float] = []
        self.stalls_ns: list[tuple[int, int]] = []  # (when the loop should have woken, when it did)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms, default=0.0)

    @property
    def median_ms(self) -> float:
        return float(sorted(self.samples_ms)[len(self.samples_ms) // 2]) if self.samples_ms else 0.0

    def excused_ms(self, t_ns: int) -> float:
        """How long after ``t_ns`` the loop stayed stalled: from ``t_ns`` to the end of the run of stalls
        around it. Stalls less than two periods apart are one run (the loop had no time in between
        to catch up), and a run that began within a period after ``t_ns`` counts, since the loop is
        looked at only once a period."""
        period_ns = int(self.period_s * 1e9)
        end_ns = None
        for start, end in self.stalls_ns:
            if end_ns is not None and start - end_ns > 2 * period_ns:
                break  # the run around t_ns is over
            if end_ns is not None or start - period_ns <= t_ns <= end:
                end_ns = end
        return max(0.0, (end_ns - t_ns) / 1e6) if end_ns is not None else 0.0

    async def watch(self) -> None:
        period_ns = int(self.period_s * 1e9)
        while True:
            t0 = time.perf_counter_ns()
            await asyncio.sleep(self.period_s)
            woke = time.perf_counter_ns()
            late_ns = woke - t0 - period_ns
            self.samples_ms.append(max(0.0, late_ns / 1e6))
            if late_ns > self.stall_ns:  # a timer always wakes a little late: that is no stall
                self.stalls_ns.append((t0 + period_ns, woke))


@pytest.fixture
async def loop_stalls():
    meter = LoopStalls()
    task = asyncio.create_task(meter.watch())
    await asyncio.sleep(0)
    yield meter
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(f"event-loop stalls: median {meter.median_ms:.2f} ms, max {meter.max_ms:.2f} ms")
