"""``LoadGenPool``: one cell's requests and concurrency spread over N load-generator actors.

The driver polls every actor about once a second and writes whatever rows came back (durably,
one part per poll round), so memory stays bounded however long the cell runs and a lost actor
costs at most the rows it had not yet handed over; its unsent requests go on on a replacement. Actors are named ``raybench:<cell>:<i>`` for the Ray dashboard, take a
fraction of a CPU, and go to nodes with a ``client`` resource when the cluster has any.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from raybench.errors import RunError
from raybench.loadgen.actor import LoadGenActor
from raybench.loadgen.arrivals import split_concurrency, split_workload
from raybench.loadgen.client import ClientConfig
from raybench.loadgen.clock import ClockAnchor, ClockDrift, estimate_anchors
from raybench.loadgen.generator import Progress, SelfCheck
from raybench.loadgen.recovery import arrival_order, leftover, lost_rows
from raybench.loadgen.worker import PollResult, ShardTask
from raybench.telemetry.client_metrics import merge_counts
from raybench.workloads.base import ShardableWorkload, Workload

log = logging.getLogger(__name__)

CLIENT_RESOURCE = "client"
_START_SLACK_S = 0.2  # lets every actor's "go" land before the common start time
_CALL_TIMEOUT_S = 60.0
_ANCHOR_TIMEOUT_S = 10.0  # a clock read is instant; an actor that takes this long is not answering
_WAIT_REPORT_S = 5.0  # the progress display's pace
_START_PLACE_S = _CALL_TIMEOUT_S * 5  # a cell's actors may wait this long for room before it starts
# a replacement is placed while the other actors wait to be polled (their rows pile up, the
# progress stands still): it gets this long to find room, not the cell's start-up allowance
_REPLACE_PLACE_S = 30.0


class BatchSink(Protocol):
    """Where rows go: ``flush`` after each poll round makes what arrived durable."""

    def write_requests(self, batch: pa.RecordBatch) -> None: ...
    def write_chunks(self, batch: pa.RecordBatch) -> None: ...
    def flush(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ActorReport:
    name: str
    node: str
    num_requests: int
    concurrency: int
    clock_offset_ns: int
    clock_rtt_ns: int
    clock: ClockDrift | None = None  # the anchors before and after the cell
    self_check: SelfCheck | None = None
    lost: bool = False
    error: str | None = None
    replaced_by: str | None = None  # the actor that took over its unsent requests


@dataclass(frozen=True, kw_only=True)
class PoolResult:
    actors: tuple[ActorReport, ...]
    timed_out: bool
    t_start_ns: int  # driver time base
    # requests no actor will ever send: lost actors beyond max_replacements
    abandoned_requests: int = 0

    @property
    def lost_actors(self) -> tuple[ActorReport, ...]:
        return tuple(a for a in self.actors if a.lost)

    def why_missing(self) -> str | None:
        """What the pool knows about requests without a row (for the cell's outcome)."""
        reasons = []
        unreplaced = [a.name for a in self.lost_actors if a.replaced_by is None]
        if unreplaced:
            reasons.append(f"load generators lost and not replaced: {', '.join(unreplaced)}")
        if self.timed_out:
            reasons.append("the cell passed its time limit before every request was sent")
        return "; ".join(reasons) or None


@dataclass
class _Member:
    name: str
    handle: ray.actor.ActorHandle
    ready: ray.ObjectRef | None = None  # the answer to ready(): the actor's node
    node: str = ""
    anchor: ClockAnchor = ClockAnchor(offset_ns=0, rtt_ns=0)
    anchor_after: ClockAnchor | None = None
    ids: tuple[int, ...] = ()  # in the order the actor sends them
    concurrency: int = 0
    recorded: set[int] = field(default_factory=set)
    progress: Progress | None = None
    self_check: SelfCheck | None = None
    finished: bool = False
    lost: bool = False
    error: str | None = None
    replaced_by: str | None = None

    @property
    def num_requests(self) -> int:
        return len(self.ids)

    @property
    def live(self) -> bool:
        return not (self.finished or self.lost)


@dataclass
class _Cell:
    """What one ``run`` works on; lives only for that call."""

    client: ClientConfig
    workload: Workload
    arrivals_s: np.ndarray
    sink: BatchSink
    t_start_ns: int = 0
    replacements_left: int = 0
    abandoned: int = 0


def placement_options() -> dict:
    """Ray options that put load generators on client nodes when the cluster declares any."""
    options: dict = {"scheduling_strategy": "SPREAD"}
    if ray.cluster_resources().get(CLIENT_RESOURCE, 0) > 0:
        options["resources"] = {CLIENT_RESOURCE: 0.001}
    return options


class LoadGenPool:
    """Runs one cell over N actors; a lost actor is replaced and its unsent requests go on.

    An actor is lost when its process dies (a poll raises ``RayActorError``) or when it stops
    answering (no poll reply within ``call_timeout_s``): then it is killed first, so it cannot go
    on sending requests whose rows nobody reads. Its requests in flight become ``disconnected``
    rows and the rest run on a replacement (at most ``max_replacements`` per cell, default one
    per actor); what no actor will send stays without a row and the cell is incomplete.
    """

    def __init__(
        self,
        *,
        cell_id: str,
        num_actors: int,
        num_cpus_per_actor: float = 0.25,
        poll_interval_s: float = 1.0,
        labels: Mapping[str, str] | None = None,
        max_replacements: int | None = None,
        call_timeout_s: float = _CALL_TIMEOUT_S,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        if num_actors < 1:
            raise RunError(f"num_actors={num_actors} is not allowed: at least 1")
        if max_replacements is not None and max_replacements < 0:
            raise RunError(f"max_replacements={max_replacements} is not allowed: 0 or more")
        self.cell_id = cell_id
        # tags on the actors' live metrics (experiment, backend, hardware); cell is always set
        self.labels = {**(labels or {}), "cell": cell_id}
        self.num_actors = num_actors
        self.num_cpus_per_actor = num_cpus_per_actor
        self.poll_interval_s = poll_interval_s
        self.max_replacements = num_actors if max_replacements is None else max_replacements
        self.call_timeout_s = call_timeout_s
        self._started = 0
        self._early: list[_Member] | None = None  # created by start(), placed by run()
        # told every few seconds while actors wait for room: no wait without feedback
        self.on_wait = on_wait or (lambda line: log.warning("%s", line))

    def start(self) -> None:
        """Create the cell's actors without waiting for them: call early (before the warm-up), so
        their processes start while the server warms up, not after it; ``run`` waits for them."""
        if self._early is None:
            self._early = self._create(self.num_actors)

    def cancel(self) -> None:
        """Kill the actors ``start`` created for a cell that will not run (a failed warm-up)."""
        early, self._early = self._early, None
        for m in early or ():
            ray.kill(m.handle, no_restart=True)

    def run(
        self,
        *,
        client: ClientConfig,
        workload: Workload,
        arrivals_s: np.ndarray,
        concurrency: int,
        sink: BatchSink,
        timeout_s: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        slot_starts_s: np.ndarray | None = None,
    ) -> PoolResult:
        cell = _Cell(client=client, workload=workload, arrivals_s=np.asarray(arrivals_s, dtype=np.float64),
                     sink=sink, replacements_left=self.max_replacements)
        early, self._early = self._early, None
        members = self._place(early, _START_PLACE_S) if early is not None else self._start_actors(self.num_actors)
        timed_out = False
        try:
            self._anchor(members)
            n = len(members)
            shards = split_workload(workload, n)  # a session's turns stay on one actor
            slots = split_concurrency(concurrency, n)
            # a ramped cap's slots dealt round-robin in opening order, so every actor ramps alike
            opens = np.sort(np.asarray(slot_starts_s if slot_starts_s is not None else [], dtype=np.float64))
            self._prepare(cell, [(m, list(ids), slot, tuple(opens[k::n].tolist()))
                                 for k, (m, ids, slot) in enumerate(zip(members, shards, slots))])
            cell.t_start_ns = time.perf_counter_ns() + int(_START_SLACK_S * 1e9)
            ray.get([m.handle.go.remote(cell.t_start_ns) for m in members], timeout=self.call_timeout_s)
            deadline = None if timeout_s is None else time.monotonic() + _START_SLACK_S + timeout_s
            try:
                while any(m.live for m in members):
                    self._poll(cell, members, wait_s=self.poll_interval_s)
                    if on_progress is not None:
                        on_progress(_total_progress(members, workload.num_requests))
                    if deadline is not None and time.monotonic() > deadline:
                        timed_out = True
                        log.warning("cell %s passed its %s s limit: stopping", self.cell_id, timeout_s)
                        break
            finally:
                # on a deadline, Ctrl-C or an error: cancel what is in flight and keep its rows
                self._stop_and_drain(cell, members)
            self._anchor(members, after=True)
        except GetTimeoutError:  # a stuck actor is one line, not a traceback from Ray
            raise RunError(f"cell {self.cell_id}: the load generators did not answer within {self.call_timeout_s:g} s "
                           "(an overloaded or lost client node?); the cell is not complete: --resume runs it again") from None
        finally:
            for m in members:
                ray.kill(m.handle, no_restart=True)
        return PoolResult(actors=tuple(_report(m) for m in members), timed_out=timed_out,
                          t_start_ns=cell.t_start_ns, abandoned_requests=cell.abandoned)

    def _start_actors(self, n: int, *, place_limit_s: float = _START_PLACE_S) -> list[_Member]:
        return self._place(self._create(n), place_limit_s)

    def _create(self, n: int) -> list[_Member]:
        options = placement_options()
        members = []
        for _ in range(n):
            name = f"raybench:{self.cell_id}:{self._started}"
            self._started += 1
            handle = LoadGenActor.options(
                name=name, num_cpus=self.num_cpus_per_actor, max_restarts=0, **options
            ).remote(name, self.labels)
            members.append(_Member(name=name, handle=handle, ready=handle.ready.remote()))
        return members

    def _place(self, members: list[_Member], limit_s: float) -> list[_Member]:
        """``members`` once every one has started (its node known)."""
        try:
            nodes = _wait_placed(self.cell_id, [m.ready for m in members], self.on_wait, limit_s=limit_s)
        except BaseException:
            for m in members:  # none is left holding a CPU share
                ray.kill(m.handle, no_restart=True)
            raise
        for m, node in zip(members, nodes):
            m.node = node
        return members

    def _anchor(self, members: list[_Member], *, after: bool = False) -> None:
        """Anchor every live actor's clock at once: before the cell, and ``after`` it."""
        live = [m for m in members if not m.lost]
        readers = [lambda h=m.handle: ray.get(h.clock_ns.remote(), timeout=_ANCHOR_TIMEOUT_S) for m in live]
        for m, anchor in zip(live, estimate_anchors(readers)):
            if isinstance(anchor, BaseException):
                if not after:
                    raise RunError(f"cannot read the clock of load generator {m.name}: {anchor!r}") from anchor
                log.warning("load generator %s: no clock anchor after the cell (%r)", m.name, anchor)
            elif after:
                m.anchor_after = anchor
            else:
                m.anchor = anchor

    def _prepare(self, cell: _Cell, shares: list[tuple[_Member, list[int], int, tuple[float, ...]]]) -> None:
        """Hand each actor its requests, slots and (a ramped cap) its slots' opening times."""
        refs = []
        for m, ids, slot, opens in shares:
            arrivals = cell.arrivals_s[ids]
            m.ids, m.concurrency = arrival_order(ids, arrivals), slot
            # a file's records travel only to the actor that sends them
            workload = cell.workload.shard(ids) if isinstance(cell.workload, ShardableWorkload) else cell.workload
            task = ShardTask(cell_id=self.cell_id, client=cell.client, workload=workload, request_ids=tuple(ids),
                             arrivals_s=arrivals, concurrency=slot, slot_starts_s=opens)
            refs.append(m.handle.prepare.remote(task, m.anchor.offset_ns))
        ray.get(refs, timeout=self.call_timeout_s * 5)

    def _poll(self, cell: _Cell, members: list[_Member], wait_s: float = 0.0) -> None:
        live = [m for m in members if m.live]
        refs = [m.handle.poll.remote(wait_s) for m in live]
        lost = []
        for m, ref in zip(live, refs):
            try:
                result: PollResult = ray.get(ref, timeout=self.call_timeout_s + wait_s)
            except RayActorError as err:
                lost.append((m, f"its process died: {type(err).__name__}"))
                continue
            except GetTimeoutError:
                # killed before it is given up: it must not go on sending requests nobody records
                ray.kill(m.handle, no_restart=True)
                lost.append((m, f"no answer to a poll within {self.call_timeout_s:g} s: killed"))
                continue
            if result.requests is not None:
                m.recorded.update(result.requests.column("request_id").to_pylist())
            _deliver(result, cell.sink)
            m.progress, m.finished, m.error = result.progress, result.finished, result.error
            if result.self_check is not None:
                m.self_check = result.self_check
        for m, why in lost:
            members.extend(self._recover(cell, m, why))
        cell.sink.flush()

    def _recover(self, cell: _Cell, m: _Member, why: str) -> list[_Member]:
        """Rows for what the lost actor had in flight; a replacement for what it never sent."""
        m.lost, m.error = True, f"actor lost: {why}"
        sent = m.progress.sent if m.progress is not None else 0
        rest = leftover(m.ids, sent, m.recorded)
        log.error("load generator %s on node %s was lost (%s): %d requests in flight recorded as disconnected, "
                  "%d unsent", m.name, m.node, why, len(rest.in_flight), len(rest.unsent))
        if rest.in_flight:
            t_scheduled = [cell.t_start_ns + int(cell.arrivals_s[i] * 1e9) for i in rest.in_flight]
            cell.sink.write_requests(lost_rows(
                cell_id=self.cell_id, actor=m.name, node=m.node, workload=cell.workload, request_ids=rest.in_flight,
                t_scheduled_ns=t_scheduled, t_lost_ns=time.perf_counter_ns(), why=why))
            m.recorded.update(rest.in_flight)
        if not rest.unsent:
            return []
        new = self._replace(cell, m, rest.unsent)
        if new is None:
            cell.abandoned += len(rest.unsent)
            log.error("cell %s: nothing took over from %s; %d requests will have no row",
                      self.cell_id, m.name, len(rest.unsent))
            return []
        m.replaced_by = new.name
        log.warning("cell %s: %s took over the %d unsent requests of %s", self.cell_id, new.name,
                    len(rest.unsent), m.name)
        return [new]

    def _replace(self, cell: _Cell, m: _Member, unsent: tuple[int, ...]) -> _Member | None:
        """A new actor sending ``unsent`` on the cell's schedule; None when none is left or it fails."""
        if cell.replacements_left <= 0:
            return None
        cell.replacements_left -= 1
        try:
            (new,) = self._start_actors(1, place_limit_s=_REPLACE_PLACE_S)
        except (RayActorError, GetTimeoutError, RunError) as err:  # RunError: no room on the cluster in time
            log.error("cell %s: the replacement for %s did not start: %s", self.cell_id, m.name, err)
            return None
        try:
            self._anchor([new])
            self._prepare(cell, [(new, list(unsent), min(m.concurrency, len(unsent)), ())])
            ray.get(new.handle.go.remote(cell.t_start_ns), timeout=self.call_timeout_s)
        except (RayActorError, GetTimeoutError, RunError) as err:
            ray.kill(new.handle, no_restart=True)
            log.error("cell %s: the replacement for %s failed before sending: %s", self.cell_id, m.name, err)
            return None
        return new

    def _stop_and_drain(self, cell: _Cell, members: list[_Member]) -> None:
        live = [m for m in members if m.live]
        if not live:
            return
        try:
            ray.get([m.handle.stop.remote() for m in live], timeout=self.call_timeout_s)
        except (RayActorError, GetTimeoutError):
            pass
        cell.replacements_left = 0  # stopping: nothing more is sent
        self._poll(cell, members)


def _wait_placed(cell_id: str, refs: list, on_wait: Callable[[str], None], *,
                 limit_s: float = _START_PLACE_S, every_s: float = _WAIT_REPORT_S) -> list:
    """The actors' ``ready()`` answers; a line every ``every_s`` while some wait for room, a RunError at ``limit_s``."""
    t0 = time.monotonic()
    while True:
        ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=every_s)
        if not waiting:
            return ray.get(refs)
        waited_s = time.monotonic() - t0
        free = ray.available_resources().get("CPU", 0.0)
        if waited_s >= limit_s:
            raise RunError(f"cell {cell_id}: {len(waiting)} of {len(refs)} load-generator actors found no room in "
                           f"{waited_s:.0f} s ({free:g} CPUs free): other Ray jobs hold the CPUs; run again with "
                           "fewer --actors or lower concurrency, or add client nodes")
        on_wait(f"  cell {cell_id}: {len(ready)} of {len(refs)} load-generator actors placed after "
                f"{waited_s:.0f} s ({free:g} CPUs free); waiting up to {limit_s:.0f} s")


def _deliver(result: PollResult, sink: BatchSink) -> None:
    if result.chunks is not None:
        sink.write_chunks(result.chunks)
    if result.requests is not None:
        sink.write_requests(result.requests)


def _total_progress(members: list[_Member], total: int) -> Progress:
    """The cell's progress; a lost actor counts the rows it left (a replacement sends the rest)."""
    snaps = [m.progress for m in members if m.progress is not None]
    return Progress(
        total=total,
        sent=sum(len(m.recorded) if m.lost else m.progress.sent for m in members if m.progress is not None),
        done=sum(len(m.recorded) if m.lost else m.progress.done for m in members if m.progress is not None),
        failed=sum(p.failed for p in snaps),
        in_flight=sum(m.progress.in_flight for m in members if m.progress is not None and m.live),
        output_tokens=sum(p.output_tokens for p in snaps),
        loop_lag_ms=max((p.loop_lag_ms for p in snaps), default=0.0),
        ttft_ms_counts=merge_counts([p.ttft_ms_counts for p in snaps]),
        longest_silence_ms=max((p.longest_silence_ms for p in snaps), default=0.0),
    )


def _report(m: _Member) -> ActorReport:
    return ActorReport(
        name=m.name,
        node=m.node,
        num_requests=m.num_requests,
        concurrency=m.concurrency,
        clock_offset_ns=m.anchor.offset_ns,
        clock_rtt_ns=m.anchor.rtt_ns,
        clock=ClockDrift(before=m.anchor, after=m.anchor_after),
        self_check=m.self_check,
        lost=m.lost,
        error=m.error,
        replaced_by=m.replaced_by,
    )
