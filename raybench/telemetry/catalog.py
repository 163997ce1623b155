"""Every metric raybench exports through Ray, in one place: names, kinds, tags, bucket edges.

The Ray adapter builds its ``ray.util.metrics`` objects from this list, the plain recorders
write to the names here, and the dashboard test checks dashboards/raybench.json against
``exported_names()``, so a renamed metric cannot leave a dead panel behind.

Ray prefixes application metrics with ``ray_`` when it serves them to Prometheus, and gives
counters a ``_total`` suffix: ``raybench_requests`` is scraped as ``ray_raybench_requests_total``.

Latency histograms are published as gauges named like the series of a Prometheus histogram
(``<name>_bucket`` with an ``le`` tag, ``<name>_count``, ``<name>_sum``), holding each actor's
cumulative counts. ``histogram_quantile`` reads them exactly as it reads a native histogram.
Why not ``ray.util.metrics.Histogram``: its ``observe`` takes one value per call, about 2 us
each (measured on Ray 2.60), and one actor sees 100k+ inter-token gaps per second; binning a
poll's gaps with numpy and setting ~35 gauges costs the same whatever the token rate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

RAY_PREFIX = "ray_"

#: tags on every load-generator series; hardware stays "" until the experiment names it
CLIENT_TAG_KEYS = ("experiment", "cell", "backend", "hardware", "actor")
#: tags on the server series the scraper re-exports (one scraper per cell, no actor tag)
SERVER_TAG_KEYS = ("experiment", "cell", "backend", "hardware")

#: bucket edges (ms) for TTFT and ITL: sub-millisecond gaps of a fast decode up to the
#: minutes a request can wait behind a 1024-deep queue; roughly 1-2-3-5 steps per decade
LATENCY_EDGES_MS = (
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0,
    200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 7500.0, 10000.0,
    15000.0, 20000.0, 30000.0, 60000.0, 120000.0, 300000.0, 600000.0,
)


class MetricKind(str, enum.Enum):
    COUNTER = "counter"  # only goes up; scraped with a _total suffix
    GAUGE = "gauge"  # the last value set


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """One metric as ``ray.util.metrics`` declares it (``name`` without Ray's prefix)."""

    name: str
    kind: MetricKind
    description: str
    tag_keys: tuple[str, ...]

    @property
    def exported_name(self) -> str:
        """The name Prometheus sees once Ray serves it."""
        suffix = "_total" if self.kind is MetricKind.COUNTER else ""
        return f"{RAY_PREFIX}{self.name}{suffix}"


def _histogram(name: str, what: str, tags: tuple[str, ...]) -> tuple[MetricSpec, ...]:
    return (
        MetricSpec(name=f"{name}_bucket", kind=MetricKind.GAUGE, tag_keys=(*tags, "le"),
                   description=f"{what}: cumulative count of values <= le (ms), per actor"),
        MetricSpec(name=f"{name}_count", kind=MetricKind.GAUGE, tag_keys=tags,
                   description=f"{what}: number of values so far, per actor"),
        MetricSpec(name=f"{name}_sum", kind=MetricKind.GAUGE, tag_keys=tags,
                   description=f"{what}: sum of values so far (ms), per actor"),
    )


REQUESTS_IN_FLIGHT = "raybench_requests_in_flight"
REQUESTS = "raybench_requests"
OUTPUT_TOKENS = "raybench_output_tokens"
LOOP_LAG_MS = "raybench_loop_lag_ms"
TTFT_MS = "raybench_ttft_ms"
ITL_MS = "raybench_itl_ms"
SERVER_RUNNING = "raybench_server_requests_running"
SERVER_WAITING = "raybench_server_requests_waiting"
SERVER_KV_USAGE = "raybench_server_kv_cache_usage"
SERVER_PREFIX_HIT_RATE = "raybench_server_prefix_cache_hit_rate"
SERVER_OUTPUT_TOKENS_PER_S = "raybench_server_output_tokens_per_s"

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(name=REQUESTS_IN_FLIGHT, kind=MetricKind.GAUGE, tag_keys=CLIENT_TAG_KEYS,
               description="Requests sent and not yet finished, per load-generator actor"),
    MetricSpec(name=REQUESTS, kind=MetricKind.COUNTER, tag_keys=(*CLIENT_TAG_KEYS, "status"),
               description="Finished requests by status (ok, http_error, timeout, disconnected, ...)"),
    MetricSpec(name=OUTPUT_TOKENS, kind=MetricKind.COUNTER, tag_keys=CLIENT_TAG_KEYS,
               description="Output tokens streamed to the client (server usage where sent)"),
    MetricSpec(name=LOOP_LAG_MS, kind=MetricKind.GAUGE, tag_keys=CLIENT_TAG_KEYS,
               description="Worst event-loop lag of the load generator over the last second (ms); "
                           "tens of ms mean the client, not the server, sets the latencies"),
    *_histogram(TTFT_MS, "Time to first token of successful requests", CLIENT_TAG_KEYS),
    *_histogram(ITL_MS, "Gap between consecutive token-bearing chunks of successful requests", CLIENT_TAG_KEYS),
    MetricSpec(name=SERVER_RUNNING, kind=MetricKind.GAUGE, tag_keys=SERVER_TAG_KEYS,
               description="Requests the server reports running (its own /metrics, scraped each second)"),
    MetricSpec(name=SERVER_WAITING, kind=MetricKind.GAUGE, tag_keys=SERVER_TAG_KEYS,
               description="Requests the server reports queued"),
    MetricSpec(name=SERVER_KV_USAGE, kind=MetricKind.GAUGE, tag_keys=SERVER_TAG_KEYS,
               description="Fraction of the server's KV cache in use (0-1)"),
    MetricSpec(name=SERVER_PREFIX_HIT_RATE, kind=MetricKind.GAUGE, tag_keys=SERVER_TAG_KEYS,
               description="Server prefix-cache hit rate (0-1) over the last scrape interval"),
    MetricSpec(name=SERVER_OUTPUT_TOKENS_PER_S, kind=MetricKind.GAUGE, tag_keys=SERVER_TAG_KEYS,
               description="Tokens/s the server reports generating over the last scrape interval"),
)


#: what a load generator records, and what the server scraper records
CLIENT_METRIC_NAMES = tuple(m.name for m in METRICS if "actor" in m.tag_keys)
SERVER_METRIC_NAMES = tuple(m.name for m in METRICS if m.tag_keys == SERVER_TAG_KEYS)


def spec(name: str) -> MetricSpec:
    for m in METRICS:
        if m.name == name:
            return m
    raise KeyError(f"no raybench metric named {name!r}; known: {', '.join(m.name for m in METRICS)}")


def exported_names() -> frozenset[str]:
    """Every series name raybench puts into Prometheus through Ray."""
    return frozenset(m.exported_name for m in METRICS)
