"""A closed-loop benchmark against the engine core, in virtual time.

What ``raybench run`` does to an engine-timing simulator, without the sockets and the waiting:
N requests, at most C in flight (a slot is busy from send to the last token), each sent no
earlier than its arrival (i / rate_per_s). The steps are the server's own (``EngineCore``,
with ``fast_forward_decode`` over pure-decode spans), so the elapsed time is what the
simulator would take in real time, minus HTTP overheads; for a real server it is what the
cost model predicts.

The next step starts the moment the previous one ends, so a request sent during a step,
including the successor of a request that step finished, joins the step after (as the server's
step loop, timing.EngineDriver, does).

Every request's send, first token and last token are recorded as the running SUM of step
feature vectors at that moment (plus idle seconds waiting for an arrival): times for any cost
coefficients are then one dot product away (``Trace.times_s``), which is what calibration fits.
With every request released at once the schedule does not depend on what the steps cost.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from raybench.sim.costmodel import FEATURES, CostModel
from raybench.sim.engine import EngineCore, KvCapacityError, StepResult


@dataclass(frozen=True, kw_only=True)
class RequestSpec:
    """One request of a workload: lengths and the prompt's content runs (for the prefix cache)."""

    prompt_tokens: int
    output_tokens: int
    segments: tuple = ()
    after: int = -1  # an earlier request whose answer this one waits for (a conversation's last turn); -1: none


def shared_prefix_requests(num_requests: int, input_len: int, prefix_len: int, output_len: int,
                           prompts_per_group: int, seed: int = 0) -> list[RequestSpec]:
    """A shared-prefix workload as it is sent: groups of ``prompts_per_group`` prompts share their
    first ``prefix_len`` tokens, and the requests go out in a seeded shuffled order (raybench's
    prefix workload, SGLang's generated-shared-prefix), so a prefix cache sees the groups
    interleaved. A prompt is two cacheable segments: the group's prefix and its own question,
    keyed by what draws their content in raybench's workload (seed, group or slot, length), so
    cells of one server that send the same prompts hit each other's cache as they would."""
    order = np.random.default_rng([seed, 0]).permutation(num_requests)
    rest = input_len - prefix_len
    specs = []
    for i in range(num_requests):
        slot = int(order[i])
        prefix = ("prefix", seed, slot // prompts_per_group, prefix_len)
        specs.append(RequestSpec(prompt_tokens=input_len, output_tokens=output_len,
                                 segments=((prefix, prefix_len), (("question", prefix, slot, rest), rest))))
    return specs


@dataclass(frozen=True, kw_only=True)
class Trace:
    """Per request (rows in send order): cumulative features and idle seconds at three moments."""

    sent: np.ndarray  # (N, len(FEATURES) + 1): features, then idle seconds
    first: np.ndarray
    done: np.ndarray
    cached_tokens: np.ndarray  # (N,) prompt tokens the prefix cache served
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    num_steps: int
    kv_limited: bool = False  # the KV capacity held something back or evicted a cached prompt (a larger one would differ)
    start_cached_tokens: int = 0  # prompt tokens the prefix cache held when the run began (earlier cells, a warm-up)
    regimes: frozenset[str] = frozenset()  # features.REGIMES the run went through
    # when each request was due: its arrival, or a later turn's answer before it plus the think
    # time (sent - due is the wait for a slot, the run's queue time); None: as sent
    due: np.ndarray | None = None
    # requests the server refused (``simulate(refuse=True)``): why, as its 400 says; their rows
    # hold the send time thrice, and they produced nothing
    refused: dict[int, str] = field(default_factory=dict)

    def times_s(self, coefficients: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sent, first token, done) seconds of every request under these coefficients."""
        c = np.append(np.asarray(coefficients, dtype=np.float64), 1.0)
        return self.sent @ c, self.first @ c, self.done @ c

    def due_s(self, coefficients: Sequence[float]) -> np.ndarray:
        """When every request was due, in seconds under these coefficients."""
        c = np.append(np.asarray(coefficients, dtype=np.float64), 1.0)
        return (self.sent if self.due is None else self.due) @ c


@dataclass(frozen=True, kw_only=True)
class ClosedLoopResult:
    """Virtual seconds from the first request sent to the last one done, and engine steps."""

    elapsed_s: float
    num_steps: int


def warm_up(core: EngineCore, requests: Sequence[RequestSpec]) -> None:
    """Send ``requests`` at once and run them to their end, recording nothing: what a client
    sends before a cell (raybench's warm-up, the seed client's test prompt). The prefix cache
    keeps what they computed, as the server's does."""
    if core.has_work():
        raise ValueError("warm_up: the engine core still has work")
    for i, spec in enumerate(requests):
        core.add_request(i, spec.prompt_tokens, spec.output_tokens, segments=spec.segments)
    while core.has_work():
        if core.step() is None:  # cannot happen: add_request rejected what never fits
            raise RuntimeError("warm-up stalled with work left")


def simulate(cost: CostModel, requests: Sequence[RequestSpec], *, concurrency: int,
             rate_per_s: float = math.inf, tokens_per_chunk: int = 1,
             on_step: Callable[[StepResult], None] | None = None, core: EngineCore | None = None,
             arrivals_s: Sequence[float] | None = None, slot_opens_s: Sequence[float] | None = None,
             gather_s: float = 0.0, think_s: float = 0.0, refuse: bool = False) -> Trace:
    """Run the closed loop to its end; raises KvCapacityError if one request can never fit,
    unless ``refuse``: then the server answers it at once with that error, as over HTTP, and
    the closed loop goes on (its slot frees; a conversation's next turn follows it).

    Output lengths are forced (ignore_eos), as raybench's load generator forces them.
    ``arrivals_s``: each request's release in seconds from the start, as the run's schedule has
    it (a Poisson or gamma process, a ramp, a trace's own times), instead of one every
    1 / ``rate_per_s``; requests go out in order of release. ``slot_opens_s``: when each of the
    ``concurrency`` slots opens (a concurrency ramp); default: all at the start. ``gather_s``:
    an idle engine woken by a request starts its step this much later, with whatever else arrived
    by then (the real-time simulator's ``IDLE_GATHER_S``, which keeps a burst sent over a few ms
    in one step). A request with ``after`` (a conversation's later turn) goes ``think_s`` after
    that request's answer ended, on its slot: a slot is busy from a conversation's first send to
    its last answer, and ``arrivals_s`` time only the requests that follow none.
    ``on_step``: called with every engine step, in order (request ids are indices into
    ``requests``); pure-decode spans then run step by step too, so every token's step is seen.
    ``core``: an engine core over ``cost`` with no work left, whose prefix cache earlier cells
    and a warm-up filled (one server's cells in a row); the trace and its regimes are this
    run's alone.
    """
    n = len(requests)
    if n < 1 or concurrency < 1:
        raise ValueError(f"requests={n}, concurrency={concurrency}: expected both >= 1")
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s={rate_per_s!r}: expected > 0 (inf: all at once)")
    successor = _chains(requests)
    starts = [i for i, r in enumerate(requests) if r.after < 0]
    if arrivals_s is None:
        interval_s = 0.0 if math.isinf(rate_per_s) else 1.0 / rate_per_s
        arrivals = [i * interval_s for i in range(len(starts))]
        order = starts
    else:
        release = _seconds("arrivals_s", arrivals_s, n)[starts]
        order = [starts[i] for i in np.argsort(release, kind="stable").tolist()]
        arrivals = np.sort(release, kind="stable").tolist()
    for name, value in (("think_s", think_s), ("gather_s", gather_s)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value!r}: expected finite seconds >= 0")
    n_starts = len(starts)
    slots = min(concurrency, n_starts)
    opens = [0.0] * slots if slot_opens_s is None else sorted(_seconds("slot_opens_s", slot_opens_s, concurrency))
    if core is None:
        core = EngineCore(cost, tokens_per_chunk)
    elif core.cost is not cost or core.has_work() or core.tokens_per_chunk != tokens_per_chunk:
        raise ValueError("simulate: core must run the same cost model and tokens_per_chunk, with no work left")
    core.start_run()
    start_cached = core.prefix_cache.tokens
    width = len(FEATURES) + 1
    cum = [0.0] * width
    sent = np.zeros((n, width))
    due = np.zeros((n, width))
    due[order, -1] = arrivals  # a later turn's is its answer's end plus the think time, set below
    first = np.zeros((n, width))
    done = np.zeros((n, width))
    cached = np.zeros(n, dtype=np.int64)
    refused: dict[int, str] = {}
    coef = cost.coefficients
    now_s = 0.0
    steps = 0
    next_req = 0  # position in ``order``
    in_flight = 0  # slots busy: a conversation holds one between its turns
    ready: list[tuple[float, int]] = []  # (release, request): later turns, due think_s after an answer

    def release_s() -> float:
        """When the next request may go: its arrival, and a slot open for it."""
        return max(arrivals[next_req], opens[in_flight])

    def next_release_s() -> float:
        """When anything may go next: a later turn, or a new request into a free slot."""
        turn = ready[0][0] if ready else math.inf
        return min(turn, release_s()) if in_flight < slots and next_req < n_starts else turn

    def send(req: int, release: float, t: float, freed_at: float, at_free: Sequence[float]) -> None:
        nonlocal in_flight
        spec = requests[req]
        if release <= freed_at:
            # as features, not seconds: the trace then holds under any profile's coefficients
            sent[req] = at_free
        else:  # it went out mid-step, at its release (the engine sees it at the step's end)
            sent[req] = cum
            sent[req, -1] -= t - release
        try:
            core.add_request(req, spec.prompt_tokens, spec.output_tokens, segments=spec.segments)
        except KvCapacityError as err:
            if not refuse:
                raise
            refused[req] = str(err)
            first[req] = done[req] = sent[req]
            if req in successor:  # the conversation goes on after the error, as the run's does
                nxt = successor[req]
                due[nxt] = sent[req]
                due[nxt, -1] += think_s
                heapq.heappush(ready, (max(release, freed_at) + think_s, nxt))
            else:
                in_flight -= 1

    def send_until(t: float, freed_at: float, at_free: Sequence[float]) -> None:
        """Send what has arrived by ``t``; a request is sent at its release or when a slot freed
        (``freed_at``, when the features summed to ``at_free``). A refused request frees its
        slot, or readies its conversation's next turn, at once: so round again until none goes."""
        nonlocal next_req, in_flight
        progress = True
        while progress:
            progress = False
            while ready and ready[0][0] <= t:
                release, req = heapq.heappop(ready)
                send(req, release, t, freed_at, at_free)
                progress = True
            while in_flight < slots and next_req < n_starts and release_s() <= t:
                req, release = order[next_req], release_s()
                next_req += 1
                in_flight += 1
                send(req, release, t, freed_at, at_free)
                progress = True

    def add(feats) -> float:
        for i, f in enumerate(feats):
            cum[i] += f
        return sum(c * f for c, f in zip(coef, feats))

    while True:
        if not core.has_work():
            if next_req == n_starts and not ready:
                break
            release = next_release_s()
            if release > now_s:
                cum[-1] += release - now_s
                now_s = release
            send_until(now_s, now_s, cum)
            if gather_s > 0:
                start_s, start = now_s, list(cum)
                cum[-1] += gather_s
                now_s += gather_s
                send_until(now_s, start_s, start)
            continue
        wait_s = max(0.0, next_release_s() - now_s)
        span = core.fast_forward_decode(wait_s, emissions=False) if wait_s > 0 and on_step is None else None
        if span is not None:
            start_s, start = now_s, list(cum)
            now_s += add(span.features)
            steps += span.steps
            send_until(now_s, start_s, start)
            continue
        result = core.step()
        if result is None:  # cannot happen: add_request rejected what never fits
            raise RuntimeError("closed loop stalled with work left")
        start_s, start = now_s, list(cum)
        now_s += add(result.features)
        steps += 1
        if on_step is not None:
            on_step(result)
        finished, turns = 0, []
        for e in result.emissions:
            if e.total_tokens == e.new_tokens:
                first[e.req_id] = cum
                cached[e.req_id] = e.cached_tokens
            if e.finished:
                done[e.req_id] = cum
                if e.req_id in successor:
                    turns.append(successor[e.req_id])
                else:
                    finished += 1
        send_until(now_s, start_s, start)  # sent during this step: they join the next one
        # slots freed, answers ended at this step's end: what follows goes while the next step runs
        in_flight -= finished
        for req in turns:
            heapq.heappush(ready, (now_s + think_s, req))
            due[req] = cum
            due[req, -1] += think_s
    return Trace(sent=sent, first=first, done=done, cached_tokens=cached,
                 prompt_tokens=np.array([r.prompt_tokens for r in requests]),
                 output_tokens=np.array([r.output_tokens for r in requests]), num_steps=steps,
                 kv_limited=core.kv_limited, regimes=core.regimes(), start_cached_tokens=start_cached, due=due,
                 refused=refused)


def _chains(requests: Sequence[RequestSpec]) -> dict[int, int]:
    """request -> the request that waits for its answer; ValueError unless each waits on one earlier."""
    successor: dict[int, int] = {}
    for i, spec in enumerate(requests):
        if spec.after < 0:
            continue
        if spec.after >= i or spec.after in successor:
            raise ValueError(f"request {i}: after={spec.after}: expected an earlier request no other one follows")
        successor[spec.after] = i
    return successor


def _seconds(name: str, values: Sequence[float], count: int) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    if out.shape != (count,) or not (np.isfinite(out).all() and (out >= 0).all()):
        raise ValueError(f"{name}: expected {count} finite seconds >= 0, got shape {out.shape}")
    return out


def closed_loop(cost: CostModel, *, num_requests: int, prompt_tokens: int, output_tokens: int, concurrency: int,
                rate_per_s: float = math.inf, tokens_per_chunk: int = 1) -> ClosedLoopResult:
    """N equal requests through ``simulate``: the elapsed virtual seconds and steps."""
    for name, value in (("num_requests", num_requests), ("prompt_tokens", prompt_tokens),
                        ("output_tokens", output_tokens), ("concurrency", concurrency)):
        if value < 1:
            raise ValueError(f"{name}={value!r}: expected an integer >= 1")
    spec = RequestSpec(prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    trace = simulate(cost, [spec] * num_requests, concurrency=concurrency, rate_per_s=rate_per_s,
                     tokens_per_chunk=tokens_per_chunk)
    _, _, done = trace.times_s(cost.coefficients)
    return ClosedLoopResult(elapsed_s=float(done.max()), num_steps=trace.num_steps)
