"""A closed-loop benchmark against the engine core, in virtual time.

What ``raybench run`` does to an engine-timing simulator, without the sockets and the waiting:
N equal requests, at most C in flight (a slot is busy from send to the last token), each sent
no earlier than its arrival (i / rate_per_s). The steps are the server's own (``EngineCore``,
with ``fast_forward_decode`` over pure-decode spans), so the elapsed time is what the
simulator would take in real time, minus HTTP overheads; for a real server it is what the
cost model predicts.

One detail follows the server's step loop (timing.EngineDriver): the next step starts the
moment the previous one ends, so a request sent during a step, including the successor of a
request that step finished, joins the step after. That costs one step per request, which
matters at short outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raybench.sim.costmodel import CostModel
from raybench.sim.engine import EngineCore


@dataclass(frozen=True, kw_only=True)
class ClosedLoopResult:
    """Virtual seconds from the first request sent to the last one done, and engine steps."""

    elapsed_s: float
    num_steps: int


class _Client:
    """The load generator's side: C slots, requests in order, none before its arrival."""

    def __init__(self, core: EngineCore, num_requests: int, prompt_tokens: int, output_tokens: int,
                 concurrency: int, rate_per_s: float) -> None:
        self.core = core
        self.num_requests, self.prompt_tokens, self.output_tokens = num_requests, prompt_tokens, output_tokens
        self.interval_s = 0.0 if math.isinf(rate_per_s) else 1.0 / rate_per_s
        self.free = min(concurrency, num_requests)
        self.sent = 0

    @property
    def done_sending(self) -> bool:
        return self.sent == self.num_requests

    def next_arrival_s(self) -> float:
        return self.sent * self.interval_s

    def wait_s(self, now_s: float) -> float:
        """Seconds until the client sends again (inf: every slot busy or nothing left to send)."""
        if not self.free or self.done_sending:
            return math.inf
        return max(0.0, self.next_arrival_s() - now_s)

    def send_until(self, now_s: float) -> None:
        """Send every request that has a free slot and has arrived by ``now_s``."""
        while self.free and not self.done_sending and self.next_arrival_s() <= now_s:
            self.core.add_request(self.sent, self.prompt_tokens, self.output_tokens)
            self.sent += 1
            self.free -= 1


def closed_loop(
    cost: CostModel,
    *,
    num_requests: int,
    prompt_tokens: int,
    output_tokens: int,
    concurrency: int,
    rate_per_s: float = math.inf,
    tokens_per_chunk: int = 1,
) -> ClosedLoopResult:
    """Run the closed loop to its end; raises KvCapacityError if one request can never fit.

    Output lengths are forced (ignore_eos), as raybench's load generator forces them.
    """
    for name, value in (("num_requests", num_requests), ("prompt_tokens", prompt_tokens),
                        ("output_tokens", output_tokens), ("concurrency", concurrency)):
        if value < 1:
            raise ValueError(f"{name}={value!r}: expected an integer >= 1")
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s={rate_per_s!r}: expected > 0 (inf: all at once)")
    core = EngineCore(cost, tokens_per_chunk)
    client = _Client(core, num_requests, prompt_tokens, output_tokens, concurrency, rate_per_s)
    now_s = 0.0
    steps = 0
    while True:
        if not core.has_work():  # idle: the next request starts a step at once
            if client.done_sending:
                return ClosedLoopResult(elapsed_s=now_s, num_steps=steps)
            now_s = max(now_s, client.next_arrival_s())
            client.send_until(now_s)
            continue
        wait_s = client.wait_s(now_s)
        span = core.fast_forward_decode(wait_s) if wait_s > 0 else None
        if span is not None:
            now_s += span[0]
            steps += span[1]
            client.send_until(now_s)  # arrivals during the span join at its end
            continue
        in_engine = core.num_running + core.num_waiting
        result = core.step()
        if result is None:  # cannot happen: add_request rejected what never fits
            raise RuntimeError("closed loop stalled with work left")
        now_s += result.duration_s
        steps += 1
        finished = in_engine - core.num_running - core.num_waiting
        client.send_until(now_s)  # sent during this step: they join the next one
        # slots freed at this step's end: their successors are sent while the next step runs
        client.free += finished
