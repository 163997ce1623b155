"""Clock anchoring: putting every actor's ``perf_counter_ns`` on the driver's time base.

perf_counter is not comparable across machines, so each actor's offset to the driver is
estimated NTP-style: the driver reads its clock, asks the actor for its clock, reads again;
the actor's reading is taken to be at the midpoint, and the sample with the shortest round
trip wins (its error is at most half that round trip).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClockAnchor:
    """``t_driver = t_actor - offset_ns``, good to within ``±rtt_ns / 2``."""

    offset_ns: int
    rtt_ns: int

    def to_driver(self, t_actor_ns: int) -> int:
        return t_actor_ns - self.offset_ns

    def to_actor(self, t_driver_ns: int) -> int:
        return t_driver_ns + self.offset_ns


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
