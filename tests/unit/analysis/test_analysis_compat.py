"""One stream, every kind of event: what each compat mode reads from it.

The stream (ms after t_sent = 0):
    10 empty  n=0   role-only chat chunk (choices, empty text)
    20 token  n=1
    30 empty  n=0   choices with empty text
    45 token  n=3   multi-token chunk (speculative decoding / MTP)
    60 token  n=3
    70 usage  n=0   choices == [], usage.completion_tokens = 7
    75 done   n=0   data: [DONE]
reference-clients.md §1.1: SGLang starts TTFT at the first non-empty text, refreshes its latency
on every line up to [DONE], and takes one ITL per non-empty-text chunk; vLLM starts TTFT at the
first non-empty choices list (the role chunk), ends at the last choices chunk and takes one ITL
per choices chunk, empty ones included.
"""

from __future__ import annotations

import pytest
from analysis_tables import chunks_frame, requests_frame

from raybench.analysis import CompatMode, format_summary_table, itl_lists, request_metrics, summarize_cell
from raybench.errors import ConfigError

STREAM = {
    0: [
        (10, "empty", 0),
        (20, "token", 1),
        (30, "empty", 0),
        (45, "token", 3),
        (60, "token", 3),
        (70, "usage", 0),
        (75, "done", 0),
    ]
}


def _tables(output_tokens):
    req = requests_frame(
        [{"request_id": 0, "sent": 0, "done": 80, "output_tokens": output_tokens, "max_tokens": 16}]
    )
    return req, chunks_frame(STREAM)


# mode -> (ttft, e2e, per-chunk ITLs, tokens when usage is missing)
EXPECTED = {
    CompatMode.RAYBENCH: (20.0, 60.0, [25.0, 15.0], 7),
    CompatMode.SGLANG: (20.0, 75.0, [25.0, 15.0], 16),
    CompatMode.VLLM: (10.0, 60.0, [10.0, 10.0, 15.0, 15.0], 7),
}


@pytest.mark.parametrize("mode", list(CompatMode))
def test_ttft_e2e_and_itl_per_mode(mode):
    ttft, e2e, itl, _ = EXPECTED[mode]
    req, ch = _tables(output_tokens=7)
    row = request_metrics(req, ch, mode).row(0, named=True)
    assert row["ttft_ms"] == pytest.approx(ttft)
    assert row["e2e_ms"] == pytest.approx(e2e)
    assert row["output_tokens_used"] == 7 and row["output_tokens_fallback"] is False
    assert row["tpot_ms"] == pytest.approx((e2e - ttft) / 6)
    lists = itl_lists(req, ch, mode)
    assert lists.per_chunk_ms.tolist() == pytest.approx(itl)
    # per-token ITL is raybench's own figure in every mode: 45-20 over 3 tokens, 60-45 over 3
    assert lists.per_token_ms.tolist() == pytest.approx([25 / 3] * 3 + [5.0] * 3)


@pytest.mark.parametrize("mode", list(CompatMode))
def test_token_count_fallback_when_usage_missing(mode):
    ttft, e2e, _, tokens = EXPECTED[mode]
    req, ch = _tables(output_tokens=None)
    row = request_metrics(req, ch, mode).row(0, named=True)
    assert row["output_tokens_used"] == tokens
    assert row["output_tokens_fallback"] is True
    assert row["tpot_ms"] == pytest.approx((e2e - ttft) / (tokens - 1))
    summary = summarize_cell(req, ch, compat=mode, target_concurrency=1, request_rate_per_s=None,
                             goodput_slos_ms=None)
    assert summary["compat_mode"] == mode.value
    assert summary["total_output_tokens"] == tokens
    assert summary["output_tokens_fallback_requests"] == 1
    assert summary["output_tokens_usage_requests"] == 0
    expected_fallback = "max_tokens" if mode is CompatMode.SGLANG else "sum_n_tokens"
    assert summary["output_tokens_fallback"] == expected_fallback
    note_says = "requested max_tokens" if mode is CompatMode.SGLANG else "sum of chunk n_tokens"
    assert note_says in summary["output_tokens_note"]


def test_vllm_treats_zero_usage_as_missing_but_raybench_does_not():
    req, ch = _tables(output_tokens=0)
    vllm = request_metrics(req, ch, CompatMode.VLLM).row(0, named=True)
    assert (vllm["output_tokens_used"], vllm["output_tokens_fallback"]) == (7, True)
    raybench = request_metrics(req, ch, CompatMode.RAYBENCH).row(0, named=True)
    assert (raybench["output_tokens_used"], raybench["output_tokens_fallback"]) == (0, False)
    assert raybench["tpot_ms"] is None  # 0 tokens: no TPOT


@pytest.mark.parametrize("mode", list(CompatMode))
def test_summary_carries_the_mode_figures(mode):
    ttft, e2e, itl, _ = EXPECTED[mode]
    req, ch = _tables(output_tokens=7)
    s = summarize_cell(req, ch, compat=mode.value, target_concurrency=None, request_rate_per_s=None,
                       goodput_slos_ms=None)
    assert s["mean_ttft_ms"] == pytest.approx(ttft)
    assert s["mean_e2el_ms"] == s["mean_e2e_latency_ms"] == pytest.approx(e2e)
    assert s["count_itl"] == len(itl)
    assert s["mean_itl_ms"] == pytest.approx(sum(itl) / len(itl))
    assert s["max_itl_ms"] == pytest.approx(max(itl))
    assert s["count_itl_per_token"] == 6
    # an 80 ms cell is one 80 ms bin: the peak is the mean (7 tokens / 0.08 s), never below it
    assert s["max_output_tokens_per_s"] == pytest.approx(7 / 0.080) == pytest.approx(s["output_throughput"])
    assert s["concurrency"] == pytest.approx(e2e / 80)  # Σ E2E / duration (80 ms)


def test_unknown_mode_suggests_the_close_one():
    req, ch = _tables(output_tokens=7)
    with pytest.raises(ConfigError, match="Did you mean 'vllm'"):
        request_metrics(req, ch, "vlm")


def test_usage_beyond_the_events_counts_is_a_note_on_the_per_token_figures():
    # the stream's events carry 7 tokens; a usage of 14 (MTP tokens the events were counted one each for) is
    # what the request generated, so per-token figures that follow the events are marked, not left as measured
    req, ch = _tables(output_tokens=14)
    summary = summarize_cell(req, ch, target_concurrency=1, request_rate_per_s=None, goodput_slos_ms=None)
    assert summary["total_output_tokens"] == 14 and summary["total_output_tokens_from_chunks"] == 7
    assert summary["output_tokens_usage_vs_events_requests"] == 1
    note = summary["output_tokens_per_event_note"]
    assert "1 of 1 successful requests' usage counts 14 output tokens where their events carried 7 (+100.0%)" in note
    assert "Note: 1 of 1" in format_summary_table(summary)
    agreeing = summarize_cell(*_tables(output_tokens=7), target_concurrency=1, request_rate_per_s=None,
                              goodput_slos_ms=None)
    assert agreeing["output_tokens_usage_vs_events_requests"] == 0
    assert agreeing["output_tokens_per_event_note"] is None
    assert "Note:" not in format_summary_table(agreeing)


@pytest.mark.parametrize(("mode", "input_tokens"), [
    (CompatMode.RAYBENCH, 100 + 100 + 50),  # the workload's counts, as SGLang sums its dataset lengths
    (CompatMode.SGLANG, 100 + 100 + 50),
    (CompatMode.VLLM, 112 + 112 + 50),  # usage.prompt_tokens where the server sent it, else the workload's
])
def test_input_totals_follow_the_modes_prompt_token_count(mode, input_tokens):
    # chat: the server counts the template's 12 tokens the workload's count of the content leaves out
    rows = [{"request_id": 0, "sent": 0, "done": 100, "output_tokens": 4, "prompt_tokens": 100,
             "server_prompt_tokens": 112},
            {"request_id": 1, "sent": 0, "done": 100, "output_tokens": 4, "prompt_tokens": 100,
             "server_prompt_tokens": 112},
            {"request_id": 2, "sent": 0, "done": 100, "output_tokens": 4, "prompt_tokens": 50},
            {"request_id": 3, "sent": 0, "done": 100, "status": "http_error", "prompt_tokens": 40,
             "server_prompt_tokens": 52}]  # failed: in no token total, whoever counted it
    streams = {i: [(10, "empty", 0), (20, "token", 2), (60, "token", 2), (90, "usage", 0)] for i in range(3)}
    s = summarize_cell(requests_frame(rows), chunks_frame(streams), compat=mode.value)
    assert s["total_input_tokens"] == input_tokens
    assert s["input_throughput"] == s["input_throughput_tokens_per_s"] == pytest.approx(input_tokens / 0.1)
    assert s["total_token_throughput"] == s["total_throughput"] == pytest.approx((input_tokens + 12) / 0.1)
    assert s["total_server_prompt_tokens"] == 224  # the server's own count stays beside, in every mode
    assert s["prompt_tokens_source"] == ("server_usage" if mode is CompatMode.VLLM else "workload")
    per = request_metrics(requests_frame(rows), chunks_frame(streams), compat=mode.value)
    assert per.sort("request_id")["prompt_tokens"].to_list() == [100, 100, 50, 40]  # the workload's, kept
