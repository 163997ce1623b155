"""``LoadGenPool``: one cell's requests and concurrency spread over N load-generator actors.

The driver polls every actor about once a second and writes whatever rows came back, so
memory stays bounded however long the cell runs and a lost actor costs at most the rows it
had not yet handed over. Actors are named ``raybench:<cell>:<i>`` for the Ray dashboard, take a
fraction of a CPU, and go to nodes with a ``client`` resource when the cluster has any.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from raybench.errors import RunError
from raybench.loadgen.actor import LoadGenActor
from raybench.loadgen.arrivals import split_concurrency, split_workload
from raybench.loadgen.client import ClientConfig
from raybench.loadgen.clock import ClockAnchor, estimate_anchor
from raybench.loadgen.generator import Progress, SelfCheck
from raybench.loadgen.worker import PollResult, ShardTask
from raybench.telemetry.client_metrics import merge_counts
from raybench.workloads.base import ShardableWorkload, Workload

log = logging.getLogger(__name__)

CLIENT_RESOURCE = "client"
_START_SLACK_S = 0.2  # lets every actor's "go" land before the common start time
_CALL_TIMEOUT_S = 60.0


class BatchSink(Protocol):
    def write_requests(self, batch: pa.RecordBatch) -> None: ...
    def write_chunks(self, batch: pa.RecordBatch) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ActorReport:
    name: str
    node: str
    num_requests: int
    concurrency: int
    clock_offset_ns: int
    clock_rtt_ns: int
    self_check: SelfCheck | None = None
    lost: bool = False
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class PoolResult:
    actors: tuple[ActorReport, ...]
    timed_out: bool
    t_start_ns: int  # driver time base

    @property
    def lost_actors(self) -> tuple[ActorReport, ...]:
        return tuple(a for a in self.actors if a.lost)


@dataclass
class _Member:
    name: str
    handle: ray.actor.ActorHandle
    node: str = ""
    anchor: ClockAnchor = ClockAnchor(offset_ns=0, rtt_ns=0)
    num_requests: int = 0
    concurrency: int = 0
    progress: Progress | None = None
    self_check: SelfCheck | None = None
    finished: bool = False
    lost: bool = False
    error: str | None = None


def placement_options() -> dict:
    """Ray options that put load generators on client nodes when the cluster declares any."""
    options: dict = {"scheduling_strategy": "SPREAD"}
    if ray.cluster_resources().get(CLIENT_RESOURCE, 0) > 0:
        options["resources"] = {CLIENT_RESOURCE: 0.001}
    return options


class LoadGenPool:
    def __init__(
        self,
        *,
        cell_id: str,
        num_actors: int,
        num_cpus_per_actor: float = 0.25,
        poll_interval_s: float = 1.0,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if num_actors < 1:
            raise RunError(f"num_actors={num_actors} is not allowed: at least 1")
        self.cell_id = cell_id
        # tags on the actors' live metrics (experiment, backend, hardware); cell is always set
        self.labels = {**(labels or {}), "cell": cell_id}
        self.num_actors = num_actors
        self.num_cpus_per_actor = num_cpus_per_actor
        self.poll_interval_s = poll_interval_s

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
        members = self._start_actors()
        timed_out = False
        t_start = 0
        try:
            self._prepare(members, client, workload, arrivals_s, concurrency, slot_starts_s)
            t_start = time.perf_counter_ns() + int(_START_SLACK_S * 1e9)
            ray.get([m.handle.go.remote(t_start) for m in members], timeout=_CALL_TIMEOUT_S)
            deadline = None if timeout_s is None else time.monotonic() + _START_SLACK_S + timeout_s
            try:
                while not all(m.finished or m.lost for m in members):
                    self._poll(members, sink, wait_s=self.poll_interval_s)
                    if on_progress is not None:
                        on_progress(_total_progress(members))
                    if deadline is not None and time.monotonic() > deadline:
                        timed_out = True
                        log.warning("cell %s passed its %s s limit: stopping", self.cell_id, timeout_s)
                        break
            finally:
                # on a deadline, Ctrl-C or an error: cancel what is in flight and keep its rows
                self._stop_and_drain(members, sink)
        finally:
            for m in members:
                ray.kill(m.handle, no_restart=True)
        return PoolResult(actors=tuple(_report(m) for m in members), timed_out=timed_out, t_start_ns=t_start)

    def _start_actors(self) -> list[_Member]:
        options = placement_options()
        members = []
        for i in range(self.num_actors):
            name = f"raybench:{self.cell_id}:{i}"
            handle = LoadGenActor.options(
                name=name, num_cpus=self.num_cpus_per_actor, max_restarts=0, **options
            ).remote(name, self.labels)
            members.append(_Member(name=name, handle=handle))
        nodes = ray.get([m.handle.ready.remote() for m in members], timeout=_CALL_TIMEOUT_S * 5)
        for m, node in zip(members, nodes):
            m.node = node
            m.anchor = estimate_anchor(lambda h=m.handle: ray.get(h.clock_ns.remote()))
        return members

    def _prepare(
        self,
        members: list[_Member],
        client: ClientConfig,
        workload: Workload,
        arrivals_s: np.ndarray,
        concurrency: int,
        slot_starts_s: np.ndarray | None = None,
    ) -> None:
        shards = split_workload(workload, len(members))
        slots = split_concurrency(concurrency, len(members))
        arrivals = np.asarray(arrivals_s, dtype=np.float64)
        # a ramped cap's slots dealt round-robin in opening order, so every actor ramps alike
        opens = np.sort(np.asarray(slot_starts_s if slot_starts_s is not None else [], dtype=np.float64))
        refs = []
        for k, (m, ids, slot) in enumerate(zip(members, shards, slots)):
            m.num_requests, m.concurrency = len(ids), slot
            task = ShardTask(
                cell_id=self.cell_id,
                client=client,
                # a file's records travel only to the actor that sends them
                workload=workload.shard(ids) if isinstance(workload, ShardableWorkload) else workload,
                request_ids=tuple(ids),
                arrivals_s=arrivals[list(ids)],
                concurrency=slot,
                slot_starts_s=tuple(opens[k::len(members)].tolist()),
            )
            refs.append(m.handle.prepare.remote(task, m.anchor.offset_ns))
        ray.get(refs, timeout=_CALL_TIMEOUT_S * 5)

    def _poll(self, members: list[_Member], sink: BatchSink, wait_s: float = 0.0) -> None:
        live = [m for m in members if not (m.finished or m.lost)]
        refs = [m.handle.poll.remote(wait_s) for m in live]
        for m, ref in zip(live, refs):
            try:
                result: PollResult = ray.get(ref, timeout=_CALL_TIMEOUT_S)
            except (RayActorError, GetTimeoutError) as err:
                m.lost, m.error = True, f"actor lost: {type(err).__name__}"
                log.error("load generator %s on node %s was lost; its unsent rows are gone", m.name, m.node)
                continue
            _deliver(result, sink)
            m.progress, m.finished, m.error = result.progress, result.finished, result.error
            if result.self_check is not None:
                m.self_check = result.self_check

    def _stop_and_drain(self, members: list[_Member], sink: BatchSink) -> None:
        live = [m for m in members if not (m.finished or m.lost)]
        if not live:
            return
        try:
            ray.get([m.handle.stop.remote() for m in live], timeout=_CALL_TIMEOUT_S)
        except (RayActorError, GetTimeoutError):
            pass
        self._poll(live, sink)


def _deliver(result: PollResult, sink: BatchSink) -> None:
    if result.chunks is not None:
        sink.write_chunks(result.chunks)
    if result.requests is not None:
        sink.write_requests(result.requests)


def _total_progress(members: list[_Member]) -> Progress:
    snaps = [m.progress for m in members if m.progress is not None]
    return Progress(
        total=sum(m.num_requests for m in members),
        sent=sum(p.sent for p in snaps),
        done=sum(p.done for p in snaps),
        failed=sum(p.failed for p in snaps),
        in_flight=sum(p.in_flight for p in snaps),
        output_tokens=sum(p.output_tokens for p in snaps),
        loop_lag_ms=max((p.loop_lag_ms for p in snaps), default=0.0),
        ttft_ms_counts=merge_counts([p.ttft_ms_counts for p in snaps]),
    )


def _report(m: _Member) -> ActorReport:
    return ActorReport(
        name=m.name,
        node=m.node,
        num_requests=m.num_requests,
        concurrency=m.concurrency,
        clock_offset_ns=m.anchor.offset_ns,
        clock_rtt_ns=m.anchor.rtt_ns,
        self_check=m.self_check,
        lost=m.lost,
        error=m.error,
    )
