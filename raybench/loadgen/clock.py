"""Clock anchoring: putting every actor's ``perf_counter_ns`` on the driver's time base.

perf_counter is not comparable across machines, so each actor's offset to the driver is
estimated NTP-style: the driver reads its clock, asks the actor for its clock, reads again;
the actor's reading is taken to be at the midpoint, and the sample with the shortest round
trip wins (its error is at most half that round trip).

Each cell anchors its actors before it starts and again after its last request, all actors at
once (one thread each: a few hundred actors would otherwise take seconds in turn). Rows are
placed with the first anchor; the second one says how far the clocks drifted apart during the
cell, so a cell whose timeline cannot be trusted to a millisecond is flagged, not trusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_MAX_THREADS = 32
DRIFT_TOLERANCE_NS = 1_000_000  # drift beyond this (plus the anchors' own error) is flagged


@dataclass(frozen=True, slots=True)
class ClockAnchor:
    """``t_driver = t_actor - offset_ns``, good to within ``±rtt_ns / 2``."""

    offset_ns: int
    rtt_ns: int

    def to_driver(self, t_actor_ns: int) -> int:
        return t_actor_ns - self.offset_ns

    def to_actor(self, t_driver_ns: int) -> int:
        return t_driver_ns + self.offset_ns


@dataclass(frozen=True, slots=True)
class ClockDrift:
    """An actor's anchors before and after a cell; ``after`` is None when the actor was lost."""

    before: ClockAnchor
    after: ClockAnchor | None

    @property
    def drift_ns(self) -> int | None:
        """How far the actor's clock moved against the driver's during the cell."""
        return None if self.after is None else self.after.offset_ns - self.before.offset_ns

    @property
    def uncertainty_ns(self) -> int:
        """The drift's own error bound: half of each anchor's round trip."""
        after_rtt = 0 if self.after is None else self.after.rtt_ns
        return (self.before.rtt_ns + after_rtt) // 2

    @property
    def flagged(self) -> bool:
        """True when the clocks drifted apart by more than the tolerance plus the error bound."""
        drift = self.drift_ns
        return drift is not None and abs(drift) > DRIFT_TOLERANCE_NS + self.uncertainty_ns


def estimate_anchor(
    read_remote_ns: Callable[[], int],
    *,
    samples: int = 8,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
) -> ClockAnchor:
    """Estimate the offset of the clock behind ``read_remote_ns`` from ``clock_ns``."""
    best: ClockAnchor | None = None
    for _ in range(max(1, samples)):
        t0 = clock_ns()
        remote = read_remote_ns()
        t1 = clock_ns()
        anchor = ClockAnchor(offset_ns=remote - (t0 + t1) // 2, rtt_ns=t1 - t0)
        if best is None or anchor.rtt_ns < best.rtt_ns:
            best = anchor
    assert best is not None
    return best


def estimate_anchors(
    readers: Sequence[Callable[[], int]],
    *,
    samples: int = 16,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
) -> list[ClockAnchor | BaseException]:
    """:func:`estimate_anchor` for every reader at once; a reader that fails gives its exception.

    The readers run in threads, so one slow or dead actor delays the others by at most one
    round trip of its own, and the result keeps the readers' order.
    """
    if not readers:
        return []

    def one(read: Callable[[], int]) -> ClockAnchor | BaseException:
        try:
            return estimate_anchor(read, samples=samples, clock_ns=clock_ns)
        except Exception as err:  # noqa: BLE001 - handed back per actor, the caller decides
            return err

    with ThreadPoolExecutor(max_workers=min(len(readers), _MAX_THREADS)) as pool:
        return list(pool.map(one, readers))
