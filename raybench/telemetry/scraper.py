"""The server-metrics scraper as a Ray actor, and the driver's handle on it for one cell.

The actor runs ``ScrapeLoop`` against the backend's /metrics, re-exports the common columns
as Ray gauges (``raybench_server_*``, so Grafana shows every backend under one name), and
hands the timeline back when the cell ends. It asks for no CPU and prefers the driver's node,
where a loopback URL (the simulator, a server started by this driver) is reachable.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raybench.telemetry import catalog
from raybench.telemetry.ray_sink import RayMetricsSink
from raybench.telemetry.server_metrics import ScrapeLoop, ServerTimeline

log = logging.getLogger(__name__)

_FETCH_TIMEOUT_S = 0.9
_READY_TIMEOUT_S = 120.0
_MAX_BODY_BYTES = 32 << 20  # a vLLM /metrics with many histograms is a few hundred kB


def http_fetcher(url: str, timeout_s: float = _FETCH_TIMEOUT_S) -> Callable[[], str]:
    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.read(_MAX_BODY_BYTES).decode("utf-8", "replace")

    return fetch


class _ScraperActor:
    def __init__(self, metrics_url: str, cell_id: str, labels: Mapping[str, str], interval_s: float) -> None:
        self._loop = ScrapeLoop(
            fetch=http_fetcher(metrics_url), timeline=ServerTimeline(cell_id),
            sink=RayMetricsSink(catalog.SERVER_METRIC_NAMES), labels={**labels, "cell": cell_id}, interval_s=interval_s,
        )

    def begin(self) -> None:
        """Start scraping: a row now, then one per interval."""
        self._loop.start()

    def clock_ns(self) -> int:
        return time.perf_counter_ns()

    def stop(self, offset_ns: int) -> pa.Table:
        """Stop scraping; the timeline, times moved to the run's base (``t_run = t_here - offset``)."""
        self._loop.stop()
        return self._loop.timeline.table(offset_ns)


ScraperActor = ray.remote(_ScraperActor)


class ServerMetricsRecording:
    """Scrapes ``base_url``/metrics while the ``with`` block runs; then ``table`` holds the timeline.

    ``anchor`` estimates the actor's clock offset from a function reading its clock (the
    load generators' ``estimate_anchor``): rows are moved onto the run's time base with it.
    A scraper that fails costs its timeline, never the cell.
    """

    def __init__(
        self,
        *,
        base_url: str,
        cell_id: str,
        labels: Mapping[str, str],
        anchor: Callable[[Callable[[], int]], Any],
        interval_s: float = 1.0,
    ) -> None:
        self._args = (base_url.rstrip("/") + "/metrics", cell_id, dict(labels), interval_s)
        self._anchor = anchor
        self._cell_id = cell_id
        self._handle: ray.actor.ActorHandle | None = None
        self.table: pa.Table | None = None

    def start(self) -> None:
        """Create the actor without waiting for it: call early (before the warm-up), so its
        process has started, and stopped costing CPU, before the cell's first request."""
        if self._handle is None:
            here = ray.get_runtime_context().get_node_id()
            self._handle = ScraperActor.options(
                name=f"raybench:{self._cell_id}:server-metrics", num_cpus=0, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=True),
            ).remote(*self._args)

    def cancel(self) -> None:
        """Stop a scraper whose cell ends before its ``with`` block (a failed warm-up): no timeline.

        Its actor is named after the cell, and the name stays taken while anything (a traceback
        the driver keeps) holds the handle; a later run of the same cell id would then be refused.
        """
        handle, self._handle = self._handle, None
        if handle is not None:
            ray.kill(handle, no_restart=True)

    def __enter__(self) -> ServerMetricsRecording:
        """Start (if not yet) and wait until the scraper is scraping; rows begin here."""
        self.start()
        try:
            ray.get(self._handle.begin.remote(), timeout=_READY_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - the cell runs without a server timeline
            log.warning("server metrics of cell %s are off: the scraper did not start: %s", self._cell_id, err)
            ray.kill(self._handle, no_restart=True)
            self._handle = None
        return self

    def __exit__(self, *exc: object) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            offset_ns = self._anchor(lambda: ray.get(handle.clock_ns.remote(), timeout=60)).offset_ns
            self.table = ray.get(handle.stop.remote(offset_ns), timeout=60)
        except Exception as err:  # noqa: BLE001 - the cell's own results matter more
            log.warning("server metrics of cell %s are lost: %s", self._cell_id, err)
        finally:
            ray.kill(handle, no_restart=True)
