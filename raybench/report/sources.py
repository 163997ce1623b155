"""Results from four tools into one report frame (``frame.py``).

- a raybench run dir: ``cells/<id>/summary.json`` (the cell's settings under ``"cell"``);
- the seed's published results (``data/dstack_deepseek_r1_results.csv``, shipped with raybench);
- vLLM ``bench serve --save-result`` JSON (one object, or JSON lines from ``--append-result``);
- SGLang ``bench_serving --output-file`` JSONL (one object per line).

The field names each tool writes are in /work/shared/reference/reference-clients.md §4. vLLM's
file records no prompt or output length, so they are derived (total tokens / completed) unless
``--metadata input_len=... output_len=...`` put them in; ``--metadata hardware=H200`` names the
hardware the same way.
"""

from __future__ import annotations

import csv
import importlib.resources
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from raybench.errors import ConfigError
from raybench.report.frame import (LATENCY_METRICS, LATENCY_STATS, PREDICTED, SIMULATED, CellMode, SourceKind,
                                   hardware_name, report_frame, series_label)
from raybench.store.outcome import outcome_of
from raybench.store.rundir import RunDir, json_type

PUBLISHED = "published"  # the name that stands for the packaged CSV on the command line
PUBLISHED_RUN = "dstack (published)"
PUBLISHED_FILE = "dstack_deepseek_r1_results.csv"
# the engine a cell served by the simulator records (BackendKind.SIM; report/ never imports the backends)
SIM_ENGINE = "sim"


def published_csv() -> Path:
    """The seed's published results, as shipped in the package (see data/README.md)."""
    return Path(str(importlib.resources.files("raybench.report") / "data" / PUBLISHED_FILE))


@dataclass(frozen=True, kw_only=True)
class SourceRows:
    """A source's rows, and which of them no chart, comparison or fit may use.

    ``frame`` keeps the left-out rows (the report's table lists them, flagged); ``left_out``
    maps each left-out cell id to why (a line without the source's name), and may name cells
    that have no row at all (a cell directory without a summary). ``marked`` are lines about
    rows that stay in use but cover fewer requests than were sent (failed requests).
    """

    frame: pl.DataFrame
    left_out: Mapping[str, str] = field(default_factory=dict)
    marked: tuple[str, ...] = ()

    def usable(self) -> pl.DataFrame:
        return self.frame.filter(~pl.col("cell_id").is_in(list(self.left_out)))


def load_source(source: str | Path, *, run: str | None = None) -> pl.DataFrame:
    """A run dir, a results file of any supported tool, or ``"published"``, as a report frame.

    ``run`` names the source in charts and tables (default: the run dir's experiment/stamp or
    the file's stem). Raises ConfigError naming the path and what was expected. Every row is
    here, left-out ones too: ``read_source`` says which those are.
    """
    return read_source(source, run=run).frame


def read_source(source: str | Path, *, run: str | None = None) -> SourceRows:
    """``load_source``'s frame with the rows to leave out of charts, comparisons and fits."""
    if str(source) == PUBLISHED:
        return read_reference_csv(published_csv(), run=run or PUBLISHED_RUN)
    path = Path(source)
    if path.is_dir():
        return read_run_dir(path, run=run)
    if not path.exists():
        raise ConfigError(f"{path} does not exist: give a run directory, a results file, or {PUBLISHED!r}")
    if not path.is_file():
        raise ConfigError(f"{path} is neither a directory nor a regular file: give a run directory, a results file, "
                          f"or {PUBLISHED!r}")
    if path.suffix.lower() == ".csv":
        return read_reference_csv(path, run=run)
    if path.suffix.lower() in (".json", ".jsonl"):
        return read_results_file(path, run=run)
    raise ConfigError.invalid(
        "source", str(path), "a run directory, a .csv (dstack's tidy results), a .json (vLLM) or .jsonl (SGLang)"
    )


def load_run_dir(path: Path, *, run: str | None = None) -> pl.DataFrame:
    """Every cell of a raybench run dir that has a summary.json (complete or not)."""
    return read_run_dir(path, run=run).frame


def read_run_dir(path: Path, *, run: str | None = None) -> SourceRows:
    """A run dir's cells, with its unfinished ones and those without a summary left out.

    A run dir with a plan but no summary yet (stopped in its first cell) has no rows; its
    ``left_out`` names the stopped cells. Without plan.json either, it is no run dir: ConfigError.
    """
    cells = path / "cells"
    files = sorted(cells.glob("*/summary.json")) if cells.is_dir() else []
    # the report lists a stopped first cell; compare, calibrate and predict --reference refuse no rows
    if not files and not (path / "plan.json").is_file():
        raise ConfigError(f"{path} has no cells/*/summary.json: is it a raybench run directory?")
    name = run or run_name(path)
    order = _plan_order(path)
    simulators = _simulated_backends(path)
    cells = [_cell_row(f, run=name, simulators=simulators) for f in files]
    cells.sort(key=lambda c: order.get(c[0].get("cell_id"), len(order)))
    frame = report_frame([row for _, row in cells])
    # every summary is a readable object by now, which is what cell_outcomes needs
    return SourceRows(frame=frame, left_out={**unfinished_cells(path), **_cells_without_summary(path)})


def _cells_without_summary(path: Path) -> dict[str, str]:
    """Cell directories holding rows but no summary.json and no parts/ (those are unfinished_cells')."""
    from raybench.store.cells import PARTS_DIR

    out: dict[str, str] = {}
    if not (path / "cells").is_dir():  # a run stopped before its first cell began
        return out
    for cell_dir in sorted(p for p in (path / "cells").iterdir() if p.is_dir()):
        if (cell_dir / "summary.json").exists() or (cell_dir / PARTS_DIR).is_dir():
            continue
        rows = sorted(p.name for p in cell_dir.glob("*.parquet"))
        if rows:
            out[cell_dir.name] = (f"cell {cell_dir.name}: no summary.json beside {', '.join(rows)} (the run stopped "
                                  "before writing it, or it was removed), so nothing says the cell completed; "
                                  f"{rerun_advice(path)}")
    return out


def rerun_advice(run_dir: Path) -> str:
    # resuming keeps a cell's earlier files: the runner moves them to attempts/<n>/ before it runs the cell again
    return (f"`raybench run <experiment file> --resume --run-dir {run_dir}` measures it again and keeps "
            "the cell's present files under its attempts/")


def unfinished_cells(source: str | Path) -> dict[str, str]:
    """The cells of a run dir that are not complete (cell id -> the outcome line).

    Cells with a summary stay in the summary table, flagged, but no chart or comparison uses
    their numbers; a cell the driver was killed in (rows in parts/, no summary) is listed too.
    Other sources record no outcome: empty.
    """
    out: dict[str, str] = {}
    for name, (outcome, settings) in RunDir(Path(source)).cell_outcomes().items():
        if not outcome.complete:
            cell_id = str(settings.get("id") or name)
            out[cell_id] = outcome.line(cell_id)
    return out


def run_name(path: Path) -> str:
    """``<experiment>/<stamp>`` for ``runs/<experiment>/<stamp>``: short, and tells runs apart."""
    path = path.resolve()
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _way_out(path: Path) -> str:
    # the cell's rows beside a damaged summary are intact: the way out must not delete them
    return (f"restore it from a copy, or rename it (the cell then counts as not run) and resume the run: "
            f"{rerun_advice(path.parent.parent.parent)}")


def _simulated_backends(path: Path) -> dict[str, dict[str, str]]:
    """The backends env.json records as the simulator (``servers.<name>.kind``), each with the
    engine its profile imitates per mode (``simulator.modes``; empty where not recorded); none where
    env.json is missing or unreadable (a cell's own engine says so too, in summaries that record it)."""
    try:
        servers = json.loads((path / "env.json").read_text()).get("servers")
        return {name: _imitated_engines(server) for name, server in servers.items()
                if isinstance(server, dict) and server.get("kind") == SIM_ENGINE}
    except (OSError, ValueError, AttributeError):
        return {}


def _imitated_engines(server: Mapping[str, Any]) -> dict[str, str]:
    simulator = server.get("simulator")
    modes = simulator.get("modes") if isinstance(simulator, Mapping) else None
    return {mode: launch["engine"] for mode, launch in (modes if isinstance(modes, Mapping) else {}).items()
            if isinstance(launch, Mapping) and isinstance(launch.get("engine"), str)}


def _cell_row(path: Path, *, run: str,
              simulators: Mapping[str, Mapping[str, str]] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A cell's summary.json and its report row; ConfigError naming the file and the field that is damaged."""
    summary = _cell_summary(path)
    try:
        return summary, raybench_row(summary, run=run, simulators=simulators)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}; correct the value, or {_way_out(path)}") from None


def _cell_summary(path: Path) -> dict[str, Any]:
    way_out = _way_out(path)
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is unreadable ({err}): {way_out}") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{path} holds a JSON {json_type(summary)}, not a cell summary object: {way_out}")
    cell = summary.get("cell")
    # the id the row takes (raybench_row): a list or a number there would fail later as an unhashable key or a path
    cell_id = summary.get("cell_id") or (cell.get("id") if isinstance(cell, dict) else None)
    if cell_id is None:
        raise ConfigError(f"{path} is no cell summary (it names no cell_id): {way_out}")
    if not isinstance(cell_id, str):
        raise ConfigError(f"{path}: cell_id={cell_id!r} is not a cell id (a JSON string such as {path.parent.name!r}): "
                          f"{way_out}")
    return summary


def _plan_order(path: Path) -> dict[str, int]:
    """The plan's cell order; none where plan.json is missing or unreadable (it only orders rows)."""
    try:
        cells = json.loads((path / "plan.json").read_text()).get("cells", [])
        return {c.get("id"): i for i, c in enumerate(cells)}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def raybench_row(summary: Mapping[str, Any], *, run: str,
                 simulators: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """One raybench cell summary (summary.json) as a report row.

    A cell served by the simulator (its engine ``sim``, or its backend in ``simulators``: those
    env.json records as the simulator, for a summary that names no engine) is labelled
    ``(simulated)``, a prediction ``(predicted)``: neither is a measurement of a real server.
    ``simulators`` maps each to the engine its profile imitates per mode, which the row carries
    as ``simulates`` (compare sets it beside that engine's measurements).
    ConfigError naming the field where a value is one raybench never writes (text or NaN for a
    number, a negative time or count): the caller names the file.
    """
    cell = summary.get("cell") or {}
    if not isinstance(cell, Mapping):
        raise ConfigError(f"cell={cell!r} is not the cell's settings (a JSON object)")
    mode = _summary_text(cell, "mode", "cell.") or _summary_text(summary, "mode") or CellMode.ONLINE.value
    if mode not in {m.value for m in CellMode}:
        raise ConfigError.unknown("mode", mode, [m.value for m in CellMode])
    hardware = hardware_name(cell.get("hardware") or summary.get("hardware"))
    engine = _summary_text(cell, "engine", "cell.")
    num = _summary_number

    def setting(key: str, *fallbacks: str) -> int | None:
        # a cell's settings, or the summary's own record of them (an older summary has no "cell")
        value = num(cell, key, where="cell.", whole=True)
        for fallback in fallbacks:
            value = value or num(summary, fallback, whole=True)
        return value

    prefix_len = setting("prefix_len") or 0
    row: dict[str, Any] = {
        "run": run,
        "source": SourceKind.RAYBENCH.value,
        "cell_id": summary.get("cell_id") or cell.get("id"),
        "backend": _summary_text(cell, "backend", "cell.") or _summary_text(summary, "backend") or "unknown",
        "engine": engine,
        "hardware": hardware,
        "mode": mode,
        "concurrency": setting("concurrency"),
        "batch_size": setting("batch_size"),
        "num_prompts": setting("num_prompts", "num_prompts", "num_requests"),
        "input_len": setting("input_len", "nominal_input_len"),
        "output_len": setting("output_len", "nominal_output_len"),
        "prefix_len": prefix_len,
        "prefix_cached": cell.get("dataset") == "prefix" or prefix_len > 0,
        "client_saturated": _summary_flag(summary, "client_saturated"),
        "host_contended": _summary_flag(summary, "host_contended"),
        "repeat": setting("repeat"),
    }
    if summary.get("prediction"):  # raybench predict: never shown as a measurement
        row["label"] = series_label(row["backend"], hardware) + PREDICTED
        regimes = summary.get("extrapolated")
        if regimes is not None and not (isinstance(regimes, list) and all(isinstance(r, str) for r in regimes)):
            raise ConfigError(f"extrapolated={regimes!r} is not a list of the regimes a prediction needed (names)")
        row["extrapolated"] = ", ".join(regimes or ()) or None
    elif engine == SIM_ENGINE or (engine is None and row["backend"] in (simulators or {})):
        row["label"] = series_label(row["backend"], hardware) + SIMULATED
        row["simulates"] = (simulators or {}).get(row["backend"], {}).get(mode)
    # read as they are by the drill-down and the table, where a text or a one-ended window fails in polars
    # or a comparison: checked here, where the caller names the file
    for key in ("lost_actors", "replaced_actors", "retried", "short_output_requests", "steady_state_start_s",
                "steady_state_end_s"):
        num(summary, key)
    if (summary.get("steady_state_start_s") is None) != (summary.get("steady_state_end_s") is None):
        raise ConfigError("steady_state_start_s and steady_state_end_s are the two ends of one window: both numbers "
                          "(seconds), or both null where there was none")
    if "elapsed_s" in summary and "duration_s" not in summary:  # engine-mode offline cell
        row.update(
            completed=num(summary, "num_requests", whole=True),
            failed=0,
            duration_s=num(summary, "elapsed_s"),
            request_throughput_per_s=num(summary, "requests_per_second"),
            input_throughput_tokens_per_s=num(summary, "input_tokens_per_s"),
            output_throughput_tokens_per_s=num(summary, "output_tokens_per_s"),
            total_throughput_tokens_per_s=num(summary, "tokens_per_second"),
        )
        return row
    row.update(
        completed=num(summary, "completed", whole=True),
        failed=num(summary, "failed", whole=True),
        duration_s=num(summary, "duration_s"),
        request_throughput_per_s=num(summary, "request_throughput_per_s"),
        input_throughput_tokens_per_s=num(summary, "input_throughput_tokens_per_s"),
        output_throughput_tokens_per_s=num(summary, "output_throughput_tokens_per_s"),
        total_throughput_tokens_per_s=num(summary, "total_token_throughput"),
    )
    row.update(_latency_columns(summary, _VLLM_LATENCY_KEYS, convert=lambda value, key: num(summary, key)))
    return row


def _summary_number(mapping: Mapping[str, Any], key: str, *, where: str = "", whole: bool = False) -> Any:
    """A number of a raybench summary, None where null (a metric without samples).

    raybench writes every time, count, rate and latency as a finite number >= 0, and null where
    there is none; anything else (text, a list, true, NaN, -5) was written by something else or
    damaged: ConfigError naming the field, rather than a polars error or a value drawn as measured.
    """
    value = mapping.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}{key}={value!r} is not a number")
    if not math.isfinite(value):
        raise ConfigError(f"{where}{key}={value} is not a finite number (raybench writes null for a metric "
                          "without samples)")
    if value < 0:
        raise ConfigError(f"{where}{key}={value} is impossible (a measured cell has {key} >= 0)")
    if whole and value != int(value):
        raise ConfigError(f"{where}{key}={value} is not a whole number")
    return int(value) if whole else value


def _summary_text(mapping: Mapping[str, Any], key: str, where: str = "") -> str | None:
    value = mapping.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}{key}={value!r} is not a name (a JSON string)")
    return value


def _summary_flag(mapping: Mapping[str, Any], key: str) -> bool | None:
    value = mapping.get(key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not true, false or null")
    return value


def load_reference_csv(path: Path, *, run: str | None = None) -> pl.DataFrame:
    """dstack's tidy results (the columns of reference/README.md) as a report frame."""
    return read_reference_csv(path, run=run).frame


def read_reference_csv(path: Path, *, run: str | None = None) -> SourceRows:
    """``load_reference_csv``'s rows, with a row in which no request completed left out and a row
    with failed requests marked, as ``read_results_file`` does. Errors name the line an editor shows."""
    columns, records = _csv_records(path)
    needed = {"mode", "hardware", "backend", "output_len", "total_throughput_tok_s"}
    if not needed <= set(columns):
        raise ConfigError(f"{path} lacks the columns {sorted(needed - set(columns))} of dstack's tidy results "
                          f"(it has {sorted(columns)})")
    if not records:
        raise ConfigError(f"{path} has a header but no rows")
    name = run or (PUBLISHED_RUN if path.name == PUBLISHED_FILE else path.stem)
    rows, left_out, marked = [], {}, []
    for line, record in records:
        try:
            rows.append(_csv_row(record, name))
        except ConfigError as err:
            raise ConfigError(f"{path} line {line}: {err}") from None
        _note_failures(rows[-1], f"line {line}", left_out, marked)
    return SourceRows(frame=report_frame(rows), left_out=left_out, marked=tuple(marked))


def _csv_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and each row with the line it starts on, counted as an editor counts (the header is line 1).

    csv.DictReader skips blank lines without counting them and spreads a row with one value too
    many over the wrong columns, so rows are read one by one here.
    """
    records = []
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark that would glue onto "mode"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            columns = next(reader, [])
            while True:
                line = reader.line_num + 1
                values = next(reader, None)
                if values is None:
                    break
                if not values:
                    continue  # a blank line
                if len(values) != len(columns):
                    raise ConfigError(f"{path} line {line} has {len(values)} values for the {len(columns)} columns "
                                      "of its header: quote a value that holds a comma, or correct the row")
                records.append((line, dict(zip(columns, values, strict=True))))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}): save the results as a "
                          "UTF-8 CSV") from None
    except csv.Error as err:
        raise ConfigError(f"{path} line {reader.line_num}: not CSV ({err})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    return columns, records


def _number(value: Any, key: str, *, whole: bool = False) -> Any:
    """A numeric field of a results row: None where empty or not finite (NaN: a metric with no
    samples); ConfigError where it is not a number at all, rather than a row quietly left out."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a number") from None
    if not math.isfinite(number):
        return None
    return int(round(number)) if whole else number


def _num(record: Mapping[str, Any], key: str, *, whole: bool = False) -> Any:
    return _number(record.get(key), key, whole=whole)


def _csv_row(r: Mapping[str, str], run: str) -> dict[str, Any]:
    # report_frame checks these too, but by row index: here the caller can name the line
    if r["mode"] not in {m.value for m in CellMode}:
        raise ConfigError.unknown("mode", r["mode"], [m.value for m in CellMode])
    if not r["backend"]:
        raise ConfigError("backend is empty: name the engine that served the row (vllm, sglang, trt-llm)")
    online = r["mode"] == CellMode.ONLINE.value
    size = f"c{r.get('max_concurrency')}" if online else f"b{r.get('batch_size')}"
    prefix = _num(r, "shared_prefix_len", whole=True) or 0
    tag = f"p{prefix}" if prefix else ""
    row: dict[str, Any] = {
        "run": run,
        "source": SourceKind.DSTACK_CSV.value,
        "cell_id": f"{r['hardware']}-{r['backend']}-{r['mode']}-{size}-i{r.get('input_len')}{tag}-o{r['output_len']}",
        "backend": r["backend"],
        "hardware": r["hardware"] or None,
        "mode": r["mode"],
        "concurrency": _num(r, "max_concurrency", whole=True),
        "batch_size": _num(r, "batch_size", whole=True),
        "num_prompts": _num(r, "num_prompts", whole=True),
        "input_len": _num(r, "input_len", whole=True),
        "output_len": _num(r, "output_len", whole=True),
        "prefix_len": prefix,
        "prefix_cached": r.get("prefix_cached") == "yes",
        "completed": _num(r, "completed", whole=True),
        "duration_s": _num(r, "duration_s"),
        "request_throughput_per_s": _num(r, "request_throughput_req_s"),
        "input_throughput_tokens_per_s": _num(r, "input_throughput_tok_s"),
        "output_throughput_tokens_per_s": _num(r, "output_throughput_tok_s"),
        "total_throughput_tokens_per_s": _num(r, "total_throughput_tok_s"),
    }
    if row["completed"] is not None and row["num_prompts"] is not None:
        row["failed"] = row["num_prompts"] - row["completed"]
    for metric in ("ttft", "tpot", "itl", "e2e_latency"):
        for stat in ("mean", "median", "p99"):
            key = f"{stat}_{metric}_ms"
            if key == "p99_itl_ms":
                continue  # the source's p99 ITL column is mislabelled (reference/README.md caveats)
            row[key] = _num(r, key)
    _check_csv_values(r, row)
    return row


# CSV column -> the least a measured row can hold there; a row below it was mistyped or is no measurement
_CSV_AT_LEAST = {"max_concurrency": 1, "batch_size": 1, "num_prompts": 1, "input_len": 1, "output_len": 1,
                 "completed": 0, "duration_s": 0, "shared_prefix_len": 0,
                 **{k: 0 for k in ("request_throughput_req_s", "input_throughput_tok_s", "output_throughput_tok_s",
                                   "total_throughput_tok_s")},
                 **{f"{stat}_{metric}_ms": 0 for metric in ("ttft", "tpot", "itl", "e2e_latency")
                    for stat in ("mean", "median", "p99")}}
# ... and those that are never 0 once a request completed: time passes before a first token and
# until the last one, and a throughput of 0 measured nothing
_CSV_POSITIVE = ("duration_s", "total_throughput_tok_s", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
                 "mean_e2e_latency_ms", "median_e2e_latency_ms", "p99_e2e_latency_ms")
# ... and those that are 0 or empty where no request completed (the clients write 0 there); the
# time the run took is not among them: it passes whether requests complete or fail
_CSV_NOTHING_MEASURED = tuple(k for k in _CSV_AT_LEAST if k.endswith(("_req_s", "_tok_s", "_ms")))


def _check_csv_values(record: Mapping[str, str], row: Mapping[str, Any]) -> None:
    """ConfigError naming the first field whose value no measurement can have (a negative
    throughput, a zero TTFT, an output of 0 tokens), rather than a row fitted or drawn as measured."""
    _refuse_below(record, [(key, least, _num(record, key)) for key, least in _CSV_AT_LEAST.items()],
                  has="a measured row has", fix="correct the row or remove it")
    completed = row.get("completed")
    _refuse_more_completed(completed, row.get("num_prompts"), fix="correct the row")
    if completed == 0:
        # the row is left out as measuring nothing: a rate or latency beside it says completed is mistyped
        for key in _CSV_NOTHING_MEASURED:
            if _num(record, key):
                raise ConfigError(f"completed=0 but {key}={record[key]}: a row whose requests all failed measured "
                                  "no rate or latency; correct completed, or the row")
        return
    for key in _CSV_POSITIVE:
        if _num(record, key) == 0:
            raise ConfigError(f"{key}=0 is impossible for a row whose requests completed: correct the row, or "
                              "leave the field empty where it was not measured")
    if (row.get("output_len") or 0) > 1:
        for key in ("mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms"):
            if _num(record, key) == 0:
                raise ConfigError(f"{key}=0 is impossible with output_len={row['output_len']} (tokens after the "
                                  "first take time): correct the row, or leave the field empty")


def load_results_file(path: Path, *, run: str | None = None) -> pl.DataFrame:
    """vLLM --save-result JSON or SGLang bench_serving JSONL (told apart by their field names)."""
    return read_results_file(path, run=run).frame


def read_results_file(path: Path, *, run: str | None = None) -> SourceRows:
    """``load_results_file``'s rows, with a cell summary that is not complete and a result in which
    no request completed left out, and a result with failed requests marked."""
    name = run or path.stem
    rows, left_out, marked = [], {}, []
    for i, record in enumerate(_json_records(path)):
        if not isinstance(record, dict):
            raise ConfigError(f"{path}: record {i + 1} is a JSON {json_type(record)}, not an object")
        try:
            if "summary_version" in record and "cell" in record:
                rows.append(raybench_row(record, run=name))
                outcome = outcome_of(record)
                if not outcome.complete:  # as in its run dir: its rows miss requests or time
                    cell_id = str(rows[-1]["cell_id"])
                    left_out[cell_id] = outcome.line(cell_id)
                continue
            if _is_vllm(record):
                _check_result_values(record)
                rows.append(vllm_row(record, run=name, index=i))
            elif _is_sglang(record):
                _check_result_values(record)
                rows.append(sglang_row(record, run=name, index=i))
            else:
                raise ConfigError(
                    f"record {i + 1} is neither vLLM's --save-result JSON (total_token_throughput, "
                    "mean_ttft_ms) nor SGLang's bench_serving JSONL (mean_e2e_latency_ms, random_input_len)"
                )
        except ConfigError as err:
            where = "" if str(err).startswith("record ") else f"record {i + 1}: "
            raise ConfigError(f"{path}: {where}{err}") from None
        _note_failures(rows[-1], f"record {i + 1}", left_out, marked)
    if not rows:
        raise ConfigError(f"{path} holds no result record")
    return SourceRows(frame=report_frame(rows), left_out=left_out, marked=tuple(marked))


_MEASURED_COLUMNS = ("duration_s", "request_throughput_per_s", "input_throughput_tokens_per_s",
                     "output_throughput_tokens_per_s", "total_throughput_tokens_per_s",
                     *(f"{stat}_{metric}_ms" for metric in LATENCY_METRICS for stat in LATENCY_STATS))


# vLLM / SGLang result field -> the least a measured record can hold there (both clients use these names)
_RESULT_AT_LEAST = {"num_prompts": 1, "max_concurrency": 1, "completed": 0, "failed": 0, "duration": 0,
                    "total_input_tokens": 0, "total_output_tokens": 0, "request_throughput": 0, "input_throughput": 0,
                    "output_throughput": 0, "total_throughput": 0, "total_token_throughput": 0}


# token lengths the clients' --metadata or arguments record; a negative one would be the row's length as written
_RESULT_LENGTHS = ("input_len", "output_len", "prefix_len", "random_input_len", "random_output_len", "random_prefix_len",
                   "gsp_system_prompt_len", "gsp_question_len", "gsp_output_len")


def _check_result_values(record: Mapping[str, Any]) -> None:
    """ConfigError naming the first field of a vLLM or SGLang result that no benchmark writes (a negative
    duration or latency, more requests completed than sent), rather than a row drawn or fitted as measured.

    The dstack CSV has its own, stricter check (``_check_csv_values``); these files come from the clients
    themselves, so only what they cannot have written is refused.
    """
    latency_keys = [k for k in record if k.startswith(("mean_", "median_", "p99_")) and k.endswith("_ms")]
    bounds = (*_RESULT_AT_LEAST.items(), *((k, 0) for k in latency_keys))
    checks = [(key, least, _num(record, key)) for key, least in bounds]
    # only a negative length, which would become the row's, is refused here: one that is no number is refused
    # where the row takes it, and not at all where another key stands before it (SGLang's unused defaults)
    checks += [(key, 0, _length_or_none(record, key)) for key in _RESULT_LENGTHS]
    _refuse_below(record, checks, has="a benchmark writes", show=repr,
                  fix="the file was edited or is not a result; correct the field or remove the record")
    _refuse_more_completed(_num(record, "completed", whole=True), _num(record, "num_prompts", whole=True),
                           fix="correct the record")


def _refuse_below(record: Mapping[str, Any], checks: Sequence[tuple[str, float, Any]], *, has: str, fix: str,
                  show: Callable[[Any], str] = str) -> None:
    """ConfigError for the first ``(key, least, value)`` whose value is below the least a measurement has."""
    for key, least, value in checks:
        if value is not None and value < least:
            raise ConfigError(f"{key}={show(record[key])} is impossible ({has} {key} >= {least}): {fix}")


def _refuse_more_completed(completed: int | None, sent: int | None, *, fix: str) -> None:
    if completed is not None and sent is not None and completed > sent:
        raise ConfigError(f"completed={completed} is impossible with num_prompts={sent} (more requests completed "
                          f"than were sent): {fix}")


def _length_or_none(record: Mapping[str, Any], key: str) -> int | None:
    try:
        return _int_meta(record, key)
    except ConfigError:
        return None


def _note_failures(row: dict[str, Any], where: str, left_out: dict[str, str], marked: list[str]) -> None:
    """A row in which no request completed goes to ``left_out``, one with failed requests to ``marked``."""
    failures = _failed_requests(row, where)
    if failures is not None and row["completed"] == 0:
        left_out[str(row["cell_id"])] = failures
    elif failures is not None:
        marked.append(failures)


def _failed_requests(row: dict[str, Any], where: str) -> str | None:
    """A line for a result with failed requests (None without), starting with ``where`` it is in the file.

    Where none completed, the clients still write 0 for every latency and throughput: those are
    cleared here, so that no table shows them as measured.
    """
    completed, failed, total = row.get("completed"), row.get("failed"), row.get("num_prompts")
    if failed is None and completed is not None and total is not None:
        failed = max(0, total - completed)  # SGLang records no failures, only what completed
    if completed == 0:
        row.update(dict.fromkeys(_MEASURED_COLUMNS))
        row["failed"] = failed
        return (f"{where}: no request completed ({failed if failed is not None else '?'} of "
                f"{total if total is not None else '?'} failed), so nothing was measured")
    if failed:
        return (f"{where}: {failed} of {failed + (completed or 0)} requests failed; its throughput and "
                f"latencies cover only the {completed} that completed, at a lower load than was sent")
    return None


def _json_records(path: Path) -> Iterator[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        kind = "JSONL" if path.suffix.lower() == ".jsonl" else "JSON"
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}): give the {kind} file the "
                          "benchmark saved, as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        yield whole
        return
    if isinstance(whole, list):
        yield from whole
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{n}: not a JSON object ({err.msg})") from err


def _is_vllm(record: Mapping[str, Any]) -> bool:
    return "total_token_throughput" in record or "endpoint_type" in record or "mean_e2el_ms" in record


def _is_sglang(record: Mapping[str, Any]) -> bool:
    return "mean_e2e_latency_ms" in record or "random_input_len" in record or "dataset_name" in record


def _per_request(total: int | None, completed: int | None) -> int | None:
    if not total or not completed:
        return None
    return int(round(total / completed))


# report column metric -> the name in vLLM's result file (raybench's summary uses vLLM's names)
_VLLM_LATENCY_KEYS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e_latency": "e2el"}


def _latency_columns(record: Mapping[str, Any], keys: Mapping[str, str],
                     convert: Callable[[Any, str], Any] | None = None) -> dict[str, Any]:
    """``mean/median/p99_<metric>_ms`` columns from a record that names the metric ``keys[metric]``."""
    convert = convert or _number
    return {f"{stat}_{metric}_ms": convert(record.get(f"{stat}_{key}_ms"), f"{stat}_{key}_ms")
            for metric, key in keys.items() for stat in LATENCY_STATS}


def vllm_row(record: Mapping[str, Any], *, run: str, index: int = 0) -> dict[str, Any]:
    """One vLLM --save-result record; lengths from --metadata when given, else tokens/completed."""
    completed = _num(record, "completed", whole=True)
    duration = _num(record, "duration")
    total_in, total_out = _num(record, "total_input_tokens", whole=True), _num(record, "total_output_tokens", whole=True)
    concurrency = _num(record, "max_concurrency", whole=True)
    input_len = _int_meta(record, "input_len", "random_input_len") or _per_request(total_in, completed)
    output_len = _int_meta(record, "output_len", "random_output_len") or _per_request(total_out, completed)
    prefix_len = _int_meta(record, "prefix_len", "random_prefix_len") or 0
    e2e = record.get("latencies")
    row: dict[str, Any] = {
        "run": run,
        "source": SourceKind.VLLM.value,
        "cell_id": f"{run}-{index}-c{concurrency}-i{input_len}-o{output_len}",
        "backend": str(record.get("engine") or record.get("backend") or "vllm"),
        "hardware": hardware_name(record.get("hardware") or record.get("gpu")),
        "mode": CellMode.ONLINE.value,
        "concurrency": concurrency,
        "num_prompts": _num(record, "num_prompts", whole=True),
        "input_len": input_len,
        "output_len": output_len,
        "prefix_len": prefix_len,
        "completed": completed,
        "failed": _num(record, "failed", whole=True),
        "duration_s": duration,
        "request_throughput_per_s": _num(record, "request_throughput"),
        "input_throughput_tokens_per_s": total_in / duration if total_in is not None and duration else None,
        "output_throughput_tokens_per_s": _num(record, "output_throughput"),
        "total_throughput_tokens_per_s": _num(record, "total_token_throughput"),
    }
    row.update(_latency_columns(record, _VLLM_LATENCY_KEYS))
    if row["mean_e2e_latency_ms"] is None and isinstance(e2e, list) and e2e:
        row["mean_e2e_latency_ms"] = _mean_e2el_ms(e2e, completed)
    return row


def _mean_e2el_ms(latencies: list[Any], completed: int | None) -> float | None:
    """vLLM's mean E2EL from the file's per-request ``latencies`` (s), where it saved no ``mean_e2el_ms``.

    E2EL is saved only when asked for (``--percentile-metrics``, "ttft,tpot,itl" by default), but
    ``latencies`` stay in the file either way, one per request sent: a failed request's is 0.0 (vLLM
    0.32.0 ``endpoint_request_func.py`` sets it only after a stream with a valid chunk), and vLLM's
    mean is over the successful ones. None where the positive ones are not exactly the completed ones:
    which were successful is then unknown, and a mean over the wrong requests is no vLLM figure.
    """
    seconds = [_number(v, "latencies") for v in latencies]
    if None in seconds:
        return None
    done = [s for s in seconds if s > 0]
    if not done or (completed is not None and len(done) != completed):
        return None
    return sum(done) / len(done) * 1e3


def _int_meta(record: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = record.get(key)
        if value is not None and value != "":
            try:
                return int(float(value))
            except (TypeError, ValueError, OverflowError):
                raise ConfigError.invalid(key, value, "a whole number of tokens") from None
    return None


def sglang_row(record: Mapping[str, Any], *, run: str, index: int = 0) -> dict[str, Any]:
    """One SGLang bench_serving JSONL record (S25 or newer field set)."""
    dataset = record.get("dataset_name") or "random"
    shared = dataset == "generated-shared-prefix"
    completed = _num(record, "completed", whole=True)
    total_in, total_out = _num(record, "total_input_tokens", whole=True), _num(record, "total_output_tokens", whole=True)
    if shared:
        # random_input_len is an unused default here; the prompt is system prompt + question
        parts = [_int_meta(record, "gsp_system_prompt_len"), _int_meta(record, "gsp_question_len")]
        input_len = sum(parts) if None not in parts else _per_request(total_in, completed)
        output_len = _int_meta(record, "gsp_output_len") or _per_request(total_out, completed)
        prefix_len = _int_meta(record, "gsp_system_prompt_len")
    elif dataset == "random":
        input_len = _int_meta(record, "random_input_len") or _per_request(total_in, completed)
        output_len = _int_meta(record, "random_output_len") or _per_request(total_out, completed)
        prefix_len = 0
    else:
        input_len, output_len, prefix_len = _per_request(total_in, completed), _per_request(total_out, completed), 0
    input_tput, output_tput = _num(record, "input_throughput"), _num(record, "output_throughput")
    total = _num(record, "total_throughput")
    if total is None and input_tput is not None and output_tput is not None:
        total = input_tput + output_tput  # dstack's "throughput (input+output)"
    concurrency = _num(record, "max_concurrency", whole=True)
    row: dict[str, Any] = {
        "run": run,
        "source": SourceKind.SGLANG.value,
        "cell_id": f"{run}-{index}-c{concurrency}-i{input_len}-o{output_len}",
        "backend": str(record.get("backend") or "sglang"),
        "hardware": hardware_name(record.get("hardware") or record.get("gpu")),
        "mode": CellMode.ONLINE.value,
        "concurrency": concurrency,
        "num_prompts": _num(record, "num_prompts", whole=True),
        "input_len": input_len,
        "output_len": output_len,
        "prefix_len": prefix_len,
        "prefix_cached": shared,
        "completed": completed,
        "duration_s": _num(record, "duration"),
        "request_throughput_per_s": _num(record, "request_throughput"),
        "input_throughput_tokens_per_s": input_tput,
        "output_throughput_tokens_per_s": output_tput,
        "total_throughput_tokens_per_s": total,
    }
    row.update(_latency_columns(record, {metric: metric for metric in LATENCY_METRICS}))
    return row
