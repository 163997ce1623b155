"""A report for one source: report.html, and PNG + SVG of every chart under charts/.

``build_report`` is what ``raybench report`` and the end of ``raybench run`` call. A run dir's
report is written into the run dir; any other source (the published CSV, a vLLM or SGLang
results file) into the directory given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

import raybench
from raybench.errors import ConfigError, StorageError
from raybench.report import html as h
from raybench.report.charts import CHARTS, ChartDef
from raybench.report.drilldown import DrillData, FlagLevel, cell_drilldown, cell_flags, drilldown_data
from raybench.report.frame import combine_repeats
from raybench.report.slices import NothingToDraw
from raybench.report.sources import read_source, rerun_advice
from raybench.report.style import SeriesStyle, series_style
from raybench.store.outcome import OutcomeKind, outcome_of
from raybench.store.rundir import safe_name, write_bytes_atomic

REPORT_FILE = "report.html"
CHARTS_DIR = "charts"
IMAGE_FORMATS = ("png", "svg")
_PNG_SCALE = 2.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportResult:
    html: Path
    images: tuple[Path, ...]  # every file written under charts/
    drawn: tuple[str, ...]  # chart names drawn
    skipped: Mapping[str, str]  # chart name -> why it was not drawn
    left_out: Mapping[str, str] = dataclasses.field(default_factory=dict)  # cell id -> why no chart uses it
    warnings: tuple[str, ...] = ()  # what a reader must know that the charts do not show (failed requests, ...)


def draw_charts(
    frame: pl.DataFrame, style: SeriesStyle | None = None, charts: Sequence[ChartDef] = CHARTS
) -> tuple[dict[str, alt.TopLevelMixin], dict[str, str]]:
    """Every chart the frame has cells for, by name; the others with the reason they are absent.

    A repeated cell is one point: the mean of its repeats.
    """
    frame = combine_repeats(frame)
    style = style or series_style(frame)
    drawn, skipped = {}, {}
    for chart in charts:
        try:
            drawn[chart.name] = chart.draw(frame, style=style)
        except NothingToDraw as why:
            skipped[chart.name] = str(why)
    return drawn, skipped


def write_images(
    specs: Mapping[str, Mapping[str, Any]], out_dir: Path, formats: Sequence[str] = IMAGE_FORMATS
) -> list[Path]:
    """``<name>.<format>`` for each Vega-Lite spec, drawn by vl-convert (no browser)."""
    import vl_convert

    unknown = set(formats) - set(IMAGE_FORMATS)
    if unknown:
        raise ConfigError.invalid("image formats", sorted(unknown), f"some of {IMAGE_FORMATS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in specs.items():
        # one Vega run per chart: the PNG is rasterised from the SVG (about half the time)
        svg = vl_convert.vegalite_to_svg(dict(spec))
        for fmt in formats:
            path = out_dir / f"{safe_name(name)}.{fmt}"
            data = vl_convert.svg_to_png(svg, scale=_PNG_SCALE) if fmt == "png" else svg.encode()
            write_bytes_atomic(path, data)
            written.append(path)
    return written


SUMMARY_COLUMNS = {
    "cell_id": ("Cell", ""),
    "series": ("Series", ""),
    "mode": ("Mode", ""),
    "concurrency": ("Conc.", "d"),
    "batch_size": ("Batch", "d"),
    "input_len": ("In", "d"),
    "output_len": ("Out", "d"),
    "prefix_len": ("Prefix", "d"),
    "completed": ("OK", "d"),
    "failed": ("Failed", "d"),
    "duration_s": ("Duration (s)", ",.2f"),
    "total_throughput_tokens_per_s": ("In+out (tok/s)", ",.1f"),
    "output_throughput_tokens_per_s": ("Output (tok/s)", ",.1f"),
    "mean_ttft_ms": ("Mean TTFT (ms)", ",.1f"),
    "p99_ttft_ms": ("P99 TTFT (ms)", ",.1f"),
    "mean_tpot_ms": ("Mean TPOT (ms)", ",.2f"),
    "mean_itl_ms": ("Mean ITL (ms)", ",.2f"),
    "mean_e2e_latency_s": ("Mean E2E (s)", ",.2f"),
}


def summary_table(frame: pl.DataFrame, flags: Mapping[str, str] | None = None) -> str:
    table = frame.with_columns((pl.col("mean_e2e_latency_ms") / 1e3).alias("mean_e2e_latency_s"))
    columns = dict(SUMMARY_COLUMNS)
    if flags is not None:
        table = table.with_columns(pl.col("cell_id").replace_strict(flags, default="").alias("flags"))
        columns["flags"] = ("Flags", "")
    return h.html_table(table, columns, text=("cell_id", "series", "mode", "flags"), raw=("flags",))


def chart_section(
    charts: Mapping[str, alt.TopLevelMixin], skipped: Mapping[str, str], *, prefix: str = "chart", images: bool = True
) -> h.Section:
    """The seed's charts under the seed's headings, with a line for each chart not drawn."""
    groups = []
    for section in dict.fromkeys(c.section for c in CHARTS):
        blocks, notes = [], []
        for chart in (c for c in CHARTS if c.section == section):
            if chart.name in charts:
                files = (f' · <a href="{CHARTS_DIR}/{chart.name}.png">PNG</a>'
                         f' · <a href="{CHARTS_DIR}/{chart.name}.svg">SVG</a>') if images else ""
                caption = f'{h.esc(chart.name)} · redraws <a href="{h.esc(chart.seed_image)}">the seed\'s chart</a>{files}'
                blocks.append(h.ChartBlock(id=f"{prefix}-{chart.name}", spec=charts[chart.name].to_dict(), caption=caption))
            else:
                notes.append(f'<p class="skipped">{h.esc(chart.name)}: not drawn ({h.esc(skipped.get(chart.name))})</p>')
        groups.append((f"<h3>{h.esc(section)}</h3>", "".join(notes), blocks))
    return h.Section(id="charts", title="Charts", groups=groups)


def _command_line(command: Any) -> str | None:
    if isinstance(command, list):
        return shlex.join(str(a) for a in command)
    return command


def _git_line(git: Any) -> str | None:
    if not isinstance(git, Mapping) or not git.get("commit"):
        return None
    return f"{git['commit'][:12]}{' (with uncommitted changes)' if git.get('dirty') else ''}"


def _source_line(env: Mapping[str, Any]) -> str | None:
    source = (env.get("experiment") or {}).get("source") if isinstance(env.get("experiment"), Mapping) else None
    if not isinstance(source, Mapping):
        return None
    git = _git_line(source.get("git"))
    return f"{source.get('path')}" + (f" at {git}" if git else "")


def _metadata_section(path: Path, frame: pl.DataFrame, completed: int) -> h.Section:
    """``completed``: the cells whose outcome is complete (a failed or incomplete cell has a summary too)."""
    if not path.is_dir():
        items = {"source": str(path), "cells": frame.height, "series": ", ".join(frame["series"].unique().to_list())}
        return h.Section(id="metadata", title="Run metadata", body=h.definition_list(items))
    env = _read_json(path / "env.json")
    plan = _read_json(path / "plan.json")
    packages = env.get("packages") or {}
    nodes = env.get("ray_nodes") or []
    items = {
        "run directory": str(path.resolve()),
        "experiment": plan.get("experiment"),
        "cells planned / completed": f"{len(plan.get('cells', []))} / {completed}",
        "raybench": env.get("raybench_version"),
        "python": env.get("python"),
        "platform": env.get("platform"),
        "packages": ", ".join(f"{k} {v}" for k, v in packages.items() if v),
        "command": _command_line(env.get("command") or env.get("argv")),
        "experiment file": _source_line(env),
        "raybench git": _git_line(env.get("raybench_git")),
        "hardware": env.get("hardware"),
        "ray nodes": len(nodes) or None,
    }
    search = _read_json(path / "search.json")  # the SLO search's answer and bracket, per backend
    if search:
        items["SLO search"] = "; ".join(f"{name}: {s.get('line') if isinstance(s, dict) else s}"
                                        for name, s in search.items())
    body = [h.definition_list(items)]
    if search:
        body.append(h.json_details("search.json", search))
    for key in ("gpus_by_node", "hardware", "ray_nodes"):
        if env.get(key):
            body.append(h.json_details(f"env.json: {key}", env[key]))
    body.append(h.json_details("env.json (all)", env))
    body.append(h.json_details("plan.json", plan))
    return h.Section(id="metadata", title="Run metadata", body="".join(body))


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object of the run dir; {} where the file is missing, and one ``unreadable`` field
    where it is not an object, so that the report of the cells is built all the same."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {"unreadable": f"{path.name}: {err}"}
    return value if isinstance(value, dict) else {"unreadable": f"{path.name} is not a JSON object"}


def _drilldowns(path: Path, frame: pl.DataFrame, style: SeriesStyle,
                warnings: list[str]) -> tuple[h.Section, dict[str, str], dict[str, dict]]:
    """One collapsible block per cell, opened where a flag is raised.

    Returns the section, each cell's badge (for the summary table) and the drill-down specs by
    cell id (for charts/cells/). A cell whose rows cannot be read gets a line in ``warnings``.
    """
    parts, badges, specs, embedded = [], {}, {}, {}
    for row in frame.iter_rows(named=True):
        cell_id = row["cell_id"]
        cell_dir = path / "cells" / safe_name(cell_id)
        summary = _read_json(cell_dir / "summary.json")
        flags = cell_flags(summary)
        worst = min((f.level for f in flags), key=list(FlagLevel).index)
        badges[cell_id] = f'<span class="badge {worst.value}">{worst.value}</span>'
        text = "".join(f'<p class="flag {f.level.value}">{f.level.value}: {h.esc(f.text)}</p>' for f in flags)
        no_rows = _failed_before_any_row(summary)
        data, lost = (None, None) if no_rows else _drill_data(path, cell_id, summary)
        if no_rows:  # its flag above says why it failed
            chart = '<p class="skipped">no drill-down: the cell recorded no request rows</p>'
        elif lost is not None:
            warnings.append(lost)
            chart = f'<p class="flag warning">{h.esc(lost)}</p>'
        elif data is None:
            why = "offline engine mode: one batched generate" if _in_engine(summary) else "no request streamed a token"
            chart = f'<p class="skipped">no streamed chunks in this cell ({why})</p>'
        else:
            block = h.ChartBlock(
                id=f"cell-{safe_name(cell_id)}",
                spec=cell_drilldown(data, title=cell_id, color=style.of(row["series"])[0]).to_dict(),
                caption=(f'<a href="{CHARTS_DIR}/cells/{safe_name(cell_id)}.png">PNG</a> · '
                         f'<a href="{CHARTS_DIR}/cells/{safe_name(cell_id)}.svg">SVG</a>'),
            )
            specs[cell_id] = block.spec
            embedded[block.id] = block.spec
            chart = h.figure(block)
        # flagged cells open, and the first drawn one, so a reader sees what a drill-down shows
        opened = " open" if worst is not FlagLevel.OK or (data is not None and len(specs) == 1) else ""
        parts.append(f"<details{opened}><summary>{h.esc(cell_id)}{badges[cell_id]}</summary>{text}{chart}</details>")
    section = h.Section(id="cells", title="Cells (drill-down)", body="".join(parts), embedded=embedded)
    return section, badges, specs


def _drill_data(run_dir: Path, cell_id: str, summary: Mapping[str, Any]) -> tuple[DrillData | None, str | None]:
    """A cell's drill-down data (None where it streamed nothing), or the line that says why its rows are lost.

    The summary was computed before the rows went missing or were damaged: its numbers stand,
    only the drill-down is lost.
    """
    from raybench.store.cells import read_cell

    cell_dir = run_dir / "cells" / safe_name(cell_id)
    # every cell writes both tables, an in-process engine's too (its chunks table is empty)
    missing = [name for name in ("requests.parquet", "chunks.parquet") if not (cell_dir / name).is_file()]
    if missing:
        files = " and ".join(missing)
        return None, (f"cell {cell_id}: {files} {'is' if len(missing) == 1 else 'are'} missing from {cell_dir}, so "
                      "no drill-down is drawn; its summary's numbers stand; the run dir is incomplete (copied in "
                      f"part?): restore {files} from a copy of the run, or rename its summary.json to measure the "
                      f"cell again: {rerun_advice(run_dir)}")
    try:
        requests, chunks = read_cell(cell_dir)
    except Exception as err:  # noqa: BLE001 -- polars, pyarrow and the OS each raise their own
        return None, (f"cell {cell_id}: its rows in {cell_dir} are unreadable ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); no drill-down is drawn, its "
                      "summary's numbers stand; restore requests.parquet and chunks.parquet from a copy "
                      "to draw it")
    return (drilldown_data(requests, chunks, summary) if requests.height else None), None


def _failed_before_any_row(summary: Mapping[str, Any]) -> bool:
    """A cell that failed before recording any row, so has none to draw.

    Such a cell (its warm-up refused, an executor error) never wrote requests.parquet or
    chunks.parquet: their absence is no damage, nothing is to be restored, and the cell is listed
    once, with the cells that are not complete.
    """
    try:
        outcome = outcome_of(summary)
    except ConfigError:  # a damaged summary: read_source has already named it
        return False
    return outcome.kind is OutcomeKind.FAILED and outcome.recorded_requests == 0


def _in_engine(summary: Mapping[str, Any]) -> bool:
    """An offline cell of an in-process engine: one batched generate, which streams no chunk."""
    cell = summary.get("cell")
    if isinstance(cell, dict) and cell.get("offline_method"):
        return cell["offline_method"] == "engine"
    return "elapsed_s" in summary and "duration_s" not in summary  # as raybench_row tells such a summary apart


def is_run_dir(path: Path) -> bool:
    """A raybench run (or prediction) directory: its report belongs to its own cells."""
    return (path / "plan.json").is_file() or (path / "cells").is_dir()


def build_report(
    source: str | Path, out_dir: Path | None = None, *, images: bool = True, drilldowns: bool = True
) -> ReportResult:
    """Write report.html (and charts/) for a run dir, a results file or "published".

    ``out_dir`` defaults to the run dir itself; a file source needs one. Raises ConfigError for
    a source that cannot be read.
    """
    path = Path(source)
    rows = read_source(source)
    frame = rows.frame
    if out_dir is None:
        if not path.is_dir():
            raise ConfigError(f"{source} is not a run directory: give an output directory for its report")
        out_dir = path
    elif is_run_dir(out_dir) and not (path.is_dir() and out_dir.resolve() == path.resolve()):
        # its report.html and charts/ are drawn from its own cells: another source's would replace them
        raise ConfigError(f"--out {out_dir} is another run directory, whose report would be replaced: give a "
                          "directory of its own (or `raybench compare` to put the two side by side)")
    unfinished = dict(rows.left_out)
    if not path.is_dir() and rows.usable().height == 0:
        # a run dir's report still shows its metadata and drill-downs; a file's would be an empty page
        raise ConfigError(f"nothing to report in {source}: {'; '.join(unfinished.values())}")
    make_out_dir(out_dir)
    style = series_style(frame)
    # an incomplete cell's numbers are not drawn as if measured: it stays in the table, flagged
    charts, skipped = draw_charts(rows.usable(), style)
    cells, badges, cell_specs = None, None, {}
    warnings = [*rows.marked]
    if drilldowns and path.is_dir():
        cells, badges, cell_specs = _drilldowns(path, frame, style, warnings)
    sections = [
        h.Section(id="summary", title="Summary", body=summary_table(frame, badges)
                  + _unfinished_note(unfinished, resume=path.is_dir()) + _warning_note(warnings)
                  + _extrapolated_note(frame)),
        chart_section(charts, skipped, images=images),
        _metadata_section(path, frame, completed=rows.usable().height),
        *([cells] if cells is not None else []),
    ]
    name = frame["run"][0] if frame.height else str(source)
    page = h.Page(
        title=f"raybench report: {name}",
        subtitle=f"{frame.height} cells · {len(charts)} charts · raybench {raybench.__version__} · "
        f"written {dt.datetime.now().isoformat(timespec='seconds')}",
        sections=sections,
    )
    written: list[Path] = []
    report = out_dir / REPORT_FILE
    with output_errors(out_dir):
        if images:
            written += write_images({n: c.to_dict() for n, c in charts.items()}, out_dir / CHARTS_DIR)
            written += write_images(cell_specs, out_dir / CHARTS_DIR / "cells")
        write_text_atomic(report, h.render_page(page))
    return ReportResult(html=report, images=tuple(written), drawn=tuple(charts), skipped=skipped,
                        left_out=unfinished, warnings=tuple(warnings))


def make_out_dir(out_dir: Path) -> None:
    """``--out`` made, or a one-line error saying why it cannot be (a file on the way, no permission)."""
    blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"--out {out_dir}: {blocker} is a file, not a directory; give a directory path")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out_dir}: cannot create the directory ({err.strerror or err}); "
                          "give a directory you can write to") from None


@contextlib.contextmanager
def output_errors(out_dir: Path) -> Iterator[None]:
    """A failed write under ``--out`` (read-only, disk full) as one line naming the file."""
    try:
        yield
    except OSError as err:
        where = err.filename or out_dir
        raise StorageError.from_os_error(where, err) from None


def _unfinished_note(unfinished: Mapping[str, str], *, resume: bool = True) -> str:
    if not unfinished:
        return ""
    items = "".join(f"<li>{h.esc(line)}</li>" for line in unfinished.values())
    again = " (run them again with raybench run --resume)" if resume else ""
    return (f'<p class="flag error">{len(unfinished)} cell(s) not complete, left out of every chart'
            f"{again}:</p><ul>{items}</ul>")


def _warning_note(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{h.esc(line)}</li>" for line in warnings)
    return f'<p class="flag warning">{len(warnings)} warning(s) about the numbers above:</p><ul>{items}</ul>'


def _extrapolated_note(frame: pl.DataFrame) -> str:
    marked = frame.filter(pl.col("extrapolated").is_not_null()).select("cell_id", "extrapolated").rows()
    if not marked:
        return ""
    items = "".join(f"<li>{h.esc(cell)}: {h.esc(regimes)}</li>" for cell, regimes in marked)
    # other_model (predict.py): the profile was fitted on another model's rows, whatever the steps
    what = "steps, or a model (other_model)," if any("other_model" in r for _, r in marked) else "steps"
    return (f'<p class="flag warning">{len(marked)} predicted cell(s) extrapolate: their runs need {what} that '
            "no row their profile was fitted on had, so nothing measured constrains what they cost "
            f"(see docs/simulator.md, regimes):</p><ul>{items}</ul>")


def write_text_atomic(path: Path, text: str) -> None:
    """Written whole and renamed: a crash never leaves half a report, and a `raybench report` of a run
    dir whose run draws its own report at the same moment leaves one whole file or the other."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_run_report(run_dir: Path, warn: Callable[[str], None]) -> Path | None:
    """The report at the end of ``raybench run``: a failure to draw warns, and the run stays whole.

    The cells are on disk before this is called, so nothing here can lose them; the warning
    says how to draw the report again.
    """
    try:
        return build_report(run_dir).html
    except Exception as err:  # noqa: BLE001 -- any failure to draw is reported, never raised
        warn(
            f"warning: the report was not written ({type(err).__name__}: {err}); the run's data is on disk. "
            f"Draw it again with: raybench report {run_dir}"
        )
        return None
