"""Live load-generator metrics, computed from the Arrow batches an actor hands over at each poll.

Nothing here runs on the hot path: the actor's poll drains the rows recorded since the last
poll (about once a second) and ``ClientMetrics.record`` turns them into a handful of metric
updates with numpy, whatever the token rate. Ray is not imported: the metrics go to a
``MetricsSink`` (the Ray adapter in ray_sink.py, or a fake in tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import pyarrow as pa

from raybench.telemetry import catalog

#: finer edges (ms) for the terminal's TTFT median: 40 per decade (each bucket ~6 % wide)
#: from 0.01 ms to 1e6 ms; the median is read at a bucket's geometric middle (within ~3 %)
PROGRESS_TTFT_EDGES_MS = tuple(10 ** (k / 40) for k in range(-80, 241))
_OK = "ok"
_TOKEN = "token"


class MetricsSink(Protocol):
    """Where metric updates go; names are catalog names (without Ray's prefix)."""

    def set_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None: ...

    def inc_counter(self, name: str, value: float, tags: Mapping[str, str]) -> None: ...


class CumulativeHistogram:
    """Counts per bucket since creation, fed a whole array of values at a time.

    Bucket i holds values in (edges[i-1], edges[i]], as Prometheus' ``le`` means; the last
    bucket holds everything above the top edge.
    """

    def __init__(self, edges: Sequence[float]) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        if self.edges.size == 0 or np.any(np.diff(self.edges) <= 0):
            raise ValueError(f"histogram edges must be increasing and non-empty, got {list(edges)[:5]}...")
        self.counts = np.zeros(self.edges.size + 1, dtype=np.int64)
        self.sum = 0.0

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        index = np.searchsorted(self.edges, values, side="left")
        self.counts += np.bincount(index, minlength=self.counts.size)
        self.sum += float(values.sum())

    @property
    def count(self) -> int:
        return int(self.counts.sum())


def median_from_counts(counts: Sequence[int], edges: Sequence[float] = PROGRESS_TTFT_EDGES_MS) -> float | None:
    """The median of a histogram over ``edges``, at its bucket's geometric middle; None if empty."""
    total = sum(counts)
    if total == 0:
        return None
    cumulative = np.cumsum(np.asarray(counts, dtype=np.int64))
    i = int(np.searchsorted(cumulative, total / 2, side="left"))
    if i == 0:
        return float(edges[0])
    if i >= len(edges):
        return float(edges[-1])
    return math.sqrt(edges[i - 1] * edges[i])


def merge_counts(histograms: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Element-wise sum of same-edged histograms (empty ones are skipped)."""
    present = [h for h in histograms if len(h)]
    if not present:
        return ()
    return tuple(int(v) for v in np.sum(np.asarray(present, dtype=np.int64), axis=0))


def _dictionary_codes(column: pa.Array) -> tuple[np.ndarray, list[str]]:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    return column.indices.to_numpy(zero_copy_only=False), column.dictionary.to_pylist()


def ttft_ms_of(requests: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """(TTFT in ms of each successful request that got a first token, ids of failed requests)."""
    codes, names = _dictionary_codes(requests.column("status"))
    ok = codes == names.index(_OK) if _OK in names else np.zeros(len(codes), dtype=bool)
    first = requests.column("t_first_ns")
    valid = ok & first.is_valid().to_numpy(zero_copy_only=False)
    sent = requests.column("t_sent_ns").to_numpy(zero_copy_only=False)
    first_ns = first.fill_null(0).to_numpy(zero_copy_only=False)
    failed_ids = requests.column("request_id").to_numpy(zero_copy_only=False)[~ok]
    return (first_ns[valid] - sent[valid]) / 1e6, failed_ids


def itl_ms_of(chunks: pa.RecordBatch, failed_request_ids: np.ndarray) -> np.ndarray:
    """Gaps (ms) between consecutive token-bearing chunks, failed requests left out.

    A request's chunk rows are handed over together when it ends, in order, so within one
    batch each request's rows are contiguous and no gap spans two batches.
    """
    codes, names = _dictionary_codes(chunks.column("kind"))
    if _TOKEN not in names:
        return np.empty(0)
    rows = codes == names.index(_TOKEN)
    ids = chunks.column("request_id").to_numpy(zero_copy_only=False)
    if failed_request_ids.size:  # rare: the common poll skips this search
        rows &= ~np.isin(ids, failed_request_ids)
    ids = ids[rows]
    t_ns = chunks.column("t_ns").to_numpy(zero_copy_only=False)[rows]
    same = ids[1:] == ids[:-1]
    return np.diff(t_ns)[same] / 1e6


class _HistogramGauges:
    """A CumulativeHistogram published as <name>_bucket/_count/_sum gauges (see catalog.py)."""

    def __init__(self, name: str, tags: Mapping[str, str]) -> None:
        self.histogram = CumulativeHistogram(catalog.LATENCY_EDGES_MS)
        self._names = (f"{name}_bucket", f"{name}_count", f"{name}_sum")
        les = [f"{e:g}" for e in catalog.LATENCY_EDGES_MS] + ["+Inf"]
        self._bucket_tags = [{**tags, "le": le} for le in les]
        self._tags = dict(tags)

    def publish(self, sink: MetricsSink) -> None:
        bucket, count, total = self._names
        # every bucket every time: a missing low bucket would skew histogram_quantile, and
        # a gauge that is not refreshed is dropped by Ray after two export intervals
        for tags, value in zip(self._bucket_tags, np.cumsum(self.histogram.counts).tolist()):
            sink.set_gauge(bucket, value, tags)
        sink.set_gauge(count, self.histogram.count, self._tags)
        sink.set_gauge(total, self.histogram.sum, self._tags)


class ClientMetrics:
    """One load-generator actor's metrics, updated once per poll from the rows it drained."""

    def __init__(self, sink: MetricsSink, labels: Mapping[str, str]) -> None:
        unknown = set(labels) - set(catalog.CLIENT_TAG_KEYS)
        if unknown:
            raise ValueError(f"unknown metric labels {sorted(unknown)}: allowed {catalog.CLIENT_TAG_KEYS}")
        self._sink = sink
        self._tags = {k: str(labels.get(k, "")) for k in catalog.CLIENT_TAG_KEYS}
        self._status_tags: dict[str, dict[str, str]] = {}
        self._ttft = _HistogramGauges(catalog.TTFT_MS, self._tags)
        self._itl = _HistogramGauges(catalog.ITL_MS, self._tags)
        self._progress_ttft = CumulativeHistogram(PROGRESS_TTFT_EDGES_MS)
        self._output_tokens = 0

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def record(
        self,
        requests: pa.RecordBatch | None,
        chunks: pa.RecordBatch | None,
        *,
        in_flight: int,
        output_tokens: int,
        loop_lag_ms: float,
    ) -> None:
        """Fold one poll into the metrics: the rows it drained and the generator's snapshot.

        ``output_tokens`` is the generator's running total (in-flight requests included).
        """
        sink = self._sink
        failed_ids = np.empty(0, dtype=np.uint64)
        if requests is not None and requests.num_rows:
            self._count_statuses(requests)
            ttft_ms, failed_ids = ttft_ms_of(requests)
            self._ttft.histogram.add(ttft_ms)
            self._progress_ttft.add(ttft_ms)
        if chunks is not None and chunks.num_rows:
            self._itl.histogram.add(itl_ms_of(chunks, failed_ids))
        if output_tokens > self._output_tokens:
            sink.inc_counter(catalog.OUTPUT_TOKENS, output_tokens - self._output_tokens, self._tags)
            self._output_tokens = output_tokens
        sink.set_gauge(catalog.REQUESTS_IN_FLIGHT, in_flight, self._tags)
        sink.set_gauge(catalog.LOOP_LAG_MS, loop_lag_ms, self._tags)
        self._ttft.publish(sink)
        self._itl.publish(sink)

    def ttft_ms_counts(self) -> tuple[int, ...]:
        """Cumulative TTFT histogram over PROGRESS_TTFT_EDGES_MS, for the terminal display."""
        return tuple(self._progress_ttft.counts.tolist())

    def _count_statuses(self, requests: pa.RecordBatch) -> None:
        codes, names = _dictionary_codes(requests.column("status"))
        for name, n in zip(names, np.bincount(codes, minlength=len(names)).tolist()):
            if n:
                tags = self._status_tags.get(name)
                if tags is None:
                    tags = self._status_tags[name] = {**self._tags, "status": name}
                self._sink.inc_counter(catalog.REQUESTS, n, tags)
