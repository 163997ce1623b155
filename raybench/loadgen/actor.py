"""``LoadGenActor``: the Ray face of ``LoadGenWorker``, made once at module level.

Besides handing rows to the driver, each poll feeds the rows it drained to the actor's live
Ray metrics (telemetry.ClientMetrics), off the generator's loop, and adds the TTFT histogram
so far to the progress snapshot for the terminal display.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping

import ray

from raybench.loadgen.worker import LoadGenWorker, PollResult, ShardTask
from raybench.priority import run_at_normal_priority
from raybench.telemetry import catalog
from raybench.telemetry.client_metrics import ClientMetrics
from raybench.telemetry.ray_sink import RayMetricsSink

# The generator's loop thread shares the GIL with this actor's own threads (answering polls,
# building Arrow batches, live metrics); at Python's default 5 ms a time stamp could wait that
# long for the GIL while another thread runs.
_GIL_SWITCH_INTERVAL_S = 0.0005


class _LoadGenActor(LoadGenWorker):
    def __init__(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
        run_at_normal_priority()
        super().__init__(name=name, node=ray.get_runtime_context().get_node_id())
        sink = RayMetricsSink(catalog.CLIENT_METRIC_NAMES)
        self._metrics = ClientMetrics(sink, {**(labels or {}), "actor": name})

    def ready(self) -> str:
        """The node the actor landed on (its Ray node id)."""
        return self.node

    def prepare(self, task: ShardTask, offset_ns: int) -> int:
        count = super().prepare(task, offset_ns)
        # the metrics' first use (numpy paths, Ray's metric export) before the clock starts;
        # a throwaway ClientMetrics, so the made-up rows are counted nowhere
        requests, chunks = self.warm_batches
        ClientMetrics(_NullSink(), {}).record(requests, chunks, in_flight=0, output_tokens=0, loop_lag_ms=0.0)
        self._metrics.record(None, None, in_flight=0, output_tokens=0, loop_lag_ms=0.0)
        return count

    def poll(self, wait_s: float = 0.0) -> PollResult:
        result = super().poll(wait_s)
        p = result.progress
        self._metrics.record(
            result.requests, result.chunks,
            in_flight=p.in_flight, output_tokens=p.output_tokens, loop_lag_ms=p.loop_lag_ms,
        )
        progress = dataclasses.replace(p, ttft_ms_counts=self._metrics.ttft_ms_counts())
        return dataclasses.replace(result, progress=progress)


class _NullSink:
    def set_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        pass

    def inc_counter(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        pass


LoadGenActor = ray.remote(_LoadGenActor)
