"""Reading vLLM's, SGLang's and the simulator's /metrics into one timeline (no sockets, no Ray)."""

import pytest

from raybench.sim.metrics import SimMetrics
from raybench.telemetry import catalog
from raybench.telemetry.server_metrics import (
    BACKEND_METRICS, SERVER_METRICS_SCHEMA, ScrapeLoop, ServerTimeline, parse_prometheus_text,
)

# two engines (data parallel), as vLLM labels them; a counter's _created sample is ignored
VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="deepseek-ai/DeepSeek-R1"}} {run0}
vllm:num_requests_running{{engine="1",model_name="deepseek-ai/DeepSeek-R1"}} 3.0
vllm:num_requests_waiting{{engine="0",model_name="deepseek-ai/DeepSeek-R1"}} 2.0
vllm:num_requests_waiting{{engine="1",model_name="deepseek-ai/DeepSeek-R1"}} 0.0
vllm:kv_cache_usage_perc{{engine="0",model_name="deepseek-ai/DeepSeek-R1"}} 0.5
vllm:kv_cache_usage_perc{{engine="1",model_name="deepseek-ai/DeepSeek-R1"}} 0.25
vllm:prefix_cache_queries_total{{engine="0",model_name="deepseek-ai/DeepSeek-R1"}} {queries}
vllm:prefix_cache_hits_total{{engine="0",model_name="deepseek-ai/DeepSeek-R1"}} {hits}
vllm:generation_tokens_total{{engine="0",model_name="deepseek-ai/DeepSeek-R1"}} {generated}
vllm:generation_tokens_created{{engine="0",model_name="deepseek-ai/DeepSeek-R1"}} 1.7e9
"""
SGLANG = """sglang:num_running_reqs{model_name="m",tp_rank="0"} 12.0
sglang:num_queue_reqs{model_name="m",tp_rank="0"} 30.0
sglang:token_usage{model_name="m",tp_rank="0"} 0.91
sglang:cache_hit_rate{model_name="m",tp_rank="0"} 0.4
sglang:gen_throughput{model_name="m",tp_rank="0"} 2500.5
"""


def test_the_parser_keeps_names_and_values_whatever_the_labels_hold():
    text = (
        '# HELP x a "help" line\n'
        'a{path="/v1/{x}",msg="say \\"hi\\" } now"} 1.5 1700000000000\n'
        "b 2\n"
        'c{le="+Inf"} +Inf\n'
        "d{} NaN\n"
        "garbage line without value\n"
        'a{path="/other"} 2.5\n'
    )
    samples = parse_prometheus_text(text)
    assert samples["a"] == [1.5, 2.5] and samples["b"] == [2.0] and samples["c"] == [float("inf")]
    assert "d" in samples and "garbage" not in samples


def test_vllm_rows_sum_engines_and_take_rates_between_scrapes():
    timeline = ServerTimeline("cell-a")
    first = timeline.add(1_000_000_000, 2.0, VLLM.format(run0=5.0, queries=1000, hits=0, generated=100))
    second = timeline.add(3_000_000_000, 2.0, VLLM.format(run0=1.0, queries=3000, hits=1500, generated=900))
    assert (first["source"], first["running"], first["waiting"], first["kv_cache_usage"]) == ("vllm", 8, 2, 0.375)
    assert first["prefix_cache_hit_rate"] is None and first["output_tokens_per_s"] is None  # no interval yet
    assert second["running"] == 4
    assert second["prefix_cache_hit_rate"] == pytest.approx(0.75)  # 1500 hits of 2000 queries
    assert second["output_tokens_per_s"] == pytest.approx(400.0)  # 800 tokens in 2 s
    table = timeline.table(offset_ns=500_000_000)
    assert table.schema == SERVER_METRICS_SCHEMA
    assert table.column("t_ns").to_pylist() == [500_000_000, 2_500_000_000]


def test_sglang_gauges_and_failed_scrapes():
    timeline = ServerTimeline("cell-b")
    row = timeline.add(0, 1.0, SGLANG)
    assert (row["source"], row["running"], row["waiting"]) == ("sglang", 12, 30)
    assert (row["kv_cache_usage"], row["prefix_cache_hit_rate"], row["output_tokens_per_s"]) == (0.91, 0.4, 2500.5)
    failed = timeline.add(1_000_000_000, 900.0, None, "URLError: refused")
    assert failed["error"] == "URLError: refused" and failed["running"] is None
    other = timeline.add(2_000_000_000, 1.0, "unrelated_metric 1\n")
    assert other["source"] is None and other["running"] is None
    assert timeline.table().num_rows == 3


def test_the_simulators_own_text_reads_back():
    now = [0.0]
    sim = SimMetrics("m", clock_s=lambda: now[0])
    sim.request_arrived(100)
    text1 = sim.render(running=3, waiting=2, kv_cache_usage=0.125, tokens_written=50)
    sim.before_reset(50)  # /sim/reset zeroes the app's count; the counter must not go down
    now[0] = 2.0
    text2 = sim.render(running=1, waiting=0, kv_cache_usage=None, tokens_written=30)
    assert "# TYPE sim:generation_tokens counter" in text2.decode()
    timeline = ServerTimeline("c")
    a = timeline.add(0, 1.0, text1.decode())
    b = timeline.add(2_000_000_000, 1.0, text2.decode())
    assert (a["source"], a["running"], a["waiting"], a["kv_cache_usage"]) == ("sim", 3, 2, 0.125)
    assert (b["generation_tokens_total"], b["output_tokens_per_s"], b["kv_cache_usage"]) == (80.0, 15.0, None)
    assert parse_prometheus_text(text2.decode())["sim:gen_throughput"] == [15.0]
    assert set(parse_prometheus_text(text1.decode())) <= set(BACKEND_METRICS["sim"])


# vLLM 0.7.3's V0 engine (the seed's): a hit-rate gauge instead of counters, and the old usage name
# (vllm/engine/metrics.py: gauge_gpu_prefix_cache_hit_rate; -1 when the block manager has no prefix cache)
VLLM_V0 = """# HELP vllm:gpu_prefix_cache_hit_rate GPU prefix cache block hit rate.
# TYPE vllm:gpu_prefix_cache_hit_rate gauge
vllm:gpu_prefix_cache_hit_rate{{model_name="deepseek-ai/DeepSeek-R1"}} {rate}
vllm:cpu_prefix_cache_hit_rate{{model_name="deepseek-ai/DeepSeek-R1"}} -1.0
vllm:gpu_cache_usage_perc{{model_name="deepseek-ai/DeepSeek-R1"}} 0.3
vllm:num_requests_running{{model_name="deepseek-ai/DeepSeek-R1"}} 7.0
vllm:generation_tokens_total{{model_name="deepseek-ai/DeepSeek-R1"}} {generated}
"""


def test_vllm_v0_reports_its_prefix_cache_hit_rate_gauge():
    timeline = ServerTimeline("cell-v0")
    first = timeline.add(0, 1.0, VLLM_V0.format(rate=0.62, generated=100))
    second = timeline.add(1_000_000_000, 1.0, VLLM_V0.format(rate=0.625, generated=600))
    assert (first["source"], first["running"], first["kv_cache_usage"]) == ("vllm", 7, 0.3)
    assert (first["prefix_cache_hit_rate"], second["prefix_cache_hit_rate"]) == (0.62, 0.625)
    assert second["output_tokens_per_s"] == pytest.approx(500.0)
    # prefix caching off: V0 publishes -1, which is no rate at all
    assert ServerTimeline("off").add(0, 1.0, VLLM_V0.format(rate=-1.0, generated=0))["prefix_cache_hit_rate"] is None
    assert set(parse_prometheus_text(VLLM_V0.format(rate=0, generated=0))) - set(BACKEND_METRICS["vllm"]) == {
        "vllm:cpu_prefix_cache_hit_rate"}


class Sink:
    def __init__(self):
        self.values = {}

    def set_gauge(self, name, value, tags):
        self.values[name] = (value, dict(tags))

    def inc_counter(self, name, value, tags):
        raise AssertionError("the scraper only sets gauges")


def test_a_scrape_is_stamped_at_the_middle_of_its_round_trip_and_republished():
    clock = iter([10_000, 30_000, 50_000, 60_000])
    answers = iter([SGLANG, OSError("connection refused")])

    def fetch():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sink = Sink()
    loop = ScrapeLoop(fetch=fetch, timeline=ServerTimeline("c"), sink=sink, clock_ns=lambda: next(clock),
                      labels={"experiment": "e", "cell": "c", "backend": "sglang", "actor": "ignored"})
    row = loop.scrape_once()
    assert (row["t_ns"], row["scrape_ms"]) == (20_000, 0.02)
    assert sink.values[catalog.SERVER_RUNNING] == (12, {"experiment": "e", "cell": "c", "backend": "sglang", "hardware": ""})
    assert sink.values[catalog.SERVER_KV_USAGE][0] == 0.91
    failed = loop.scrape_once()
    assert failed["error"] == "OSError: connection refused" and failed["t_ns"] == 55_000
    with pytest.raises(ValueError, match="interval_s"):
        ScrapeLoop(fetch=fetch, timeline=ServerTimeline("c"), interval_s=0)
