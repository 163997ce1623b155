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


def _offline_table(summary: Mapping[str, Any]) -> str:
    lines = [
        _banner(" Offline Throughput Result ", "="),
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


def _workload_rows(summary: Mapping[str, Any]) -> list[str]:
    """TTFT per turn of a multi-turn cell; how late a scheduled cell's sends were."""
    rows = []
    turns = summary.get("ttft_by_turn") or []
    if turns:
        rows.append(_banner("TTFT per Turn", "-"))
        rows += [_row(f"Turn {t['turn']} mean / P99 TTFT (ms):", f"{t['mean_ttft_ms']:.2f} / {t['p99_ttft_ms']:.2f}")
                 for t in turns]
    if "sends_fell_behind" in summary:
        rows.append(_banner("Sends Against Schedule", "-"))
        rows.append(_row("P99 / max lateness (ms):", f"{summary['p99_schedule_lateness_ms']:.2f} / "
                                                      f"{summary['max_schedule_lateness_ms']:.2f}"))
        rows.append(_row("Sends fell behind:", "yes (the load offered was lower than planned)"
                         if summary["sends_fell_behind"] else "no"))
    return rows


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """The summary as the text table both reference clients print (online or offline)."""
    if summary.get("mode") == "offline":
        return _offline_table(summary)
    lines = [
        _banner(" Serving Benchmark Result ", "="),
        _row("Compat mode:", summary["compat_mode"]),
        *_sent_rows(summary),
        _row("Traffic request rate:", summary["request_rate"]),
        _row("Max request concurrency:", summary["max_concurrency"] or "not set"),
        _row("Successful requests:", summary["completed"]),
        _row("Failed requests:", summary["failed"]),
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
        *_workload_rows(summary),
    ]
    errors = summary.get("errors") or []
    if errors:
        lines.append(_banner("First Errors", "-"))
        lines += [e[:_WIDTH * 2] for e in errors]
    if summary.get("hint"):
        lines.append(f"Hint: {summary['hint']}")
    lines.append("=" * _WIDTH)
    return "\n".join(lines)
