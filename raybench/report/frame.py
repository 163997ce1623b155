"""The report frame: one row per cell, the same columns whatever the results came from.

Every chart, table and comparison reads this frame, so a raybench run dir, the seed's published
CSV, vLLM's ``--save-result`` JSON and SGLang's ``bench_serving`` JSONL all draw the same way
(``sources.py`` turns each into it). Units are in the names: ``*_ms`` latencies as both
reference clients report them, ``duration_s``, ``*_tokens_per_s`` throughputs.

``hardware`` may be null (a cell that does not say what it ran on); the series label is then the
backend's name alone. ``series`` is what one line (or one bar colour) of a chart stands for:
backend × hardware in a report, run + backend × hardware in a comparison.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from raybench.errors import ConfigError


class CellMode(str, enum.Enum):
    ONLINE = "online"  # a server under closed-loop concurrency (or an arrival rate)
    OFFLINE = "offline"  # one batch of B prompts at once


class SourceKind(str, enum.Enum):
    """Where a row's numbers came from (the field names and definitions differ per tool)."""

    RAYBENCH = "raybench"  # a raybench run dir (cells/<id>/summary.json)
    DSTACK_CSV = "dstack-csv"  # the seed's published results, tidied (reference/README.md)
    VLLM = "vllm"  # vLLM bench serve --save-result JSON
    SGLANG = "sglang"  # SGLang bench_serving JSONL


# How a label ends where its numbers were not measured on a real server: charts, tables and
# comparisons must never show them as measurements.
PREDICTED = " (predicted)"  # a raybench predict cell: the simulator's engine core, in virtual time
SIMULATED = " (simulated)"  # a cell served by the simulator (raybench run --simulate, a SimBackend)
UNMEASURED_MARKERS = (PREDICTED, SIMULATED)

# the names sources give an engine (a raybench cell's engine, the published CSV's and the clients'
# backend column) -> the engine, as BackendKind spells it (report/ never imports the backends)
ENGINE_NAMES = {"vllm": "vllm", "sglang": "sglang", "sglang-native": "sglang", "sglang-oai": "sglang",
                "trt-llm": "trtllm", "trtllm": "trtllm", "tensorrt-llm": "trtllm", "tensorrt_llm": "trtllm",
                "trt": "trtllm", "trt-torch-flow": "trtllm"}

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e_latency")
LATENCY_STATS = ("mean", "median", "p99")

COLUMNS: dict[str, pl.DataType] = {
    "run": pl.String(),
    "source": pl.String(),
    "cell_id": pl.String(),
    "backend": pl.String(),
    "engine": pl.String(),  # the serving engine a raybench cell's backend runs (vllm, sglang, ...); null elsewhere
    "simulates": pl.String(),  # a simulated cell: the engine its simulator's profile imitates; null elsewhere
    "hardware": pl.String(),
    "label": pl.String(),  # backend × hardware, e.g. "H200-vLLM" (or the backend alone)
    "series": pl.String(),  # what a chart's line stands for (label, or run + label in a comparison)
    "mode": pl.String(),
    "concurrency": pl.Int64(),
    "batch_size": pl.Int64(),
    "num_prompts": pl.Int64(),
    "input_len": pl.Int64(),
    "output_len": pl.Int64(),
    "prefix_len": pl.Int64(),
    "prefix_cached": pl.Boolean(),
    "completed": pl.Int64(),
    "failed": pl.Int64(),
    "duration_s": pl.Float64(),
    "request_throughput_per_s": pl.Float64(),
    "input_throughput_tokens_per_s": pl.Float64(),
    "output_throughput_tokens_per_s": pl.Float64(),
    "total_throughput_tokens_per_s": pl.Float64(),
    **{f"{stat}_{metric}_ms": pl.Float64() for metric in LATENCY_METRICS for stat in LATENCY_STATS},
    "client_saturated": pl.Boolean(),
    "host_contended": pl.Boolean(),
    "extrapolated": pl.String(),  # a prediction's regimes its profile's fit never saw ("a, b"); null: none, or measured
    "repeat": pl.Int64(),  # 1, 2, ... when an experiment repeats its cells; null: not repeated
}

# what a cell's repeats share; every other column is a measurement, averaged over the repeats
_REPEAT_KEYS = ("run", "source", "backend", "engine", "simulates", "hardware", "label", "series", "mode",
                "concurrency", "batch_size", "num_prompts", "input_len", "output_len", "prefix_len", "prefix_cached")

# How backends are written in labels, as the seed's legends write them.
_BACKEND_DISPLAY = {
    "vllm": "vLLM",
    "sglang": "SGLang",
    "trt-llm": "TRT-LLM",
    "trtllm": "TRT-LLM",
    "tensorrt-llm": "TRT-LLM",
    "tensorrt_llm": "TRT-LLM",
}


def backend_display(backend: str) -> str:
    return _BACKEND_DISPLAY.get(backend.lower(), backend)


def series_label(backend: str, hardware: str | None) -> str:
    """``H200-vLLM`` for a known hardware; the backend's own name without one."""
    if not hardware:
        return backend
    return f"{hardware}-{backend_display(backend)}"


def hardware_name(value: Any) -> str | None:
    """A cell's hardware as one short name: a string as is, or the name inside a mapping.

    Cells may carry hardware as ``"H200"`` or as a record such as ``{"gpu": "H200", "count": 8}``;
    a report only needs the part that tells two series apart.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in ("name", "gpu", "gpu_type", "accelerator", "kind", "type"):
            if isinstance(value.get(key), str) and value[key]:
                return value[key]
        return None
    return str(value)


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=COLUMNS)


def report_frame(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows (dicts with any subset of COLUMNS) as a report frame; absent columns are null.

    ``label`` and ``series`` are filled from backend × hardware where a row leaves them out.
    Raises ConfigError on a row without ``backend`` or with an unknown ``mode``.
    """
    full = []
    for i, row in enumerate(rows):
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ConfigError.invalid(f"row {i} columns", sorted(unknown), f"columns of {sorted(COLUMNS)}")
        backend = row.get("backend")
        if not backend:
            raise ConfigError.invalid(f"row {i} backend", backend, "a backend name")
        mode = row.get("mode")
        if mode not in {m.value for m in CellMode}:
            raise ConfigError.unknown(f"row {i} mode", str(mode), [m.value for m in CellMode])
        item = {name: row.get(name) for name in COLUMNS}
        item["label"] = item["label"] or series_label(backend, item["hardware"])
        item["series"] = item["series"] or item["label"]
        if item["prefix_cached"] is None:
            item["prefix_cached"] = bool(item["prefix_len"])
        full.append(item)
    if not full:
        return empty_frame()
    return pl.DataFrame(full, schema=COLUMNS, strict=False)


def combine_repeats(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per cell: the repeats of a cell averaged (a chart draws one point per cell).

    ``cell_id`` is the first repeat's; ``repeat`` becomes the number of repeats averaged;
    ``client_saturated`` is true when any repeat was.
    """
    frame = as_report_frame(frame)
    if frame.is_empty() or (frame["repeat"].fill_null(1) <= 1).all():
        return frame
    flags = ("client_saturated", "host_contended", "extrapolated")
    measured = [c for c in COLUMNS if c not in (*_REPEAT_KEYS, "cell_id", "repeat", *flags)]
    combined = (
        frame.sort(pl.col("repeat").fill_null(1), maintain_order=True)
        .group_by(list(_REPEAT_KEYS), maintain_order=True)
        .agg(
            pl.col("cell_id").first(),
            *(pl.col(c).mean() for c in measured),
            pl.col("client_saturated").any(),
            pl.col("host_contended").any(),
            pl.col("extrapolated").first(),
            pl.len().cast(pl.Int64).alias("repeat"),
        )
    )
    return as_report_frame(combined)


def as_report_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with exactly the report columns and types (missing ones null).

    Lets a caller hand a chart a frame it built or filtered itself; a frame without the
    columns that tell cells apart is refused with the names that are missing.
    """
    needed = ("backend", "mode", "series")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ConfigError.invalid(
            "frame columns", missing, "a report frame (raybench.report.load_source or report_frame)"
        )
    return frame.select(
        [
            pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in COLUMNS.items()
        ]
    )


def combine_runs(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Several sources in one frame, one series per run and backend × hardware.

    A run with a single label is one series named after the run (with the label's
    predicted/simulated marker, which the run's name may not show); otherwise ``run: label``.
    """
    parts = []
    for frame in frames:
        frame = as_report_frame(frame)
        for run in frame["run"].unique(maintain_order=True).to_list():
            part = frame.filter(pl.col("run") == run)
            single = part["label"].n_unique() == 1
            marker = next((m for m in UNMEASURED_MARKERS if single and part["label"][0].endswith(m)), "")
            part = part.with_columns(
                pl.lit(run + marker).alias("series")
                if single
                else pl.concat_str([pl.lit(f"{run}: "), pl.col("label")]).alias("series")
            )
            parts.append(part)
    return pl.concat(parts) if parts else empty_frame()
