"""The printed result table, laid out as SGLang's and vLLM's clients print theirs.

A 50-wide ``=`` banner, ``{:<40} {:<10}`` rows, and ``-``-centred section headers, so a reader
used to either tool finds each figure where they expect it; raybench's extra lines (failures,
compat mode, steady-state throughput, per-token ITL, queue time) sit beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raybench.analysis.stats import percentile_key

_WIDTH = 50


def _banner(title: str, fill: str) -> str:
    return f"{title:{fill}^{_WIDTH}}"


def _row(label: str, value: Any) -> str:
    if value is None:
        return f"{label:<40} {'n/a':<10}"
    if isinstance(value, float):
        return f"{label:<40} {value:<10.2f}"
    return f"{label:<40} {value!s:<10}"


def _stat_rows(summary: Mapping[str, Any], key: str, label: str, *, with_max: bool = False) -> list[str]:
    rows = [
        _row(f"Mean {label} (ms):", summary.get(f"mean_{key}_ms")),
        _row(f"Median {label} (ms):", summary.get(f"median_{key}_ms")),
    ]
    for p in summary.get("percentiles", []):
        name = percentile_key(p)
        rows.append(_row(f"{name.upper()} {label} (ms):", summary.get(f"{name}_{key}_ms")))
    if with_max:
        rows.append(_row(f"Max {label} (ms):", summary.get(f"max_{key}_ms")))
    rows.append(_row(f"Count {label}:", summary.get(f"count_{key}")))
    return rows


def _outcome_rows(summary: Mapping[str, Any]) -> list[str]:
    """The cell's outcome first: a reader must see an incomplete cell before its figures."""
    if "outcome" not in summary:
        return []
    rows = [_row("Cell outcome:", summary["outcome"])]
    if summary["outcome"] != "complete":
        rows.append(_row("Requests recorded / planned:",
                         f"{summary.get('recorded_requests')} / {summary.get('planned_requests')}"))
        rows.append(f"  {summary.get('outcome_reason') or ''}"[: _WIDTH * 2])
    return rows


def _offline_table(summary: Mapping[str, Any]) -> str:
    lines = [
        _banner(" Offline Throughput Result ", "="),
        *_outcome_rows(summary),
        _row("Requests:", summary["num_requests"]),
        _row("Elapsed time (s):", summary["elapsed_s"]),
        _row("Request throughput (req/s):", summary["requests_per_s"]),
        _row("Input token throughput (tok/s):", summary["input_tokens_per_s"]),
        _row("Output token throughput (tok/s):", summary["output_tokens_per_s"]),
        _row("Total token throughput (tok/s):", summary["total_tokens_per_s"]),
        _row("Nominal total tput (tok/s):", summary["nominal_total_tokens_per_s"]),
        "=" * _WIDTH,
    ]
    return "\n".join(lines)


# sampling fields shown in the header, in this order; the rest of what was sent shows as "extra"
_SAMPLING_KEYS = ("temperature", "top_p", "top_k")
_FORCING_KEYS = ("ignore_eos", "min_tokens", "stream", "stream_options", "endpoint")


def _sent_rows(summary: Mapping[str, Any]) -> list[str]:
    """What every request sent (sampling, extra body) and how its prompt was made."""
    rows = []
    sent = summary.get("sampling")
    if isinstance(sent, Mapping):
        shown = " ".join(f"{k}={sent[k]}" for k in _SAMPLING_KEYS if k in sent) or "server defaults"
        extra = {k: v for k, v in sent.items() if k not in _SAMPLING_KEYS + _FORCING_KEYS}
        if extra:
            shown += " extra=" + ",".join(f"{k}={v}" for k, v in extra.items())
        rows.append(f"{'Sampling sent:':<40} {shown}")
    prompts = summary.get("prompts")
    if isinstance(prompts, Mapping):
        rows.append(f"{'Prompts:':<40} {_prompt_source(prompts)}")
    return rows


def _prompt_source(prompts: Mapping[str, Any]) -> str:
    tokenizer = prompts.get("tokenizer")
    if not isinstance(tokenizer, Mapping):
        low, high = prompts.get("token_id_range") or (None, None)
        return f"token ids {low}..{high - 1 if high else '?'}, no tokenizer"
    text = f"{tokenizer.get('name')} (vocab {tokenizer.get('vocab_size')})"
    overhead = prompts.get("chat_template_overhead_tokens")
    if overhead is not None:
        text += f", chat template +{overhead} tok"
    return text


def _window(summary: Mapping[str, Any]) -> str | None:
    start, end = summary.get("steady_state_start_s"), summary.get("steady_state_end_s")
    return None if start is None else f"{start:.2f}-{end:.2f}"


def _connection_rows(summary: Mapping[str, Any]) -> list[str]:
    """Retries and the client's self-check, shown whenever they say something."""
    rows = []
    if summary.get("retried"):
        rows.append(_row("Retried (connection closed):", summary["retried"]))
    check = summary.get("client_check")
    if check is not None and check != "ok":
        rows.append(_row("Client self-check:", check.replace("_", " ")))
    return rows


def _lateness_rows(summary: Mapping[str, Any]) -> list[str]:
    """Late sends (behind the schedule, slot waits excluded) and the cell's flag."""
    if "sends_late" not in summary:
        return []
    late = summary["sends_late"]
    if late is None:
        verdict = "n/a (a burst)" if summary.get("max_send_lateness_ms") is not None else None
    else:
        verdict = f"YES: p99 > {summary['late_send_threshold_ms']:g} ms" if late else "no"
    rows = [
        _banner("Send Lateness", "-"),
        _row("Median send lateness (ms):", summary.get("median_send_lateness_ms")),
        _row("P99 send lateness (ms):", summary.get("p99_send_lateness_ms")),
        _row("Max send lateness (ms):", summary.get("max_send_lateness_ms")),
        _row("Sends fell behind schedule:", verdict),
    ]
    if late is not None and summary.get("burst_sends"):
        # the opening burst was left out of the figures above: say so, and how long it took
        rows.append(_row("Opening burst, not judged:", f"{summary['burst_sends']} sends, "
                         f"max {summary['max_burst_send_lateness_ms']:.2f} ms"))
    if summary.get("clock_drift_flagged"):
        rows.append(_row("Clock drift during cell (ms):", f"{summary['clock_drift_max_ms']:.2f} FLAGGED"))
    return rows


def _turn_rows(summary: Mapping[str, Any]) -> list[str]:
    """TTFT per turn of a multi-turn cell."""
    turns = summary.get("ttft_by_turn") or []
    if not turns:
        return []
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"  # a turn none of whose requests succeeded

    return [_banner("TTFT per Turn", "-"),
            *(_row(f"Turn {t['turn']} mean / P99 TTFT (ms):", f"{ms(t['mean_ttft_ms'])} / {ms(t['p99_ttft_ms'])}")
              for t in turns)]


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """The summary as the text table both reference clients print (online or offline)."""
    if summary.get("mode") == "offline":
        return _offline_table(summary)
    lines = [
        _banner(" Serving Benchmark Result ", "="),
        *_outcome_rows(summary),
        _row("Compat mode:", summary["compat_mode"]),
        *_sent_rows(summary),
        _row("Traffic request rate:", summary["request_rate"]),
        _row("Max request concurrency:", summary["max_concurrency"] or "not set"),
        _row("Successful requests:", summary["completed"]),
        _row("Failed requests:", summary["failed"]),
        *_connection_rows(summary),
        _row("Benchmark duration (s):", summary["duration_s"]),
        _row("Total input tokens:", summary["total_input_tokens"]),
        _row("Total generated tokens:", summary["total_output_tokens"]),
    ]
    if summary["output_tokens_fallback_requests"]:
        lines.append(
            _row(
                f"Requests w/o usage ({summary['output_tokens_fallback']}):",
                summary["output_tokens_fallback_requests"],
            )
        )
    if summary.get("short_output_requests"):
        lines.append(_row("Short of forced output length:", summary["short_output_requests"]))
    lines.append(_row("Request throughput (req/s):", summary["request_throughput_per_s"]))
    if summary.get("request_goodput_per_s") is not None:
        lines.append(_row("Request goodput (req/s):", summary["request_goodput_per_s"]))
    lines += [
        _row("Input token throughput (tok/s):", summary["input_throughput_tokens_per_s"]),
        _row("Output token throughput (tok/s):", summary["output_throughput_tokens_per_s"]),
        _row(
            "Steady-state output tput (tok/s):",
            summary["steady_state_output_throughput_tokens_per_s"],
        ),
        _row("Steady-state window (s):", _window(summary)),
        _row("Peak output token throughput (tok/s):", summary["peak_output_tokens_per_s"]),
        _row("Peak concurrent requests:", summary["peak_concurrency_requests"]),
        _row("Total token throughput (tok/s):", summary["total_throughput_tokens_per_s"]),
        _row("Concurrency:", summary["mean_concurrency_requests"]),
        _banner("Time to First Token", "-"),
        *_stat_rows(summary, "ttft", "TTFT"),
        _banner("Time per Output Token (excl. 1st token)", "-"),
        *_stat_rows(summary, "tpot", "TPOT"),
        _banner("Inter-token Latency", "-"),
        *_stat_rows(summary, "itl", "ITL", with_max=True),
        *_stat_rows(summary, "itl_per_token", "ITL/token", with_max=True),
        _banner("End-to-end Latency", "-"),
        *_stat_rows(summary, "e2el", "E2EL"),
        _banner("Client Queue Time", "-"),
        *_stat_rows(summary, "queue_time", "queue time"),
        *_lateness_rows(summary),
        *_turn_rows(summary),
    ]
    errors = summary.get("errors") or []
    if errors:
        lines.append(_banner("First Errors", "-"))
        lines += [e[:_WIDTH * 2] for e in errors]
    if summary.get("output_tokens_per_event_note"):
        lines.append(f"Note: {summary['output_tokens_per_event_note']}")
    if summary.get("hint"):
        lines.append(f"Hint: {summary['hint']}")
    lines.append("=" * _WIDTH)
    return "\n".join(lines)
