"""One cell up close: TTFT and ITL distributions, load and output rate over time, and its flags.

A summary's means can hide a cell that never reached its concurrency, a client that could not
keep up, or a tail of failures; these panels show them. Data are pre-binned here (at most a few
hundred points per panel), so a report of a hundred cells stays small however many chunks each
cell streamed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import polars as pl

from raybench.analysis.cell import InFlight
from raybench.analysis.metrics import CellTables, itl_lists, request_metrics
from raybench.priority import niceness_hint
from raybench.store.outcome import outcome_of

PANEL_WIDTH, PANEL_HEIGHT = 330, 150
_HIST_BINS = 30
_MAX_STEPS = 600  # in-flight points kept; more events are reduced to the max per time bin
_TIME_BINS = 80
_NICE_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_WINDOW_COLOR = "#4c78a8"


class FlagLevel(str, enum.Enum):
    ERROR = "error"  # numbers of this cell are missing requests or time
    WARNING = "warning"  # numbers are complete but may not mean what they seem
    OK = "ok"


@dataclass(frozen=True, kw_only=True)
class Flag:
    level: FlagLevel
    text: str


def cell_flags(summary: Mapping[str, Any]) -> list[Flag]:
    """What a reader must know before trusting a cell's numbers (an ``ok`` flag when nothing)."""
    flags: list[Flag] = []
    outcome = outcome_of(summary)
    if not outcome.complete:
        flags.append(Flag(level=FlagLevel.ERROR, text=(
            f"{outcome.kind.value.upper()}: {outcome.recorded_requests} of {outcome.planned_requests} requests "
            f"recorded ({outcome.reason}); left out of the charts and of comparisons; `raybench run --resume` runs it again")))
    failed = summary.get("failed") or 0
    if failed:
        total = summary.get("num_prompts") or failed + (summary.get("completed") or 0)
        kinds = ", ".join(
            f"{key.removeprefix('failed_')} {value}"
            for key, value in summary.items()
            if key.startswith("failed_") and isinstance(value, int) and value
        )
        errors = "; ".join((summary.get("errors") or [])[:3])
        flags.append(Flag(level=FlagLevel.ERROR, text=f"{failed} of {total} requests failed ({kinds})"
                          + (f": {errors}" if errors else "")))
    if summary.get("client_saturated"):
        lag = max((a.get("max_loop_lag_ms") or 0 for a in summary.get("actors") or []), default=0)
        flags.append(Flag(level=FlagLevel.WARNING, text=(
            f"client saturated (event-loop lag up to {lag:.0f} ms, or an actor near 100 % CPU): "
            "client-side latencies may include the client's own delay; use more --actors")))
    if summary.get("host_contended"):
        lag = max((a.get("max_loop_lag_ms") or 0 for a in summary.get("actors") or []), default=0)
        share = max((a.get("cpu_share") or 0 for a in summary.get("actors") or []), default=0)
        flags.append(Flag(level=FlagLevel.WARNING, text=(
            f"host contended (event-loop lag up to {lag:.0f} ms while the client used {share:.0%} of a core): "
            "another process took the client's CPUs; client-side latencies may include that wait"
            + "".join(f"; {h}" for h in {niceness_hint(a.get("niceness")) for a in summary.get("actors") or []} if h))))
    reused = summary.get("prompts_sent_before")
    if isinstance(reused, dict) and reused.get("flagged"):
        flags.append(Flag(level=FlagLevel.WARNING, text=(
            f"{reused['share']:.0%} of the prompt tokens of its first {reused.get('sampled_prompts')} prompts begin as "
            f"prompts {', '.join(reused.get('cells') or [])} sent to the same server, not reset since: a prefix "
            "cache may have answered them, and TTFT then measures the cache (reset_cache=True on the backend "
            "resets it between cells)")))
    if summary.get("retried"):
        flags.append(Flag(level=FlagLevel.WARNING, text=(
            f"{summary['retried']} request(s) sent twice: the server closed their connection before answering "
            "(try --no-keepalive)")))
    if summary.get("lost_actors"):
        replaced = summary.get("replaced_actors") or 0
        flags.append(Flag(level=FlagLevel.WARNING if replaced >= summary["lost_actors"] else FlagLevel.ERROR,
                          text=f"{summary['lost_actors']} load-generator actor(s) lost, {replaced} replaced "
                          "(their in-flight requests are disconnected rows)"))
    if summary.get("short_output_requests"):
        flags.append(Flag(level=FlagLevel.WARNING, text=(
            f"{summary['short_output_requests']} successful request(s) stopped short of the forced output length "
            "(the server may ignore ignore_eos/min_tokens)")))
    if summary.get("requests_not_recorded"):
        flags.append(Flag(level=FlagLevel.ERROR,
                          text=f"{summary['requests_not_recorded']} request(s) were never recorded"))
    if summary.get("sends_late"):
        # the self-check read the client's CPU and the host's: with both fine, what is left is a
        # machine that stalls every process (measured 20-40 ms stalls of a bare sleep loop on a VM)
        machine = summary.get("client_saturated") is False and summary.get("host_contended") is False
        flags.append(Flag(level=FlagLevel.WARNING, text=(
            f"sends fell behind schedule: p99 {summary['p99_send_lateness_ms']:.1f} ms late "
            f"(threshold {summary['late_send_threshold_ms']:g} ms): the offered load was lower than planned"
            + ("; the client was neither saturated nor short of CPU, which leaves the machine itself: a VM "
               "whose host deschedules it stalls every process for tens of ms now and then, and the sends "
               "due meanwhile leave late; rerun the cell, or put the client on a quieter node" if machine else ""))))
    if summary.get("clock_drift_flagged"):
        flags.append(Flag(level=FlagLevel.WARNING, text=(
            f"load-generator clocks drifted {summary['clock_drift_max_ms']:.2f} ms during the cell: "
            "cross-actor times may be off by that much")))
    if summary.get("timed_out"):
        flags.append(Flag(level=FlagLevel.ERROR, text="the cell hit its deadline; unfinished requests were cancelled"))
    if summary.get("output_tokens_fallback_requests"):
        flags.append(Flag(level=FlagLevel.WARNING, text=str(summary.get("output_tokens_note"))))
    if summary.get("output_tokens_per_event_note"):
        flags.append(Flag(level=FlagLevel.WARNING, text=str(summary["output_tokens_per_event_note"])))
    # with no completed request there is no rate to take a window of: its failures say what happened
    if summary.get("steady_state_target_in_flight") and summary.get("steady_state_start_s") is None \
            and summary.get("completed"):
        flags.append(Flag(level=FlagLevel.WARNING, text=(
            f"never reached 90 % of {summary['steady_state_target_in_flight']} requests in flight: "
            "no steady-state window")))
    if not flags:
        flags.append(Flag(level=FlagLevel.OK, text="no failures; client not saturated, host not contended"))
    return flags


def histogram(values: np.ndarray, bins: int = _HIST_BINS) -> pl.DataFrame:
    """Counts per equal bin (``start``, ``end``, ``count``); a far tail is folded into the last bin.

    When the largest value is more than 4x the 99th percentile the bins stop at the 99.5th, so
    one stall does not squeeze every other bar into the first bin; the last bin then counts the
    tail too, and its ``tail_max`` says where the data stopped (null in every other bin).
    """
    values = values[np.isfinite(values)]
    if values.size == 0:
        return pl.DataFrame(schema={"start": pl.Float64, "end": pl.Float64, "count": pl.Int64, "tail_max": pl.Float64})
    lo, hi = float(values.min()), float(values.max())
    p99 = float(np.percentile(values, 99))
    top = float(np.percentile(values, 99.5)) if hi > 4 * p99 > 0 else hi
    if top <= lo:
        top = lo + max(abs(lo) * 1e-3, 1e-6)
    counts, edges = np.histogram(np.clip(values, lo, top), bins=bins, range=(lo, top))
    tail = [None] * bins
    if hi > top:
        tail[-1] = hi
    return pl.DataFrame(
        {"start": edges[:-1], "end": edges[1:], "count": counts.astype(np.int64), "tail_max": tail},
        schema={"start": pl.Float64, "end": pl.Float64, "count": pl.Int64, "tail_max": pl.Float64},
    )


def _bin_width_s(duration_s: float) -> float:
    target = duration_s / _TIME_BINS
    return next((w for w in _NICE_S if w >= target), _NICE_S[-1])


@dataclass(frozen=True, kw_only=True)
class DrillData:
    """The pre-binned frames behind one cell's panels; times in s from the cell's first request."""

    ttft_hist: pl.DataFrame  # start/end (ms), count
    itl_hist: pl.DataFrame  # start/end (ms), count
    in_flight: pl.DataFrame  # t_s, in_flight
    tokens: pl.DataFrame  # t_s, output_tokens_per_s
    bin_width_s: float
    window: pl.DataFrame  # start_s, end_s (zero or one row)


def drilldown_data(requests: pl.DataFrame, chunks: pl.DataFrame, summary: Mapping[str, Any]) -> DrillData | None:
    """The panels' data, or None for a cell without per-request timing (offline engine mode)."""
    compat = summary.get("compat_mode") or "raybench"
    tables = CellTables.from_raw(requests, chunks)
    if tables.chunks.is_empty():
        return None
    per = request_metrics(requests, chunks, compat).filter(pl.col("ok"))
    itl = itl_lists(requests, chunks, compat)
    t0 = int(tables.requests["t_sent_ns"].min())
    flight = InFlight.sweep(tables.requests)
    steps = pl.DataFrame({"t_s": (flight.t_ns - t0) / 1e9, "in_flight": flight.count})
    if steps.height > _MAX_STEPS:
        width = max(float(steps["t_s"].max()) / (_MAX_STEPS // 2), 1e-9)
        steps = (
            steps.group_by((pl.col("t_s") // width * width).alias("t_s"))
            .agg(pl.col("in_flight").max())
            .sort("t_s")
        )
    duration_s = (int(tables.requests["t_done_ns"].max()) - t0) / 1e9
    width_s = _bin_width_s(max(duration_s, 1e-3))
    n_bins = int(np.ceil(duration_s / width_s)) + 1
    binned = (
        tables.ok_chunks.filter(pl.col("n_tokens") >= 1)
        .group_by(((pl.col("t_ns") - t0) // int(width_s * 1e9)).alias("bin"))
        .agg(pl.col("n_tokens").sum().alias("tokens"))
    )
    tokens = (
        pl.DataFrame({"bin": np.arange(n_bins, dtype=np.int64)})
        .join(binned, on="bin", how="left")
        .select(
            (pl.col("bin") * width_s).alias("t_s"),
            (pl.col("tokens").fill_null(0) / width_s).alias("output_tokens_per_s"),
        )
    )
    start, end = summary.get("steady_state_start_s"), summary.get("steady_state_end_s")
    window = pl.DataFrame(
        {"start_s": [start] if start is not None else [], "end_s": [end] if end is not None else []},
        schema={"start_s": pl.Float64, "end_s": pl.Float64},
    )
    return DrillData(
        ttft_hist=histogram(per["ttft_ms"].drop_nulls().to_numpy().astype(np.float64)),
        itl_hist=histogram(itl.per_chunk_ms),
        in_flight=steps,
        tokens=tokens,
        bin_width_s=width_s,
        window=window,
    )


def _hist_panel(hist: pl.DataFrame, title: str, color: str) -> alt.Chart:
    tail = hist["tail_max"].drop_nulls()
    if tail.len():
        title = f"{title}; last bar up to {tail[0]:,.1f}"
    return (
        alt.Chart(hist, title=title)
        .mark_bar(color=color, opacity=0.85)
        .encode(
            x=alt.X("start:Q", title="ms", bin="binned"),
            x2="end:Q",
            y=alt.Y("count:Q", title="requests" if "TTFT" in title else "gaps"),
            tooltip=[alt.Tooltip("start:Q", format=",.2f"), alt.Tooltip("end:Q", format=",.2f"), "count:Q",
                     alt.Tooltip("tail_max:Q", title="tail up to", format=",.2f")],
        )
        .properties(width=PANEL_WIDTH, height=PANEL_HEIGHT)
    )


def _time_panel(data: pl.DataFrame, window: pl.DataFrame, *, y: str, y_title: str, title: str, color: str,
                step: bool) -> alt.LayerChart:
    time_scale = alt.Scale(zero=True, nice=False)
    shade = (
        alt.Chart(window)
        .mark_rect(color=_WINDOW_COLOR, opacity=0.15)
        .encode(x=alt.X("start_s:Q", scale=time_scale), x2="end_s:Q", tooltip=[alt.Tooltip("start_s:Q", format=".2f"),
                                                     alt.Tooltip("end_s:Q", format=".2f")])
    )
    line = (
        alt.Chart(data)
        .mark_line(color=color, interpolate="step-after" if step else "linear")
        .encode(x=alt.X("t_s:Q", title="time since the first request (s)", scale=time_scale), y=alt.Y(f"{y}:Q", title=y_title),
                tooltip=[alt.Tooltip("t_s:Q", format=".3f"), alt.Tooltip(f"{y}:Q", format=",.1f")])
    )
    return alt.layer(shade, line, title=title).properties(width=PANEL_WIDTH, height=PANEL_HEIGHT)


def cell_drilldown(data: DrillData, *, title: str, color: str = "#4c78a8") -> alt.VConcatChart:
    """Four panels of one cell; the shaded band is the steady-state window (summary's)."""
    return alt.vconcat(
        alt.hconcat(
            _hist_panel(data.ttft_hist, "TTFT distribution (ms)", color),
            _hist_panel(data.itl_hist, "ITL distribution (ms, per chunk)", color),
        ),
        alt.hconcat(
            _time_panel(data.in_flight, data.window, y="in_flight", y_title="requests", color=color, step=True,
                        title="Requests in flight (shaded: steady state)"),
            _time_panel(data.tokens, data.window, y="output_tokens_per_s", y_title="tokens/s", color=color,
                        step=False, title=f"Output tokens/s ({data.bin_width_s:g} s bins)"),
        ),
        title=alt.Title(title, anchor="start", fontSize=13),
    )
