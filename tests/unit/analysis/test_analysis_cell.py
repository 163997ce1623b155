"""A small cell whose every figure is worked out by hand below.

Times in ms from the cell start; target concurrency 2.

    R0 ok       sent 0     done 1300  usage 5, prompt 100 (server 101)
                token 200 (1), token 700 (1), token 1200 (3), usage 1250, done 1260
    R1 ok       sent 0     done 1100  no usage -> fallback, prompt 60, max_tokens 16
                token 400 (1), token 1000 (1), usage 1010, done 1020
    R2 ok       sched 0, sent 1100 (R1's slot, a tie)  done 1550  usage 1, prompt 50 (server 52)
                token 1400 (1), done 1500
    R3 timeout  sent 1300 (R0's slot, a tie)  done 3000, prompt 70
                token 2500 (1)  -- a failed request's chunk: counted nowhere

raybench per request:  TTFT 200 / 400 / 300,  E2E 1200 / 1000 / 300,
tokens 5 / 2 (Σ n_tokens) / 1,  TPOT (1200-200)/4 = 250, (1000-400)/1 = 600, none for R2.
ITL per chunk: R0 [500, 500], R1 [600].  Per token: R0 [500, 500/3 ×3], R1 [600].
"""

from __future__ import annotations

import math
import re

import pytest
from analysis_tables import chunks_frame, requests_frame

from raybench.analysis import CompatMode, summarize_cell
from raybench.analysis.summary import format_summary_table

REQUESTS = [
    {"request_id": 0, "sent": 0, "done": 1300, "output_tokens": 5, "prompt_tokens": 100,
     "server_prompt_tokens": 101},
    {"request_id": 1, "sent": 0, "done": 1100, "output_tokens": None, "prompt_tokens": 60,
     "max_tokens": 16},
    {"request_id": 2, "sched": 0, "sent": 1100, "done": 1550, "output_tokens": 1,
     "prompt_tokens": 50, "server_prompt_tokens": 52},
    {"request_id": 3, "sent": 1300, "done": 3000, "status": "timeout", "prompt_tokens": 70,
     "error": "no chunk for 1.5 s"},
]
STREAMS = {
    0: [(200, "token", 1), (700, "token", 1), (1200, "token", 3), (1250, "usage", 0), (1260, "done", 0)],
    1: [(400, "token", 1), (1000, "token", 1), (1010, "usage", 0), (1020, "done", 0)],
    2: [(1400, "token", 1), (1500, "done", 0)],
    3: [(2500, "token", 1)],
}


def _summary(**kw):
    args = dict(target_concurrency=2, request_rate_per_s=None, goodput_slos_ms=None)
    args.update(kw)
    return summarize_cell(requests_frame(REQUESTS), chunks_frame(STREAMS), **args)


def test_counts_duration_and_throughputs():
    s = _summary()
    assert (s["completed"], s["failed"], s["failed_timeout"], s["failed_http_error"]) == (3, 1, 1, 0)
    assert s["num_prompts"] == 4
    # the failed request's done (3000 ms) ends the cell: failures stay inside the duration
    assert s["duration"] == s["duration_s"] == pytest.approx(3.0)
    assert s["total_input_tokens"] == 210  # 100 + 60 + 50, successful only
    assert s["total_server_prompt_tokens"] == 153 and s["server_prompt_tokens_requests"] == 2
    assert s["total_output_tokens"] == 8  # 5 + 2 (fallback) + 1
    assert s["output_tokens_fallback_requests"] == 1
    assert s["request_throughput"] == pytest.approx(1.0)
    assert s["input_throughput"] == pytest.approx(70.0)
    assert s["output_throughput"] == pytest.approx(8 / 3)
    assert s["total_token_throughput"] == s["total_throughput"] == pytest.approx(218 / 3)
    assert s["errors"] == ["request 3 timeout: no chunk for 1.5 s"]


def test_latency_statistics_by_hand():
    s = _summary()
    # TTFT [200, 400, 300]: sorted 200 300 400, linear interpolation at 2·p/100
    assert s["count_ttft"] == 3
    assert s["mean_ttft_ms"] == pytest.approx(300.0)
    assert s["median_ttft_ms"] == pytest.approx(300.0)
    assert s["std_ttft_ms"] == pytest.approx(math.sqrt(20000 / 3))  # population std
    assert s["p50_ttft_ms"] == pytest.approx(300.0)
    assert s["p90_ttft_ms"] == pytest.approx(380.0)
    assert s["p95_ttft_ms"] == pytest.approx(390.0)
    assert s["p99_ttft_ms"] == pytest.approx(398.0)
    # TPOT [250, 600]; R2 has one token and is left out
    assert s["count_tpot"] == 2
    assert s["mean_tpot_ms"] == pytest.approx(425.0)
    assert s["std_tpot_ms"] == pytest.approx(175.0)
    assert s["p90_tpot_ms"] == pytest.approx(565.0)
    # ITL per chunk [500, 500, 600] pooled over requests
    assert s["count_itl"] == 3
    assert s["mean_itl_ms"] == pytest.approx(1600 / 3)
    assert s["median_itl_ms"] == pytest.approx(500.0)
    assert s["p99_itl_ms"] == pytest.approx(598.0)
    assert s["max_itl_ms"] == pytest.approx(600.0)
    # ITL per token [500, 166.7, 166.7, 166.7, 600]
    assert s["count_itl_per_token"] == 5
    assert s["mean_itl_per_token_ms"] == pytest.approx(320.0)
    assert s["median_itl_per_token_ms"] == pytest.approx(500 / 3)
    # E2E [1200, 1000, 300] under both tools' names
    assert s["mean_e2el_ms"] == s["mean_e2e_latency_ms"] == pytest.approx(2500 / 3)
    assert s["median_e2el_ms"] == s["median_e2e_latency_ms"] == pytest.approx(1000.0)
    assert s["p99_e2e_latency_ms"] == pytest.approx(1000 + 0.98 * 200)
    # queue time: R2 waited 1100 ms for a slot
    assert s["mean_queue_time_ms"] == pytest.approx(1100 / 3)


def test_concurrency_figures():
    s = _summary()
    assert s["concurrency"] == pytest.approx(2.5 / 3.0)  # Σ E2E 2.5 s over 3 s
    # R2 and R3 each start the instant a slot frees: departure first, so never 3 in flight
    assert s["max_concurrent_requests"] == s["peak_concurrency_requests"] == 2
    # 1 s bins from the first t_sent: bin 0 has 200, 400, 700 (3 tokens); bin 1 has
    # 1000 (1) + 1200 (3 tokens in one chunk) + 1400 (1) = 5; R3's 2500 failed
    assert s["max_output_tokens_per_s"] == s["peak_output_tokens_per_s"] == 5.0


def test_steady_state_window_in_this_cell():
    s = _summary()
    # 2 in flight from 0 ms until R2 leaves at 1550 ms (the dips at the 1100 and 1300 ms
    # ties do not split the window); every successful token arrived inside it
    assert s["steady_state_threshold_in_flight"] == pytest.approx(1.8)
    assert s["steady_state_start_s"] == pytest.approx(0.0)
    assert s["steady_state_end_s"] == pytest.approx(1.55)
    assert s["steady_state_output_tokens"] == 8
    assert s["steady_state_output_throughput_tokens_per_s"] == pytest.approx(8 / 1.55)


@pytest.mark.parametrize(
    ("slos", "good"),
    [
        ({"ttft": 350}, 2),  # R0 200, R2 300 pass; R1 400 fails
        ({"tpot": 300}, 2),  # R0 250 passes, R1 600 fails, R2 has 1 token: TPOT 0 for goodput
        ({"ttft": 350, "tpot": 300, "e2el": 1100}, 1),  # R0's E2E 1200 fails: only R2
        ({"e2el": 100}, 0),
    ],
)
def test_goodput(slos, good):
    s = _summary(goodput_slos_ms=slos)
    assert s["goodput_completed"] == good
    assert s["request_goodput"] == s["request_goodput_per_s"] == pytest.approx(good / 3)


def test_no_slos_means_no_goodput():
    s = _summary()
    assert s["request_goodput"] is None and s["goodput_completed"] is None


def test_sglang_mode_counts_max_tokens_and_done_time():
    s = _summary(compat=CompatMode.SGLANG)
    # R1 without usage is credited its max_tokens (16); E2E runs to each [DONE]
    assert s["total_output_tokens"] == 5 + 16 + 1
    assert s["mean_e2e_latency_ms"] == pytest.approx((1260 + 1020 + 400) / 3)
    # TPOT R0 (1260-200)/4, R1 (1020-400)/15
    assert s["mean_tpot_ms"] == pytest.approx(((1060 / 4) + (620 / 15)) / 2)


def test_every_request_failed_gives_no_latency_figures_with_counts():
    req = requests_frame(
        [{"request_id": 0, "sent": 0, "done": 500, "status": "http_error", "http_status": 503}]
    )
    s = summarize_cell(req, chunks_frame({}), target_concurrency=1, request_rate_per_s=None,
                       goodput_slos_ms={"ttft": 1})
    assert (s["completed"], s["failed"], s["failed_http_error"]) == (0, 1, 1)
    assert s["duration_s"] == pytest.approx(0.5)
    # no sample, no figure: None (null in JSON, n/a in the table), never a measured-looking 0
    assert (s["count_ttft"], s["mean_ttft_ms"], s["median_ttft_ms"]) == (0, None, None)
    assert (s["count_itl"], s["p99_itl_ms"], s["mean_e2e_latency_ms"]) == (0, None, None)
    assert s["peak_output_tokens_per_s"] is None
    table = format_summary_table(s)
    assert re.search(r"^Median TTFT \(ms\):\s+n/a\s*$", table, re.MULTILINE), table
    assert re.search(r"^Peak output token throughput \(tok/s\):\s+n/a\s*$", table, re.MULTILINE), table
    assert s["request_goodput"] == 0.0
    assert s["errors"] == ["request 0 http_error http 503: (no text)"]
    # the one slot was busy for the whole 0.5 s, but no successful token arrived: no rate to measure
    assert (s["steady_state_start_s"], s["steady_state_end_s"]) == (None, None)
    assert s["steady_state_output_throughput_tokens_per_s"] is None
    assert re.search(r"^Steady-state output tput \(tok/s\):\s+n/a\s*$", table, re.MULTILINE), table


def _one_stream_summary(done_ms, stream):
    requests = [{"request_id": 0, "sent": 0, "done": done_ms, "output_tokens": sum(n for _, _, n in stream),
                 "prompt_tokens": 10}]
    return summarize_cell(requests_frame(requests), chunks_frame({0: stream}), target_concurrency=1,
                          request_rate_per_s=None, goodput_slos_ms=None)


@pytest.mark.parametrize(("done_ms", "stream"), [
    (400, [(100 + 30 * i, "token", 1) for i in range(10)]),  # a cell shorter than a second
    (80, [(20, "token", 1), (45, "token", 3), (60, "token", 3)]),
    (1500, [(1, "token", 50), (1499, "token", 50)]),  # tokens at both ends of 1.5 s: no 1 s window holds both
    (2500, [(t, "token", 1) for t in range(0, 2500, 7)]),
    (30_300, [(t, "token", 2) for t in range(0, 30_300, 13)]),
])
def test_peak_output_throughput_is_never_below_the_mean(done_ms, stream):
    s = _one_stream_summary(done_ms, stream)
    assert s["peak_output_tokens_per_s"] >= s["output_throughput_tokens_per_s"] - 1e-9
    assert s["peak_output_tokens_per_s"] > 0


def test_peak_bins_tile_the_duration_in_equal_parts_of_at_most_a_second():
    # 2.5 s in three bins of 0.8333 s: 6 tokens in the middle bin make the peak 6 / 0.8333 = 7.2 tok/s
    s = _one_stream_summary(2500, [(100, "token", 1), (900, "token", 2), (1000, "token", 4), (2400, "token", 1)])
    assert s["peak_output_tokens_per_s"] == pytest.approx(6 / (2.5 / 3))
    # a token at the very end of the cell counts in the last bin, not in a bin of its own
    s = _one_stream_summary(400, [(100, "token", 1), (400, "token", 1)])
    assert s["peak_output_tokens_per_s"] == pytest.approx(2 / 0.4)
