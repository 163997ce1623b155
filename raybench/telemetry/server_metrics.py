"""The server's own view during a run: its Prometheus /metrics read every second, as a timeline.

vLLM, SGLang and the simulator each publish running and waiting requests, KV-cache usage,
prefix-cache hits and generated tokens, under their own names (``BACKEND_METRICS`` lists the
names raybench reads and where each was checked). ``ServerTimeline`` maps one scrape onto
common columns, one row per scrape, with times on the run's time base so the rows join the
client's requests table (``t_sent_ns``/``t_done_ns``) directly. ``ScrapeLoop`` is the plain
loop an actor runs (scraper.py); nothing here imports Ray.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa

from raybench.telemetry import catalog
from raybench.telemetry.client_metrics import MetricsSink

SERVER_METRICS_FILE = "server_metrics.parquet"

SERVER_METRICS_SCHEMA = pa.schema([
    pa.field("cell_id", pa.string(), nullable=False),
    pa.field("t_ns", pa.int64(), nullable=False),  # run time base: middle of the scrape's round trip
    pa.field("scrape_ms", pa.float64(), nullable=False),  # round trip of the scrape
    pa.field("source", pa.string()),  # which family answered: vllm | sglang | sim; null if none
    pa.field("running", pa.int32()),  # requests in the running batch (summed over engines)
    pa.field("waiting", pa.int32()),  # requests queued (summed over engines)
    pa.field("kv_cache_usage", pa.float64()),  # 0-1 (mean over engines)
    pa.field("prefix_cache_hit_rate", pa.float64()),  # 0-1, over the interval since the previous row
    pa.field("generation_tokens_total", pa.float64()),  # the server's cumulative counter
    pa.field("output_tokens_per_s", pa.float64()),  # over the interval since the previous row
    pa.field("error", pa.string()),  # why this scrape failed; null when it worked
])

#: Names read from each backend's /metrics, checked against the backends' own source:
#: vLLM   vllm/v1/metrics/loggers.py, PrometheusStatLogger (vllm-project/vllm @ 005a810b);
#:        gpu_cache_usage_perc and gpu_prefix_cache_* are the names before 0.9 (deprecated there);
#:        the V0 engine (0.7.x, the seed's) publishes the gauge gpu_prefix_cache_hit_rate instead of
#:        counters (vllm/engine/metrics.py @ v0.7.3)
#: SGLang python/sglang/srt/metrics/collector.py, SchedulerMetricsCollector and
#:        TokenizerMetricsCollector (sgl-project/sglang @ 00ae9c15)
#: sim    raybench/sim/metrics.py
BACKEND_METRICS: Mapping[str, tuple[str, ...]] = {
    "vllm": (
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_hit_rate",
        "vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:num_preemptions_total",
        "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
    ),
    "sglang": (
        "sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage", "sglang:cache_hit_rate",
        "sglang:gen_throughput", "sglang:generation_tokens_total", "sglang:prompt_tokens_total",
        "sglang:num_used_tokens", "sglang:time_to_first_token_seconds_bucket",
        "sglang:inter_token_latency_seconds_bucket",
    ),
    "sim": (
        "sim:num_requests_running", "sim:num_requests_waiting", "sim:kv_cache_usage_perc",
        "sim:generation_tokens_total", "sim:prompt_tokens_total", "sim:prefix_cache_queries_total",
        "sim:prefix_cache_hits_total", "sim:request_arrivals_total", "sim:gen_throughput",
    ),
}


@dataclass(frozen=True, kw_only=True)
class _Field:
    names: tuple[str, ...]  # the first one a server publishes wins
    mean: bool = False  # mean over series (a fraction per engine); else the sum
    fraction: bool = False  # only values in [0, 1] count: vLLM V0 publishes -1 for "no prefix cache"


_RUNNING = _Field(names=("vllm:num_requests_running", "sglang:num_running_reqs", "sim:num_requests_running"))
_WAITING = _Field(names=("vllm:num_requests_waiting", "sglang:num_queue_reqs", "sim:num_requests_waiting"))
_KV = _Field(names=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
                    "sim:kv_cache_usage_perc"), mean=True)
# vLLM V0's gauge is the hit rate since the server started (CacheMetricData in vllm/core/block/common.py),
# not over the interval; -1 means prefix caching is off. Counters, where published, replace it (_rates).
_HIT_RATE = _Field(names=("sglang:cache_hit_rate", "vllm:gpu_prefix_cache_hit_rate"), mean=True, fraction=True)
_HITS = _Field(names=("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total", "sim:prefix_cache_hits_total"))
_QUERIES = _Field(names=("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total",
                         "sim:prefix_cache_queries_total"))
_GENERATED = _Field(names=("vllm:generation_tokens_total", "sglang:generation_tokens_total", "sim:generation_tokens_total"))
_GEN_RATE = _Field(names=("sglang:gen_throughput", "sim:gen_throughput"))


def parse_prometheus_text(text: str) -> dict[str, list[float]]:
    """Values of every sample in a Prometheus text exposition, by metric name (labels dropped)."""
    samples: dict[str, list[float]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] == "#":
            continue
        brace, space = line.find("{"), line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name, rest = line[:brace], line[_label_end(line, brace) + 1:]
        elif space != -1:
            name, rest = line[:space], line[space:]
        else:
            continue
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue  # a malformed sample costs that sample, not the scrape
        samples.setdefault(name, []).append(value)
    return samples


def _label_end(line: str, start: int) -> int:
    """Index of the ``}`` closing the label set that opens at ``start`` (quotes respected)."""
    quoted = escaped = False
    for i in range(start + 1, len(line)):
        c = line[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == "}" and not quoted:
            return i
    return len(line) - 1


def _read(samples: Mapping[str, list[float]], field: _Field) -> float | None:
    for name in field.names:
        values = [v for v in samples.get(name, ()) if not math.isnan(v) and (not field.fraction or 0 <= v <= 1)]
        if values:
            return sum(values) / len(values) if field.mean else sum(values)
    return None


def _source(samples: Mapping[str, list[float]]) -> str | None:
    for family, names in BACKEND_METRICS.items():
        if any(n in samples for n in names):
            return family
    return None


class ServerTimeline:
    """Rows of scrapes for one cell; rates come from counter deltas between consecutive rows."""

    def __init__(self, cell_id: str) -> None:
        self.cell_id = cell_id
        self._rows: list[dict] = []
        self._previous: tuple[int, float | None, float | None, float | None] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, t_ns: int, scrape_ms: float, text: str | None, error: str | None = None) -> dict:
        """One scrape at ``t_ns``: its text, or None and why it failed. Returns the row."""
        row = {"cell_id": self.cell_id, "t_ns": t_ns, "scrape_ms": scrape_ms, "source": None, "running": None,
               "waiting": None, "kv_cache_usage": None, "prefix_cache_hit_rate": None,
               "generation_tokens_total": None, "output_tokens_per_s": None, "error": error}
        if text is not None:
            samples = parse_prometheus_text(text)
            row["source"] = _source(samples)
            for key, field in (("running", _RUNNING), ("waiting", _WAITING)):
                value = _read(samples, field)
                row[key] = None if value is None else round(value)
            row["kv_cache_usage"] = _read(samples, _KV)
            row["generation_tokens_total"] = generated = _read(samples, _GENERATED)
            hits, queries = _read(samples, _HITS), _read(samples, _QUERIES)
            row["prefix_cache_hit_rate"] = _read(samples, _HIT_RATE)
            row["output_tokens_per_s"] = _read(samples, _GEN_RATE)
            if self._previous is not None:
                self._rates(row, t_ns, generated, hits, queries)
            self._previous = (t_ns, generated, hits, queries)
        self._rows.append(row)
        return row

    def _rates(self, row: dict, t_ns: int, generated, hits, queries) -> None:
        t0, generated0, hits0, queries0 = self._previous
        dt_s = (t_ns - t0) / 1e9
        if generated is not None and generated0 is not None and dt_s > 0 and generated >= generated0:
            row["output_tokens_per_s"] = (generated - generated0) / dt_s
        if None not in (hits, hits0, queries, queries0) and queries > queries0:
            row["prefix_cache_hit_rate"] = (hits - hits0) / (queries - queries0)

    def table(self, offset_ns: int = 0) -> pa.Table:
        """The rows as Arrow; ``offset_ns`` moves times from the scraper's clock to the run's."""
        rows = [{**r, "t_ns": r["t_ns"] - offset_ns} for r in self._rows]
        return pa.Table.from_pylist(rows, schema=SERVER_METRICS_SCHEMA)


class ScrapeLoop:
    """Scrapes ``fetch`` every ``interval_s`` on a thread until ``stop``; publishes each row.

    Ticks are absolute (start + k * interval), so the rows stay one interval apart however
    long each scrape takes; a scrape slower than the interval skips ticks rather than queueing.
    ``stop`` adds one last row, less than an interval after the one before.
    """

    def __init__(
        self,
        *,
        fetch: Callable[[], str],
        timeline: ServerTimeline,
        sink: MetricsSink | None = None,
        labels: Mapping[str, str] | None = None,
        interval_s: float = 1.0,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s={interval_s} is not allowed: > 0")
        self.timeline = timeline
        self._fetch = fetch
        self._sink = sink
        self._tags = {k: str((labels or {}).get(k, "")) for k in catalog.SERVER_TAG_KEYS}
        self._interval_ns = int(interval_s * 1e9)
        self._clock_ns = clock_ns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="raybench-scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop, then scrape once more so the timeline ends with the cell's end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
            self.scrape_once()

    def scrape_once(self) -> dict:
        t0 = self._clock_ns()
        try:
            text, error = self._fetch(), None
        except Exception as err:  # noqa: BLE001 - any failure is one row's error, never the run's
            text, error = None, f"{type(err).__name__}: {err}"
        t1 = self._clock_ns()
        row = self.timeline.add((t0 + t1) // 2, (t1 - t0) / 1e6, text, error)
        if self._sink is not None:
            self._publish(row)
        return row

    def _run(self) -> None:
        start = self._clock_ns()
        tick = 0
        while not self._stop.is_set():
            self.scrape_once()
            now = self._clock_ns()
            tick = max(tick + 1, (now - start) // self._interval_ns + 1)
            self._stop.wait((start + tick * self._interval_ns - now) / 1e9)

    def _publish(self, row: dict) -> None:
        for name, key in (
            (catalog.SERVER_RUNNING, "running"), (catalog.SERVER_WAITING, "waiting"),
            (catalog.SERVER_KV_USAGE, "kv_cache_usage"), (catalog.SERVER_PREFIX_HIT_RATE, "prefix_cache_hit_rate"),
            (catalog.SERVER_OUTPUT_TOKENS_PER_S, "output_tokens_per_s"),
        ):
            if row[key] is not None:
                self._sink.set_gauge(name, row[key], self._tags)
