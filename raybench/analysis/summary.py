"""One cell's summary: raybench's own fields plus vLLM's and SGLang's result names.

``summarize_cell`` turns a cell's raw tables into the dict written as ``summary.json``. It holds
raybench's fields (unit in every name: ``duration_s``, ``output_throughput_tokens_per_s``) and,
beside them, the keys of vLLM's ``--save-result`` JSON and SGLang's JSONL (``duration``,
``output_throughput``, ``p99_ttft_ms``, ``mean_e2e_latency_ms``, ``concurrency``…), so tools built
on either read it unchanged. Every value is a plain Python scalar, list or None (JSON-ready).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from raybench.analysis.cell import (
    InFlight,
    concurrent_streams,
    effective_target,
    first_errors,
    good_requests,
    peak_output_tokens_per_s,
    steady_state,
    validate_slos,
)
from raybench.analysis.compat import CompatMode, CompatRules, TokenFallback, compat_rules
from raybench.analysis.lateness import DEFAULT_LATE_SEND_THRESHOLD_MS, send_lateness_fields
from raybench.analysis.metrics import CellTables, ItlLists, per_request_frame, pooled_itl
from raybench.analysis.stats import (
    SGLANG_PERCENTILES,
    describe,
    describe_repeated,
    safe_rate,
    stats_fields,
    validate_percentiles,
)
from raybench.analysis.table import format_summary_table
from raybench.errors import ConfigError
from raybench.store.schema import RequestStatus

SUMMARY_VERSION = 1
_NS_PER_S = 1e9

__all__ = [
    "SUMMARY_VERSION",
    "format_summary_table",
    "summarize_cell",
    "summarize_offline",
    "summary_frame",
]


def summarize_cell(
    requests: pl.DataFrame,
    chunks: pl.DataFrame,
    *,
    compat: CompatMode | str = CompatMode.RAYBENCH,
    target_concurrency: int | None = None,
    request_rate_per_s: float | None = None,
    burstiness: float = 1.0,
    goodput_slos_ms: Mapping[str, float] | None = None,
    percentiles: Sequence[float] = (50, 90, 95, 99),
    forced_output_len: bool = False,
    late_send_threshold_ms: float = DEFAULT_LATE_SEND_THRESHOLD_MS,
) -> dict[str, Any]:
    """Summarise one cell (every row of ``requests`` belongs to one ``cell_id``).

    ``forced_output_len``: the client forced each request's output to its ``max_tokens``
    (ignore_eos or min_tokens sent), so a successful request with fewer output tokens is
    counted in ``short_output_requests`` (a server that ignores those fields).

    ``target_concurrency`` is the closed-loop cap (None: no cap, so no steady-state window);
    ``request_rate_per_s`` None means infinite ("inf" in vLLM's field); ``goodput_slos_ms`` maps
    vLLM's names ttft / tpot / e2el to SLOs in ms; ``percentiles`` (0..100) are added to the
    90/95/99 that SGLang's field names need; a cell whose p99 send lateness exceeds
    ``late_send_threshold_ms`` is flagged ``sends_late`` (see ``lateness.py``). Raises ConfigError on an empty or mixed-cell table.
    """
    rules = compat_rules(compat)
    requested = validate_percentiles(percentiles)
    pcts = validate_percentiles((*requested, *SGLANG_PERCENTILES))
    slos = validate_slos(goodput_slos_ms)
    rate = _validate_rate(request_rate_per_s)
    if isinstance(burstiness, bool) or not isinstance(burstiness, (int, float)) or not (
        math.isfinite(burstiness) and burstiness > 0
    ):
        raise ConfigError.invalid("burstiness", burstiness, "a finite number > 0")
    tables = CellTables.from_raw(requests, chunks)
    cell_id = _single_cell(tables.requests)
    # the raw table: normalising drops ``session``, which bounds what a multi-turn cell has in flight
    target = effective_target(target_concurrency, concurrent_streams(requests))
    per = per_request_frame(tables, rules)
    ok = per.filter(pl.col("ok"))
    t0 = int(tables.requests["t_sent_ns"].min())
    duration_s = (int(tables.requests["t_done_ns"].max()) - t0) / _NS_PER_S
    out: dict[str, Any] = {
        "summary_version": SUMMARY_VERSION,
        "cell_id": cell_id,
        **_mode_fields(rules),
        "num_prompts": tables.requests.height,
        "request_rate": "inf" if rate is None else rate,
        "request_rate_per_s": rate,
        "burstiness": float(burstiness),
        "max_concurrency": target_concurrency,
        "target_concurrency": target_concurrency,
        "percentiles": list(requested),
        **_count_fields(tables.requests, t0, duration_s),
        **_token_fields(ok, tables, rules, duration_s),
        **short_output_fields(ok, forced_output_len),
        **_load_fields(tables, ok, t0, target, duration_s),
        **_goodput_fields(per, slos, duration_s),
        **_latency_fields(ok, pooled_itl(tables, rules), pcts),
        **send_lateness_fields(requests, threshold_ms=late_send_threshold_ms),
    }
    return out


def _validate_rate(request_rate_per_s: float | None) -> float | None:
    if request_rate_per_s is None or request_rate_per_s == math.inf:
        return None
    if isinstance(request_rate_per_s, bool) or not isinstance(request_rate_per_s, (int, float)) or not (
        math.isfinite(request_rate_per_s) and request_rate_per_s > 0
    ):
        raise ConfigError.invalid(
            "request_rate_per_s", request_rate_per_s, "a number > 0, or None for inf"
        )
    return float(request_rate_per_s)


def _single_cell(requests: pl.DataFrame) -> str:
    if requests.height == 0:
        raise ConfigError.invalid("requests", "0 rows", "a cell with at least one request row")
    cells = requests["cell_id"].unique().sort().to_list()
    if len(cells) != 1:
        raise ConfigError.invalid(
            "requests.cell_id", cells, "one cell per summary; filter by cell_id first"
        )
    return str(cells[0])


def _mode_fields(rules: CompatRules) -> dict[str, Any]:
    return {
        "compat_mode": rules.mode.value,
        "compat_reference": rules.reference,
        "ttft_trigger": rules.ttft_trigger.value,
        "e2e_end_event": rules.e2e_end.value,
        "itl_chunks": rules.itl_chunks.value,
        "prompt_tokens_source": rules.prompt_tokens.value,
    }


def short_output_fields(ok: pl.DataFrame, forced: bool) -> dict[str, Any]:
    """Successful requests with fewer output tokens than the forced length (their max_tokens)."""
    short = ok.filter(pl.col("short_output")) if forced else ok.clear()
    return {
        "forced_output_len": forced,
        "short_output_requests": short.height if forced else None,
        "short_output_request_ids": short.sort("request_id")["request_id"].head(10).to_list(),
    }


def _count_fields(requests: pl.DataFrame, t0: int, duration_s: float) -> dict[str, Any]:
    counts = dict(requests.group_by("status").len().iter_rows())
    completed = int(counts.get(RequestStatus.OK.value, 0))
    out: dict[str, Any] = {
        "completed": completed,
        "failed": requests.height - completed,
    }
    for status in RequestStatus:
        if status is not RequestStatus.OK:
            out[f"failed_{status.value}"] = int(counts.get(status.value, 0))
    out["retried"] = _retried(requests)
    out["errors"] = first_errors(requests)
    out["duration"] = duration_s
    out["duration_s"] = duration_s
    out["t_start_ns"] = t0
    out["t_end_ns"] = int(requests["t_done_ns"].max())
    return out


def _retried(requests: pl.DataFrame) -> int:
    """Requests sent twice because their connection closed before any response byte."""
    return int((requests["attempts"].fill_null(1) > 1).sum())


def _token_fields(
    ok: pl.DataFrame, tables: CellTables, rules: CompatRules, duration_s: float
) -> dict[str, Any]:
    total_in = int(ok["prompt_tokens_used"].sum())  # the mode's count: workload or server usage
    total_out = int(ok["output_tokens_used"].sum())
    server_in = ok["server_prompt_tokens"].drop_nulls()
    fallback_n = int(ok["output_tokens_fallback"].sum())
    source = (
        "the requested max_tokens"
        if rules.token_fallback is TokenFallback.MAX_TOKENS
        else "the sum of chunk n_tokens"
    )
    note = (
        f"{fallback_n} of {ok.height} successful requests had no server usage"
        f"{' (or 0)' if rules.fallback_on_zero else ''}; their output tokens are {source}"
        if fallback_n
        else "every successful request's output tokens come from server usage"
    )
    return {
        **_chunk_count_fields(ok),
        "total_input_tokens": total_in,
        "total_server_prompt_tokens": int(server_in.sum()) if server_in.len() else None,
        "server_prompt_tokens_requests": int(server_in.len()),
        "total_output_tokens": total_out,
        "total_output_tokens_from_chunks": int(tables.ok_chunks["n_tokens"].sum()),
        "output_tokens_fallback": rules.token_fallback.value,
        "output_tokens_fallback_requests": fallback_n,
        "output_tokens_usage_requests": ok.height - fallback_n,
        "output_tokens_note": note,
        "request_throughput": safe_rate(ok.height, duration_s),
        "request_throughput_per_s": safe_rate(ok.height, duration_s),
        "input_throughput": safe_rate(total_in, duration_s),
        "input_throughput_tokens_per_s": safe_rate(total_in, duration_s),
        "server_input_throughput_tokens_per_s": (
            safe_rate(int(server_in.sum()), duration_s) if server_in.len() else None
        ),
        "output_throughput": safe_rate(total_out, duration_s),
        "output_throughput_tokens_per_s": safe_rate(total_out, duration_s),
        "total_token_throughput": safe_rate(total_in + total_out, duration_s),
        "total_throughput": safe_rate(total_in + total_out, duration_s),
        "total_throughput_tokens_per_s": safe_rate(total_in + total_out, duration_s),
    }


def _chunk_count_fields(ok: pl.DataFrame) -> dict[str, Any]:
    """Where the server's usage and the tokens its events were counted as part (requests with usage only).

    A server that sends usage only at the end (no ``continuous_usage_stats``) gets one token
    counted per text event; with speculative decoding, or tokens whose text is held back, an
    event carries more. Per-token ITL, peak and steady-state output tokens/s are then counts of
    events, not tokens: the note says so and by how much, rather than leaving them as measured.
    """
    with_usage = ok.filter(~pl.col("output_tokens_fallback"))
    usage_n = int(with_usage["output_tokens_used"].sum())
    events_n = int(with_usage["chunk_tokens"].sum())
    apart = int((with_usage["output_tokens_used"] != with_usage["chunk_tokens"]).sum())
    note = None
    if apart:
        note = (f"{apart} of {with_usage.height} successful requests' usage counts {usage_n} output tokens where their "
                f"events carried {events_n} ({(usage_n - events_n) / max(events_n, 1):+.1%}): ITL/token, peak and "
                "steady-state output tok/s follow the events' counts (one token per text event from a server that "
                "sends usage only at the end); where the server has it, ask for usage per event "
                "(stream_options.continuous_usage_stats)")
    return {"output_tokens_usage_vs_events_requests": apart, "output_tokens_per_event_note": note}


def _load_fields(
    tables: CellTables, ok: pl.DataFrame, t0: int, target: int | None, duration_s: float
) -> dict[str, Any]:
    flight = InFlight.sweep(tables.requests)
    # no token arrived: there is no peak to report (None, not a measured 0)
    peak_tokens = (peak_output_tokens_per_s(tables.ok_chunks, t0, round(duration_s * _NS_PER_S))
                   if tables.ok_chunks["n_tokens"].sum() else None)
    mean_in_flight = safe_rate(float(ok["e2e_ms"].drop_nulls().sum()) / 1e3, duration_s)
    steady = steady_state(flight, tables.ok_chunks, target)
    return {
        "max_output_tokens_per_s": peak_tokens,
        "peak_output_tokens_per_s": peak_tokens,
        "max_concurrent_requests": flight.peak(),
        "peak_concurrency_requests": flight.peak(),
        "concurrency": mean_in_flight,
        "mean_concurrency_requests": mean_in_flight,
        "steady_state_target_in_flight": target,
        "steady_state_threshold_in_flight": None if steady is None else steady.threshold_in_flight,
        "steady_state_start_s": None if steady is None else (steady.start_ns - t0) / _NS_PER_S,
        "steady_state_end_s": None if steady is None else (steady.end_ns - t0) / _NS_PER_S,
        "steady_state_duration_s": None if steady is None else steady.duration_s,
        "steady_state_output_tokens": None if steady is None else steady.output_tokens,
        "steady_state_output_throughput_tokens_per_s": (
            None if steady is None else steady.output_tokens_per_s
        ),
    }


def _goodput_fields(per: pl.DataFrame, slos: Mapping[str, float], duration_s: float) -> dict[str, Any]:
    good = good_requests(per, slos) if slos else None
    rate = None if good is None else safe_rate(good, duration_s)
    out: dict[str, Any] = {
        "request_goodput": rate,
        "request_goodput_per_s": rate,
        "goodput_completed": good,
    }
    for name in ("ttft", "tpot", "e2el"):
        out[f"goodput_slo_{name}_ms"] = slos.get(name)
    return out


def _latency_fields(ok: pl.DataFrame, itl: ItlLists, pcts: Sequence[float]) -> dict[str, Any]:
    def column(name: str) -> np.ndarray:
        return ok[name].drop_nulls().to_numpy().astype(np.float64)

    e2e = describe(column("e2e_ms"), pcts)
    sglang_e2e = stats_fields(e2e, "e2e_latency")
    del sglang_e2e["count_e2e_latency"]  # count_e2el already says it
    return {
        **stats_fields(describe(column("ttft_ms"), pcts), "ttft"),
        **stats_fields(describe(column("tpot_ms"), pcts), "tpot"),
        **stats_fields(describe(itl.per_chunk_ms, pcts), "itl", with_max=True),
        **stats_fields(e2e, "e2el"),
        **sglang_e2e,
        **stats_fields(describe_repeated(itl.token_gap_ms, itl.token_gap_tokens, pcts), "itl_per_token",
                       with_max=True),
        **stats_fields(describe(column("queue_time_ms"), pcts), "queue_time"),
    }


def summarize_offline(
    elapsed_s: float,
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    nominal_input_len: int,
    nominal_output_len: int,
) -> dict[str, Any]:
    """Offline (engine mode) throughput, with vLLM's and SGLang's offline field names.

    ``elapsed_s`` is the wall time of the one batched generate call (engine start-up excluded);
    token counts are per request from the engine's outputs. The nominal figures
    (num × (in + out), what the seed's offline numbers used) are reported beside them.
    """
    if isinstance(elapsed_s, bool) or not isinstance(elapsed_s, (int, float)) or not (
        math.isfinite(elapsed_s) and elapsed_s > 0
    ):
        raise ConfigError.invalid("elapsed_s", elapsed_s, "a finite number of seconds > 0")
    prompt = np.asarray(prompt_tokens, dtype=np.int64)
    output = np.asarray(output_tokens, dtype=np.int64)
    if prompt.shape != output.shape or prompt.ndim != 1:
        raise ConfigError.invalid(
            "output_tokens", f"{output.size} values", f"one per prompt ({prompt.size} prompts)"
        )
    nominal = (("nominal_input_len", nominal_input_len), ("nominal_output_len", nominal_output_len))
    for name, value in nominal:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError.invalid(name, value, "an int >= 0")
    if (prompt < 0).any() or (output < 0).any():
        raise ConfigError.invalid("prompt_tokens/output_tokens", "a negative count", "counts >= 0")
    num = int(prompt.size)
    total_in, total_out = int(prompt.sum()), int(output.sum())
    nominal_total = num * (nominal_input_len + nominal_output_len)
    return {
        "summary_version": SUMMARY_VERSION,
        "mode": "offline",
        "num_requests": num,
        "elapsed_time": float(elapsed_s),
        "elapsed_s": float(elapsed_s),
        "total_prompt_tokens": total_in,
        "total_output_tokens": total_out,
        "total_num_tokens": total_in + total_out,
        "requests_per_second": num / elapsed_s,
        "tokens_per_second": (total_in + total_out) / elapsed_s,
        "request_throughput": num / elapsed_s,
        "input_throughput": total_in / elapsed_s,
        "output_throughput": total_out / elapsed_s,
        "total_throughput": (total_in + total_out) / elapsed_s,
        "requests_per_s": num / elapsed_s,
        "input_tokens_per_s": total_in / elapsed_s,
        "output_tokens_per_s": total_out / elapsed_s,
        "total_tokens_per_s": (total_in + total_out) / elapsed_s,
        "nominal_input_len": nominal_input_len,
        "nominal_output_len": nominal_output_len,
        "nominal_total_tokens": nominal_total,
        "nominal_output_tokens": num * nominal_output_len,
        "nominal_total_tokens_per_s": nominal_total / elapsed_s,
        "nominal_output_tokens_per_s": num * nominal_output_len / elapsed_s,
    }


def summary_frame(summaries: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """One row per cell, scalar columns only (for ``summary.parquet``).

    Lists (``errors``, ``percentiles``) are left out; a key missing from a summary is null in
    its row. ``request_rate`` becomes a float column (``"inf"`` → inf) so the column has one type.
    """
    names: dict[str, None] = {}
    rows = []
    for summary in summaries:
        row = {
            k: (math.inf if k == "request_rate" and v == "inf" else v)
            for k, v in summary.items()
            if v is None or isinstance(v, (bool, int, float, str))
        }
        if "request_rate" in row and row["request_rate"] is not None:
            row["request_rate"] = float(row["request_rate"])
        names.update(dict.fromkeys(row))
        rows.append(row)
    columns = {name: [row.get(name) for row in rows] for name in names}
    return pl.DataFrame(columns, strict=False)
