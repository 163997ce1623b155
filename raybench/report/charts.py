"""The seed's charts, one function each, from a report frame (``frame.py``).

Every function takes a frame of cell summaries (and optionally the report's ``SeriesStyle``, so
colours and markers agree across charts; without one it is derived from the frame) and returns
an Altair chart whose data is exactly the points drawn, with named columns
(``chart_data`` reads them back). A chart whose cells are not in the frame raises NothingToDraw.

Units follow the seed: throughput as input + output tokens/s, end-to-end latency and TTFT in
seconds, TPOT in milliseconds, offline latency as the batch's elapsed seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt
import polars as pl

from raybench.report.frame import as_report_frame
from raybench.report.slices import (
    NothingToDraw,
    batch_sweep,
    concurrency_sweep,
    output_sweep_offline,
    output_sweep_online,
    prefix_pairs,
)
from raybench.report.style import SeriesStyle, series_style

WIDTH, HEIGHT = 600, 340
TPUT = "total_throughput_tokens_per_s"
TPUT_TITLE = "Throughput, input + output (tokens/s)"
# what every chart keeps of a cell beside its point: which cell it is, and the regimes a predicted
# point extrapolates, which _tooltip shows (a chart that dropped it showed such a point as measured)
_CELL = ("cell_id", "extrapolated")


def _prepare(frame: pl.DataFrame, style: SeriesStyle | None) -> tuple[pl.DataFrame, SeriesStyle]:
    frame = as_report_frame(frame)
    return frame, style or series_style(frame)


def _values(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _title(text: str, subtitle: str) -> alt.Title:
    return alt.Title(text, subtitle=subtitle, anchor="start", fontSize=15, subtitleFontSize=11)


def _points(data: pl.DataFrame, needed: Sequence[str], what: str) -> pl.DataFrame:
    data = data.drop_nulls(list(needed)).filter(pl.all_horizontal(pl.col(c).is_finite() for c in needed))
    if data.is_empty():
        raise NothingToDraw(f"the cells for {what} have no values for {', '.join(needed)}")
    if "extrapolated" in data.columns and data["extrapolated"].null_count() == data.height:
        data = data.drop("extrapolated")  # a measured chart's data says nothing of predictions
    return data


def _tooltip(data: pl.DataFrame, fields: list) -> list:
    """``fields``, and the regimes a predicted point extrapolates when any point of the chart does."""
    if "extrapolated" in data.columns and data["extrapolated"].drop_nulls().len():
        return [*fields, alt.Tooltip("extrapolated:N", title="extrapolated")]
    return fields


def _labelled_lines(
    data: pl.DataFrame, *, x: str, x_title: str, y: str, y_title: str, label: str,
    title: alt.Title, style: SeriesStyle,
) -> alt.LayerChart:
    """Lines through points in ``label`` order, each point labelled, one line per series."""
    data = _points(data, [x, y], title.text).sort("series", label)
    base = alt.Chart().encode(
        x=alt.X(f"{x}:Q", title=x_title),
        y=alt.Y(f"{y}:Q", title=y_title),
        color=style.color(),
    )
    tooltip = _tooltip(data, ["series:N", f"{label}:Q", alt.Tooltip(f"{x}:Q", format=",.2f"),
                              alt.Tooltip(f"{y}:Q", format=",.1f")])
    line = base.mark_line(strokeWidth=2).encode(order=alt.Order(f"{label}:Q"), detail="series:N")
    points = base.mark_point(filled=True, size=70, opacity=1).encode(shape=style.shape(), tooltip=tooltip)
    text = base.mark_text(align="left", dx=7, dy=-8, fontSize=11, fontWeight="bold").encode(
        text=alt.Text(f"{label}:Q")
    )
    return alt.layer(line, points, text, data=data).properties(width=WIDTH, height=HEIGHT, title=title)


def _grouped_bars(
    data: pl.DataFrame, *, x: str, x_title: str, y: str, y_title: str, title: alt.Title, style: SeriesStyle,
) -> alt.Chart:
    """Bars grouped by ``x``, one bar per series in legend order."""
    data = _points(data, [y], title.text).sort(x, "series")
    order = style.order(data["series"].unique())
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(f"{x}:O", title=x_title, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("series:N", scale=alt.Scale(domain=order)),
            y=alt.Y(f"{y}:Q", title=y_title),
            color=style.color(),
            tooltip=_tooltip(data, ["series:N", f"{x}:O", alt.Tooltip(f"{y}:Q", format=",.2f")]),
        )
        .properties(width=WIDTH, height=HEIGHT, title=title)
    )


def online_throughput_vs_latency(frame: pl.DataFrame, *, style: SeriesStyle | None = None) -> alt.LayerChart:
    """Throughput (input + output tok/s) vs mean end-to-end latency (s), points by concurrency."""
    frame, style = _prepare(frame, style)
    cells, pick = concurrency_sweep(frame)
    data = cells.select(
        "series", "concurrency", (pl.col("mean_e2e_latency_ms") / 1e3).alias("mean_e2e_latency_s"), TPUT, *_CELL
    )
    levels = sorted(data["concurrency"].unique().to_list())
    title = _title(
        f"Online throughput (tokens/s) vs end-to-end latency (s) @ concurrency {_values(levels)}",
        f"input {pick['input_len']} / output {pick['output_len']} tokens; one line per backend × hardware,"
        " points labelled by concurrency",
    )
    return _labelled_lines(
        data, x="mean_e2e_latency_s", x_title="Mean end-to-end latency (s)", y=TPUT, y_title=TPUT_TITLE,
        label="concurrency", title=title, style=style,
    )


def offline_throughput_vs_latency(frame: pl.DataFrame, *, style: SeriesStyle | None = None) -> alt.LayerChart:
    """Offline throughput (input + output tok/s) vs the batch's elapsed time (s), by batch size."""
    frame, style = _prepare(frame, style)
    cells, pick = batch_sweep(frame)
    data = cells.select("series", "batch_size", pl.col("duration_s").alias("elapsed_s"), TPUT, *_CELL)
    levels = sorted(data["batch_size"].unique().to_list())
    title = _title(
        f"Offline throughput (tokens/s) vs end-to-end latency (s) @ batch size {_values(levels)}",
        f"input {pick['input_len']} / output {pick['output_len']} tokens; latency = the batch's elapsed time,"
        " points labelled by batch size",
    )
    return _labelled_lines(
        data, x="elapsed_s", x_title="End-to-end latency of the batch (s)", y=TPUT, y_title=TPUT_TITLE,
        label="batch_size", title=title, style=style,
    )


def _online_vs_output(
    frame: pl.DataFrame, style: SeriesStyle | None, concurrency: int | None, *, column: str, scale: float,
    y: str, y_title: str, heading: str,
) -> alt.Chart:
    frame, style = _prepare(frame, style)
    cells, pick = output_sweep_online(frame, concurrency)
    data = cells.select("series", "output_len", (pl.col(column) * scale).alias(y), *_CELL)
    title = _title(
        f"{heading} vs output token length @ concurrency {pick['concurrency']}",
        f"online, input {pick['input_len']} tokens",
    )
    return _grouped_bars(data, x="output_len", x_title="Output tokens", y=y, y_title=y_title, title=title, style=style)


def _offline_vs_output(
    frame: pl.DataFrame, style: SeriesStyle | None, batch_size: int | None, *, column: str, y: str,
    y_title: str, heading: str,
) -> alt.Chart:
    frame, style = _prepare(frame, style)
    cells, pick = output_sweep_offline(frame, batch_size)
    data = cells.select("series", "output_len", pl.col(column).alias(y), *_CELL)
    title = _title(
        f"{heading} vs output token length @ batch size {pick['batch_size']}",
        f"offline, input {pick['input_len']} tokens",
    )
    return _grouped_bars(data, x="output_len", x_title="Output tokens", y=y, y_title=y_title, title=title, style=style)


def online_throughput_vs_output(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, concurrency: int | None = None
) -> alt.Chart:
    return _online_vs_output(frame, style, concurrency, column=TPUT, scale=1.0, y=TPUT, y_title=TPUT_TITLE,
                             heading="Online throughput (tokens/s)")


def online_latency_vs_output(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, concurrency: int | None = None
) -> alt.Chart:
    return _online_vs_output(frame, style, concurrency, column="mean_e2e_latency_ms", scale=1e-3,
                             y="mean_e2e_latency_s", y_title="Mean end-to-end latency (s)",
                             heading="Online end-to-end latency (s)")


def offline_throughput_vs_output(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, batch_size: int | None = None
) -> alt.Chart:
    return _offline_vs_output(frame, style, batch_size, column=TPUT, y=TPUT, y_title=TPUT_TITLE,
                              heading="Offline throughput (tokens/s)")


def offline_latency_vs_output(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, batch_size: int | None = None
) -> alt.Chart:
    return _offline_vs_output(frame, style, batch_size, column="duration_s", y="elapsed_s",
                              y_title="End-to-end latency of the batch (s)", heading="Offline latency (s)")


def _vs_concurrency(
    frame: pl.DataFrame, style: SeriesStyle | None, *, column: str, scale: float, y: str, y_title: str, heading: str
) -> alt.Chart:
    frame, style = _prepare(frame, style)
    cells, pick = concurrency_sweep(frame)
    data = cells.select("series", "concurrency", (pl.col(column) * scale).alias(y), *_CELL)
    levels = sorted(data["concurrency"].unique().to_list())
    title = _title(
        f"{heading} @ concurrency {_values(levels)}",
        f"online, input {pick['input_len']} / output {pick['output_len']} tokens",
    )
    return _grouped_bars(data, x="concurrency", x_title="Concurrency", y=y, y_title=y_title, title=title, style=style)


def ttft_vs_concurrency(frame: pl.DataFrame, *, style: SeriesStyle | None = None) -> alt.Chart:
    return _vs_concurrency(frame, style, column="mean_ttft_ms", scale=1e-3, y="mean_ttft_s",
                           y_title="Mean TTFT (s)", heading="Mean time to first token (s)")


def tpot_vs_concurrency(frame: pl.DataFrame, *, style: SeriesStyle | None = None) -> alt.Chart:
    return _vs_concurrency(frame, style, column="mean_tpot_ms", scale=1.0, y="mean_tpot_ms",
                           y_title="Mean TPOT (ms)", heading="Mean time per output token (ms)")


def ttft_vs_output_length(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, concurrency: int | None = None
) -> alt.Chart:
    return _online_vs_output(frame, style, concurrency, column="mean_ttft_ms", scale=1e-3, y="mean_ttft_s",
                             y_title="Mean TTFT (s)", heading="Mean time to first token (s)")


def tpot_vs_output_length(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, concurrency: int | None = None
) -> alt.Chart:
    return _online_vs_output(frame, style, concurrency, column="mean_tpot_ms", scale=1.0, y="mean_tpot_ms",
                             y_title="Mean TPOT (ms)", heading="Mean time per output token (ms)")


NO_CACHE, CACHED = "No cache", "Prefix cached"


def _prefix_chart(
    frame: pl.DataFrame, style: SeriesStyle | None, concurrency: int | None, *, column: str, scale: float,
    y: str, y_title: str, heading: str,
) -> alt.Chart:
    frame, style = _prepare(frame, style)
    cells, pick = prefix_pairs(frame, concurrency)
    data = _points(
        cells.select(
            "series",
            pl.when(pl.col("prefix_cached")).then(pl.lit(CACHED)).otherwise(pl.lit(NO_CACHE)).alias("cache"),
            (pl.col(column) * scale).alias(y),
            "prefix_len",
            *_CELL,
        ),
        [y], heading,
    ).sort("series", "cache")
    prefix = data.filter(pl.col("cache") == CACHED)["prefix_len"].drop_nulls().unique().to_list()
    title = _title(
        f"{heading}: prefix cache on vs off @ concurrency {pick['concurrency']}",
        f"online, input {pick['input_len']} / output {pick['output_len']} tokens"
        + (f", shared prefix {_values(sorted(prefix))} tokens" if prefix else ""),
    )
    order = style.order(data["series"].unique())
    cache_scale = alt.Scale(domain=[NO_CACHE, CACHED], range=[1.0, 0.4])
    return (
        alt.Chart(data)
        .mark_bar(strokeWidth=2)
        .encode(
            x=alt.X("series:N", sort=order, title=None, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("cache:N", scale=alt.Scale(domain=[NO_CACHE, CACHED])),
            y=alt.Y(f"{y}:Q", title=y_title),
            color=style.color(),
            stroke=alt.Stroke("series:N", legend=None, scale=alt.Scale(domain=list(style.domain), range=list(style.colors))),
            opacity=alt.Opacity("cache:N", title="Prefix cache", scale=cache_scale),
            tooltip=_tooltip(data, ["series:N", "cache:N", alt.Tooltip(f"{y}:Q", format=",.2f")]),
        )
        .properties(width=WIDTH, height=HEIGHT, title=title)
    )


def prefix_cache_throughput(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, concurrency: int | None = None
) -> alt.Chart:
    return _prefix_chart(frame, style, concurrency, column=TPUT, scale=1.0, y=TPUT, y_title=TPUT_TITLE,
                         heading="Throughput (tokens/s)")


def prefix_cache_ttft(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, concurrency: int | None = None
) -> alt.Chart:
    return _prefix_chart(frame, style, concurrency, column="mean_ttft_ms", scale=1e-3, y="mean_ttft_s",
                         y_title="Mean TTFT (s)", heading="Mean TTFT (s)")


def prefix_cache_tpot(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, concurrency: int | None = None
) -> alt.Chart:
    return _prefix_chart(frame, style, concurrency, column="mean_tpot_ms", scale=1.0, y="mean_tpot_ms",
                         y_title="Mean TPOT (ms)", heading="Mean TPOT (ms)")


def prefix_cache_e2e_latency(
    frame: pl.DataFrame, *, style: SeriesStyle | None = None, concurrency: int | None = None
) -> alt.Chart:
    return _prefix_chart(frame, style, concurrency, column="mean_e2e_latency_ms", scale=1e-3,
                         y="mean_e2e_latency_s", y_title="Mean end-to-end latency (s)",
                         heading="Mean end-to-end latency (s)")


@dataclass(frozen=True, kw_only=True)
class ChartDef:
    """A chart of the report: its file name (charts/<name>.png), section and the seed image it redraws."""

    name: str
    section: str
    seed_image: str
    draw: Callable[..., alt.TopLevelMixin]


_SEED = "https://github.com/dstackai/benchmarks/raw/deepseek-r1-benchmark/Deepseek-R1/images/"
CHARTS: tuple[ChartDef, ...] = tuple(
    ChartDef(name=fn.__name__, section=section, seed_image=_SEED + image, draw=fn)
    for section, fn, image in (
        ("Throughput and end-to-end latency", online_throughput_vs_latency, "online_throughput_vs_latency.png"),
        ("Throughput and end-to-end latency", offline_throughput_vs_latency, "offline_throughput_vs_latency.png"),
        ("Throughput and latency vs output length", online_throughput_vs_output, "online-throughput-vs-output.png"),
        ("Throughput and latency vs output length", online_latency_vs_output, "online-latency-vs-output.png"),
        ("Throughput and latency vs output length", offline_throughput_vs_output, "offline-throughput-vs-output-256.png"),
        ("Throughput and latency vs output length", offline_latency_vs_output, "offline-latency-vs-output-length-256.png"),
        ("Time to first token", ttft_vs_concurrency, "ttft-vs-concurrency.png"),
        ("Time per output token", tpot_vs_concurrency, "tpot-vs-concurrency.png"),
        ("TTFT and TPOT vs output length", ttft_vs_output_length, "ttft-vs-output-length.png"),
        ("TTFT and TPOT vs output length", tpot_vs_output_length, "tpot-vs-output-length.png"),
        ("Prefix caching", prefix_cache_throughput, "prefix-cache-throughput-comparison.png"),
        ("Prefix caching", prefix_cache_ttft, "prefix-cache-ttft-comparison.png"),
        ("Prefix caching", prefix_cache_tpot, "prefix-cache-tpot-comparison.png"),
        ("Prefix caching", prefix_cache_e2e_latency, "prefix-cache-end-to-end-latency-comparison.png"),
    )
)


def chart_data(chart: alt.TopLevelMixin) -> list[dict[str, Any]]:
    """The rows a chart draws, read back from its Vega-Lite spec (top-level data)."""
    spec = chart.to_dict()
    data = spec.get("data", {})
    if "values" in data:
        return list(data["values"])
    return list(spec.get("datasets", {}).get(data.get("name"), []))
