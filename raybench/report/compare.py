"""Runs side by side: the same charts with one series per run, and ratios per matching cell.

Cells match when they ran the same workload: the same mode, concurrency (online) or batch size
(offline), output length and prefix caching, and input lengths within 5 % (a tool that reports
the measured mean prompt length, as SGLang's shared-prefix runs do, still matches the nominal
one). Where the reference has a cell of the same engine (vllm, sglang, trt-llm) and hardware, only
that one is compared; otherwise the cell is compared with every reference series at that
workload, so a new cluster is set beside each published H200 and MI300X line. The engine is a
raybench cell's ``engine`` (its backend's kind), else the backend's name (what the published CSV
and the clients' files record): a backend named ``vllm-h200`` is vLLM, not a label that no
published series has. The simulator is no engine: a simulated cell pairs with simulated cells of
the same backend name, else with the engine its profile imitates on the same GPU (a ``raybench
run --simulate`` of the seed's vLLM server beside the published H200-vLLM line), else with every
reference series.

A ratio is run / reference: above 1 means more throughput, or a longer latency.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

import raybench
from raybench.errors import ConfigError
from raybench.report import html as h
from raybench.report.build import (
    CHARTS_DIR,
    REPORT_FILE,
    chart_section,
    draw_charts,
    is_run_dir,
    make_out_dir,
    output_errors,
    summary_table,
    write_images,
    write_text_atomic,
)
from raybench.report.frame import ENGINE_NAMES, CellMode, as_report_frame, combine_runs
from raybench.report.sources import SIM_ENGINE, read_source
from raybench.report.style import series_style

INPUT_TOLERANCE = 0.05
COMPARISON_DIR = "comparison"  # where a comparison goes when --out is a run directory (its own report stays)
_KEYS = ["mode", "size", "output_len", "prefix_cached"]
RATIO_COLUMNS = ("throughput_ratio", "ttft_ratio", "tpot_ratio", "e2e_ratio")


@dataclass(frozen=True, kw_only=True)
class CompareResult:
    html: Path
    ratios: pl.DataFrame  # one row per (run cell, reference cell) pair
    table: str  # the ratios as printed
    images: tuple[Path, ...]


def _engine(column: str) -> pl.Expr:
    # the simulator ("sim") is no engine a reference ran: it maps to none
    return pl.col(column).str.to_lowercase().replace_strict(ENGINE_NAMES, default=None)


def _with_size(frame: pl.DataFrame) -> pl.DataFrame:
    return as_report_frame(frame).with_columns(
        # what "the same backend × hardware" compares: the engine and the GPU, never the label's text.
        # A source that names no engine names it as its backend (the published CSV, the clients'
        # files); a cell that records the simulator or an external server pairs only with cells of
        # that engine and backend name, even a simulator named "vllm"
        pl.when(pl.col("engine").is_null())
        .then(pl.coalesce(_engine("backend"), pl.col("backend").str.to_lowercase()))
        .otherwise(pl.coalesce(_engine("engine"), pl.concat_str([pl.col("engine").str.to_lowercase(), pl.lit(":"),
                                                                 pl.col("backend").str.to_lowercase()])))
        .alias("engine_kind"),
        pl.col("hardware").str.to_lowercase().alias("gpu"),
        pl.coalesce("concurrency", "batch_size").alias("size"),
        # offline cells have no per-request latency: the batch's elapsed time stands for it
        pl.when(pl.col("mode") == CellMode.OFFLINE.value)
        .then(pl.col("duration_s") * 1e3)
        .otherwise(pl.col("mean_e2e_latency_ms"))
        .alias("latency_ms"),
    )


def ratio_table(reference: pl.DataFrame, runs: pl.DataFrame) -> pl.DataFrame:
    """Each run cell against the reference cells of the same workload (see the module doc)."""
    cols = ["run", "series", "engine_kind", "simulates", "gpu", "cell_id", *_KEYS, "input_len",
            "total_throughput_tokens_per_s", "mean_ttft_ms", "mean_tpot_ms", "latency_ms"]
    ref = _with_size(reference).select(cols)
    run = _with_size(runs).select(cols)
    pairs = run.join(ref, on=_KEYS, how="inner", suffix="_ref", nulls_equal=True).filter(
        pl.col("input_len").is_null()
        | pl.col("input_len_ref").is_null()
        | ((pl.col("input_len") - pl.col("input_len_ref")).abs() <= INPUT_TOLERANCE * pl.col("input_len_ref"))
    )
    same_gpu = pl.col("gpu").eq_missing(pl.col("gpu_ref"))
    # 2: the same engine; 1: the engine a simulated cell imitates; 0: any (each best level wins alone)
    level = (pl.when((pl.col("engine_kind") == pl.col("engine_kind_ref")) & same_gpu).then(2)
             .when((pl.col("simulates").str.to_lowercase().replace_strict(ENGINE_NAMES, default=None)
                    == pl.col("engine_kind_ref")) & same_gpu).then(1)
             .otherwise(0))
    pairs = pairs.with_columns(level.alias("_level"))
    pairs = pairs.filter(pl.col("_level") == pl.col("_level").max().over(["run", "cell_id"])).drop("_level")

    def ratio(name: str) -> pl.Expr:
        return pl.when(pl.col(f"{name}_ref") > 0).then(pl.col(name) / pl.col(f"{name}_ref")).otherwise(None)

    return pairs.select(
        "run", "series", "cell_id", "mode", "size", "input_len", "output_len", "prefix_cached",
        pl.col("run_ref").alias("reference_run"),
        pl.col("series_ref").alias("reference_series"),
        pl.col("cell_id_ref").alias("reference_cell_id"),
        pl.col("total_throughput_tokens_per_s").alias("throughput_tokens_per_s"),
        pl.col("total_throughput_tokens_per_s_ref").alias("reference_throughput_tokens_per_s"),
        ratio("total_throughput_tokens_per_s").alias("throughput_ratio"),
        ratio("mean_ttft_ms").alias("ttft_ratio"),
        ratio("mean_tpot_ms").alias("tpot_ratio"),
        ratio("latency_ms").alias("e2e_ratio"),
    ).sort("run", "mode", "size", "output_len", "series", "reference_series")


def format_ratio_table(ratios: pl.DataFrame) -> str:
    """The ratios as a fixed-width text table (what ``raybench compare`` prints)."""
    if ratios.is_empty():
        return "no matching cells: the runs share no workload (mode, concurrency/batch, lengths, prefix)"
    head = ("series", "cell", "vs reference", "tok/s", "ref tok/s", "tput x", "TTFT x", "TPOT x", "E2E x")
    rows = [head]
    for r in ratios.iter_rows(named=True):
        size = f"{'c' if r['mode'] == CellMode.ONLINE.value else 'b'}{r['size']}"
        cell = f"{r['mode']} {size} in{r['input_len']} out{r['output_len']}" + (" prefix" if r["prefix_cached"] else "")
        rows.append((
            r["series"], cell, r["reference_series"], _num(r["throughput_tokens_per_s"], ",.0f"),
            _num(r["reference_throughput_tokens_per_s"], ",.0f"),
            *(_num(r[c], ".2f") for c in RATIO_COLUMNS),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("x = run / reference: > 1 is more throughput, or a longer TTFT / TPOT / end-to-end latency "
                 "(offline: the batch's elapsed time)")
    return "\n".join(lines)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _unique_runs(frames: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """Rename repeated run names (two runs of one experiment in one second) so series stay apart."""
    seen: dict[str, int] = {}
    out = []
    for frame in frames:
        renames = {}
        for run in frame["run"].unique(maintain_order=True).to_list():
            seen[run] = seen.get(run, 0) + 1
            if seen[run] > 1:
                renames[run] = f"{run} ({seen[run]})"
        out.append(frame.with_columns(pl.col("run").replace(renames)) if renames else frame)
    return out


def _untimed_simulator_cells(source: str | Path) -> list[str]:
    """The cells of a run dir the simulator served with ``--timing zero`` or ``fixed``, a line each."""
    lines = []
    for path in sorted(Path(source).glob("cells/*/summary.json")) if Path(source).is_dir() else ():
        try:
            cell = json.loads(path.read_text()).get("cell") or {}
            timing = (cell.get("simulator") or {}).get("timing")
        except (OSError, ValueError, AttributeError):
            continue  # read_source has named any damaged summary already
        if cell.get("engine") == SIM_ENGINE and timing in ("zero", "fixed"):
            lines.append(f"cell {cell.get('id')}: simulator timing {timing}")
    return lines


def comparison_dir(out_dir: Path) -> Path:
    """``out_dir``, or its ``comparison/`` where it is a run directory: a run's own report.html and
    charts/ are what ``raybench report`` drew from its cells, and a comparison must not replace them."""
    if is_run_dir(out_dir):
        return out_dir / COMPARISON_DIR
    return out_dir


def compare_sources(
    sources: Sequence[str | Path], out_dir: Path, *, reference: str | Path | None = None, images: bool = True
) -> CompareResult:
    """Compare runs (any source ``load_source`` reads) with a reference, write the report.

    Without ``reference`` the first source is the reference. Writes ``report.html``,
    ``ratios.csv``, ``ratios.txt`` and charts/ into ``out_dir``, or into its ``comparison/``
    where ``out_dir`` is a run directory, whose own report.html and charts/ stay.
    """
    sources = list(sources)
    if reference is not None:
        sources = [reference, *sources]
    if len(sources) < 2:
        raise ConfigError.invalid("sources", [str(s) for s in sources], "at least two (runs, or runs and --reference)")
    frames, left_out, marked = [], [], []
    for s in sources:
        # a cell that is not complete is never compared: its rows miss requests or time
        rows = read_source(s)
        frames.append(rows.usable())
        left_out += [f"{s}: {line}" for line in rows.left_out.values()]
        marked += [f"{s}: {line}" for line in rows.marked]
    frames = _unique_runs(frames)
    if any(f.height == 0 for f in frames):
        empty = [str(s) for s, f in zip(sources, frames) if f.height == 0]
        again = "; run it again with raybench run --resume" if any(Path(e).is_dir() for e in empty) else ""
        raise ConfigError(f"nothing to compare in {', '.join(empty)}: no complete cell "
                          f"({'; '.join(left_out) or 'no cells'}){again}")
    combined = combine_runs(frames)
    ref_run = frames[0]["run"][0]
    ratios = ratio_table(combined.filter(pl.col("run") == ref_run), combined.filter(pl.col("run") != ref_run))
    table = format_ratio_table(ratios)
    if left_out:
        table += "\nleft out, not complete:\n" + "\n".join(f"  {line}" for line in left_out)
    if marked:
        table += "\ncompared, but with failed requests:\n" + "\n".join(f"  {line}" for line in marked)
    untimed = [f"{s}: {line}" for s in sources for line in _untimed_simulator_cells(s)]
    if untimed:
        table += ("\ncompared, but no engine timed them (the simulator answered as fast as it could, or after set "
                  "delays; rerun with --sim-timing engine to compare its model):\n"
                  + "\n".join(f"  {line}" for line in untimed))
    out_dir = comparison_dir(out_dir)
    make_out_dir(out_dir)
    style = series_style(combined)
    charts, skipped = draw_charts(combined, style)
    with output_errors(out_dir):
        written = write_images({n: c.to_dict() for n, c in charts.items()}, out_dir / CHARTS_DIR) if images else []
        ratios.write_csv(out_dir / "ratios.csv")
        (out_dir / "ratios.txt").write_text(table + "\n")
    listing = "".join(
        f"<li>{h.esc(f['run'][0])}{' (reference)' if i == 0 else ''}: {h.esc(s)} · {f.height} cells</li>"
        for i, (f, s) in enumerate(zip(frames, sources))
    )
    ratio_html = h.html_table(
        ratios,
        {"series": ("Series", ""), "cell_id": ("Cell", ""), "reference_series": ("Reference", ""),
         "throughput_tokens_per_s": ("tok/s", ",.1f"), "reference_throughput_tokens_per_s": ("ref tok/s", ",.1f"),
         **{c: (c.removesuffix("_ratio").upper() + " ×" if c != "throughput_ratio" else "Throughput ×", ".3f")
            for c in RATIO_COLUMNS}},
        text=("series", "cell_id", "reference_series"),
    ) if ratios.height else f"<p>{h.esc(table)}</p>"
    page = h.Page(
        title="raybench comparison",
        subtitle=f"reference: {ref_run} · raybench {raybench.__version__} · "
        f"written {dt.datetime.now().isoformat(timespec='seconds')}",
        sections=[
            h.Section(id="ratios", title="Ratios per matching cell",
                      body=f"<ul>{listing}</ul>{ratio_html}<p>× = run / reference.</p>"),
            chart_section(charts, skipped, images=images),
            h.Section(id="summary", title="Every cell", body=summary_table(combined)),
        ],
    )
    report = out_dir / REPORT_FILE
    with output_errors(out_dir):
        write_text_atomic(report, h.render_page(page))
    return CompareResult(html=report, ratios=ratios, table=table, images=tuple(written))
