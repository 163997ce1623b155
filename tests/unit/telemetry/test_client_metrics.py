"""Live load-generator metrics from the Arrow batches a poll drains (no Ray: a recording sink)."""

import numpy as np
import pytest

from raybench.loadgen.records import (
    K_DONE, K_EMPTY, K_TOKEN, K_USAGE, STATUS_CODE, ChunkColumns, RequestColumns, chunks_batch, pack_code,
    requests_batch,
)
from raybench.store.schema import RequestStatus
from raybench.telemetry import catalog
from raybench.telemetry.client_metrics import (
    PROGRESS_TTFT_EDGES_MS, ClientMetrics, CumulativeHistogram, median_from_counts, merge_counts,
)

LABELS = {"experiment": "e", "cell": "c1", "backend": "sim", "actor": "raybench:c1:0"}


class RecordingSink:
    def __init__(self):
        self.gauges, self.counters = {}, {}

    def set_gauge(self, name, value, tags):
        self.gauges[(name, tuple(sorted(tags.items())))] = value

    def inc_counter(self, name, value, tags):
        key = (name, tuple(sorted(tags.items())))
        self.counters[key] = self.counters.get(key, 0) + value

    def gauge(self, name, **extra):
        return self.gauges[(name, tuple(sorted({**TAGS, **extra}.items())))]

    def counter(self, name, **extra):
        return self.counters.get((name, tuple(sorted({**TAGS, **extra}.items()))), 0)


TAGS = {**LABELS, "hardware": ""}


def batches(requests):
    """requests: (request_id, status, t_sent_ms, [(t_ms, kind, n_tokens), ...]) -> Arrow batches."""
    rc, cc = RequestColumns(), ChunkColumns()
    for rid, status, t_sent_ms, events in requests:
        first = next((t for t, kind, n in events if kind == K_TOKEN), None)
        for col, value in (
            (rc.request_id, rid), (rc.prompt_tokens, 4), (rc.server_prompt_tokens, 4), (rc.max_tokens, 8),
            (rc.output_tokens, sum(n for _, _, n in events)), (rc.cached_tokens, None),
            (rc.t_scheduled_ns, 0), (rc.t_sent_ns, int(t_sent_ms * 1e6)),
            (rc.t_first_ns, None if first is None else int(first * 1e6)),
            (rc.t_done_ns, int((events[-1][0] if events else t_sent_ms) * 1e6)),
            (rc.status, STATUS_CODE[status]), (rc.http_status, 200), (rc.error, None), (rc.attempts, 1),
        ):
            col.append(value)
        for seq, (t_ms, kind, n) in enumerate(events):
            cc.request_id.append(rid), cc.seq.append(seq), cc.t_ns.append(int(t_ms * 1e6)), cc.code.append(pack_code(n, kind))
    return requests_batch(rc, "c1", "raybench:c1:0", "node", 0), chunks_batch(cc, "c1", 0)


OK, CUT = RequestStatus.OK, RequestStatus.DISCONNECTED


def stream(t0, ttft, gaps, tail=True):
    """Events of one chat-like stream: a role chunk, tokens, then usage and [DONE]."""
    events, t = [(t0 + 1, K_EMPTY, 0)], t0 + ttft
    events.append((t, K_TOKEN, 1))
    for gap in gaps:
        t += gap
        events.append((t, K_TOKEN, 1))
    if tail:
        events += [(t + 0.1, K_USAGE, 0), (t + 0.2, K_DONE, 0)]
    return events


def test_one_poll_counts_statuses_tokens_and_latencies():
    sink = RecordingSink()
    metrics = ClientMetrics(sink, LABELS)
    requests, chunks = batches([
        (0, OK, 1000.0, stream(1000.0, 150.0, [20.0, 30.0])),
        (1, OK, 1000.0, stream(1000.0, 400.0, [10.0])),
        (2, CUT, 1000.0, stream(1000.0, 50.0, [5000.0], tail=False)),  # failed: out of every latency
        (3, RequestStatus.HTTP_ERROR, 1000.0, []),
    ])
    metrics.record(requests, chunks, in_flight=5, output_tokens=7, loop_lag_ms=3.5)

    assert sink.counter(catalog.REQUESTS, status="ok") == 2
    assert sink.counter(catalog.REQUESTS, status="disconnected") == 1
    assert sink.counter(catalog.REQUESTS, status="http_error") == 1
    assert sink.counter(catalog.OUTPUT_TOKENS) == 7
    assert sink.gauge(catalog.REQUESTS_IN_FLIGHT) == 5 and sink.gauge(catalog.LOOP_LAG_MS) == 3.5
    ttft = f"{catalog.TTFT_MS}_bucket"
    assert sink.gauge(f"{catalog.TTFT_MS}_count") == 2
    assert sink.gauge(f"{catalog.TTFT_MS}_sum") == pytest.approx(550.0)
    assert sink.gauge(ttft, le="100") == 0 and sink.gauge(ttft, le="150") == 1  # le is inclusive
    assert sink.gauge(ttft, le="300") == 1 and sink.gauge(ttft, le="500") == 2 and sink.gauge(ttft, le="+Inf") == 2
    # ITL: token-to-token gaps of ok requests only (20, 30 and 10 ms), never across requests
    assert sink.gauge(f"{catalog.ITL_MS}_count") == 3
    assert sink.gauge(f"{catalog.ITL_MS}_sum") == pytest.approx(60.0)
    itl = f"{catalog.ITL_MS}_bucket"
    assert [sink.gauge(itl, le=le) for le in ("7.5", "10", "15", "20", "25", "30", "+Inf")] == [0, 1, 1, 2, 2, 3, 3]
    assert median_from_counts(metrics.ttft_ms_counts()) == pytest.approx(150, rel=0.03)


def test_later_polls_accumulate_and_count_only_new_tokens():
    sink = RecordingSink()
    metrics = ClientMetrics(sink, LABELS)
    metrics.record(None, None, in_flight=8, output_tokens=100, loop_lag_ms=0.0)
    assert sink.counter(catalog.OUTPUT_TOKENS) == 100
    assert sink.gauge(f"{catalog.TTFT_MS}_bucket", le="+Inf") == 0  # every bucket exists from the start
    requests, chunks = batches([(7, OK, 0.0, stream(0.0, 80.0, [25.0] * 4))])
    metrics.record(requests, chunks, in_flight=7, output_tokens=160, loop_lag_ms=0.0)
    metrics.record(None, None, in_flight=7, output_tokens=160, loop_lag_ms=0.0)  # nothing new: no increment
    assert sink.counter(catalog.OUTPUT_TOKENS) == 160
    assert sink.gauge(f"{catalog.ITL_MS}_count") == 4 and sink.gauge(f"{catalog.TTFT_MS}_count") == 1
    buckets = [sink.gauge(f"{catalog.TTFT_MS}_bucket", le=f"{e:g}") for e in catalog.LATENCY_EDGES_MS]
    assert buckets == sorted(buckets)  # cumulative, as Prometheus histograms are


def test_unknown_labels_are_refused():
    with pytest.raises(ValueError, match="unknown metric labels"):
        ClientMetrics(RecordingSink(), {"gpu": "H200"})


def test_histogram_edges_follow_prometheus_le():
    h = CumulativeHistogram((1.0, 10.0))
    h.add(np.array([0.5, 1.0, 1.0001, 10.0, 11.0]))
    assert h.counts.tolist() == [2, 2, 1] and h.count == 5 and h.sum == pytest.approx(23.5001)


def test_progress_median_is_within_a_bucket_of_the_exact_median():
    rng = np.random.default_rng(0)
    values = rng.lognormal(mean=np.log(800), sigma=1.0, size=5001)
    h = CumulativeHistogram(PROGRESS_TTFT_EDGES_MS)
    h.add(values[:2500])
    other = CumulativeHistogram(PROGRESS_TTFT_EDGES_MS)
    other.add(values[2500:])
    merged = merge_counts([h.counts.tolist(), (), other.counts.tolist()])  # two actors and one idle
    assert median_from_counts(merged) == pytest.approx(np.median(values), rel=0.03)
    assert median_from_counts([0] * len(merged)) is None and merge_counts([(), ()]) == ()


def test_exported_names_follow_rays_prefix_and_counter_suffix():
    names = catalog.exported_names()
    assert {"ray_raybench_requests_total", "ray_raybench_output_tokens_total", "ray_raybench_requests_in_flight",
            "ray_raybench_ttft_ms_bucket", "ray_raybench_itl_ms_count", "ray_raybench_server_kv_cache_usage"} <= names
    assert catalog.spec(f"{catalog.TTFT_MS}_bucket").tag_keys[-1] == "le"
    # every metric is created up front by one of the two actors that record them
    assert set(catalog.CLIENT_METRIC_NAMES) | set(catalog.SERVER_METRIC_NAMES) == {m.name for m in catalog.METRICS}
    with pytest.raises(KeyError, match="known"):
        catalog.spec("raybench_nope")
