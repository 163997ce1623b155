"""Run dirs written directly (no Ray): synthetic closed-loop cells summarised by the real code.

A cell of ``num_prompts`` requests at concurrency C: slot k serves requests k, k+C, ...; each
request streams its first token ``ttft_ms`` after it is sent and one token every ``itl_ms``
after that, and the next request on the slot is sent when it ends. So every figure a test
checks (TPOT = itl_ms, in flight = C, tokens = n x out) is known without the formulas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from raybench.analysis.summary import summarize_cell, summarize_offline, summary_frame
from raybench.store.rundir import write_json_atomic, write_table_atomic
from raybench.store.schema import CHUNKS_SCHEMA, REQUESTS_SCHEMA

BASE_NS = 5_000_000_000_000


def online_tables(cell_id: str, *, concurrency: int, num_prompts: int, input_len: int, output_len: int,
                  ttft_ms: float, itl_ms: float, failed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    requests, chunks = [], []
    duration_ns = round((ttft_ms + (output_len - 1) * itl_ms) * 1e6) + 1000
    for j in range(num_prompts):
        sent = BASE_NS + (j // concurrency) * duration_ns
        bad = j < failed
        times = [] if bad else [sent + round((ttft_ms + i * itl_ms) * 1e6) for i in range(output_len)]
        requests.append({
            "cell_id": cell_id, "request_id": j, "actor": "a0", "node": "n0", "prompt_tokens": input_len,
            "server_prompt_tokens": input_len, "max_tokens": output_len, "output_tokens": None if bad else output_len,
            "cached_tokens": None, "t_scheduled_ns": BASE_NS, "t_sent_ns": sent,
            "t_first_ns": None if bad else times[0], "t_done_ns": sent + duration_ns if not bad else sent + 10**6,
            "status": "http_error" if bad else "ok", "http_status": 500 if bad else None,
            "error": "boom" if bad else None,
        })
        for i, t in enumerate(times):
            chunks.append({"cell_id": cell_id, "request_id": j, "seq": i, "t_ns": t, "n_tokens": 1, "kind": "token"})
    return (
        pl.from_arrow(pa.Table.from_pylist(requests, schema=REQUESTS_SCHEMA)),
        pl.from_arrow(pa.Table.from_pylist(chunks, schema=CHUNKS_SCHEMA)),
    )


def cell_json(cell_id: str, *, backend: str, mode: str, input_len: int, output_len: int,
              concurrency: int | None = None, batch_size: int | None = None, num_prompts: int | None = None,
              prefix_len: int = 0, hardware: Any = None) -> dict[str, Any]:
    cell = {
        "id": cell_id, "backend": backend, "mode": mode, "input_len": input_len, "output_len": output_len,
        "dataset": "prefix" if prefix_len else "random", "concurrency": concurrency,
        "num_prompts": num_prompts or batch_size, "batch_size": batch_size,
        "offline_method": "engine" if mode == "offline" else None, "range_ratio": 0.0, "request_rate": "inf",
        "burstiness": 1.0, "prefix_len": prefix_len, "num_groups": None, "prompts_per_group": None,
    }
    if hardware is not None:
        cell["hardware"] = hardware
    return cell


def write_run_dir(path: Path, *, backend: str = "sim", hardware: Any = None, itl_ms: float = 2.0,
                  ttft_ms: float = 20.0, concurrencies=(4, 16), batch_sizes=(32,), num_prompts: int = 32,
                  input_len: int = 512, output_len: int = 64, failed: int = 0,
                  extra_cells: list[dict] | None = None) -> Path:
    """A run dir as ``raybench run`` leaves it (plan.json, env.json, cells/, summary.parquet)."""
    summaries, plan = [], []
    for c in concurrencies:
        cell_id = f"{backend}-online-c{c}-i{input_len}-o{output_len}"
        requests, chunks = online_tables(cell_id, concurrency=c, num_prompts=num_prompts, input_len=input_len,
                                         output_len=output_len, ttft_ms=ttft_ms, itl_ms=itl_ms, failed=failed)
        summary = summarize_cell(requests, chunks, target_concurrency=c)
        summary["cell"] = cell_json(cell_id, backend=backend, mode="online", input_len=input_len,
                                    output_len=output_len, concurrency=c, num_prompts=num_prompts, hardware=hardware)
        summary.update({"client_saturated": False, "lost_actors": 0, "requests_not_recorded": 0,
                        "timed_out": False, "actors": []})
        _write_cell(path, cell_id, requests, chunks, summary)
        summaries.append(summary)
        plan.append(summary["cell"])
    for b in batch_sizes:
        cell_id = f"{backend}-offline-engine-b{b}-i{input_len}-o{output_len}"
        elapsed_s = b * output_len * itl_ms / 1e3 / 8
        summary = summarize_offline(elapsed_s, [input_len] * b, [output_len] * b, input_len, output_len)
        summary["cell_id"] = cell_id
        summary["cell"] = cell_json(cell_id, backend=backend, mode="offline", input_len=input_len,
                                    output_len=output_len, batch_size=b, hardware=hardware)
        requests, _ = online_tables(cell_id, concurrency=b, num_prompts=b, input_len=input_len,
                                    output_len=output_len, ttft_ms=ttft_ms, itl_ms=itl_ms)
        _write_cell(path, cell_id, requests, pl.from_arrow(CHUNKS_SCHEMA.empty_table()), summary)
        summaries.append(summary)
        plan.append(summary["cell"])
    for summary in extra_cells or []:
        _write_cell(path, summary["cell_id"], None, None, summary)
        summaries.append(summary)
        plan.append(summary["cell"])
    write_json_atomic(path / "plan.json", {"experiment": "fixture", "cells": plan})
    write_json_atomic(path / "env.json", {"raybench_version": "0.1.0", "python": "3.11", "platform": "test",
                                          "packages": {"polars": pl.__version__}, "command": "raybench run fixture.py"})
    write_table_atomic(path / "summary.parquet", summary_frame(summaries).to_arrow())
    return path


def _write_cell(run: Path, cell_id: str, requests, chunks, summary: dict) -> None:
    cell_dir = run / "cells" / cell_id
    cell_dir.mkdir(parents=True, exist_ok=True)
    if requests is not None:
        write_table_atomic(cell_dir / "requests.parquet", requests.to_arrow())
        write_table_atomic(cell_dir / "chunks.parquet", chunks.to_arrow())
    (cell_dir / "summary.json").write_text(json.dumps(summary))


def vllm_record(*, concurrency: int, completed: int, input_len: int, output_len: int, duration_s: float,
                ttft_ms: float, tpot_ms: float, e2el_ms: float | None = None, **extra) -> dict[str, Any]:
    """A vLLM --save-result record with the fields of reference-clients.md §4 (Vnew)."""
    total_in, total_out = completed * input_len, completed * output_len
    record = {
        "date": "20260101-120000", "endpoint_type": "vllm", "backend": "vllm", "label": None,
        "model_id": "deepseek-ai/DeepSeek-R1", "tokenizer_id": "deepseek-ai/DeepSeek-R1", "num_prompts": completed,
        "request_rate": "inf", "burstiness": 1.0, "max_concurrency": concurrency, "duration": duration_s,
        "completed": completed, "failed": 0, "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput": completed / duration_s, "request_goodput": None,
        "output_throughput": total_out / duration_s, "total_token_throughput": (total_in + total_out) / duration_s,
        "max_output_tokens_per_s": 2 * total_out / duration_s, "max_concurrent_requests": concurrency,
        "mean_ttft_ms": ttft_ms, "median_ttft_ms": ttft_ms, "std_ttft_ms": 0.0, "p99_ttft_ms": ttft_ms * 1.5,
        "mean_tpot_ms": tpot_ms, "median_tpot_ms": tpot_ms, "std_tpot_ms": 0.0, "p99_tpot_ms": tpot_ms * 1.2,
        "mean_itl_ms": tpot_ms, "median_itl_ms": tpot_ms, "std_itl_ms": 0.0, "p99_itl_ms": tpot_ms * 2,
        "latencies": [(ttft_ms + (output_len - 1) * tpot_ms) / 1e3] * completed,
    }
    if e2el_ms is not None:
        record.update(mean_e2el_ms=e2el_ms, median_e2el_ms=e2el_ms, std_e2el_ms=0.0, p99_e2el_ms=e2el_ms)
    record.update(extra)
    return record


def sglang_record(*, concurrency: int, completed: int, input_len: int, output_len: int, duration_s: float,
                  ttft_ms: float, tpot_ms: float, dataset: str = "random", **extra) -> dict[str, Any]:
    """An SGLang bench_serving JSONL record with the S25 fields of reference-clients.md §4."""
    total_in, total_out = completed * input_len, completed * output_len
    e2e = ttft_ms + (output_len - 1) * tpot_ms
    record = {
        "backend": "sglang", "dataset_name": dataset, "request_rate": float("inf"), "max_concurrency": concurrency,
        "sharegpt_output_len": None, "random_input_len": input_len, "random_output_len": output_len,
        "random_range_ratio": 1.0, "duration": duration_s, "completed": completed,
        "total_input_tokens": total_in, "total_output_tokens": total_out,
        "total_output_tokens_retokenized": total_out - 3, "request_throughput": completed / duration_s,
        "input_throughput": total_in / duration_s, "output_throughput": total_out / duration_s,
        "mean_e2e_latency_ms": e2e, "median_e2e_latency_ms": e2e, "std_e2e_latency_ms": 0.0,
        "p99_e2e_latency_ms": e2e * 1.1, "mean_ttft_ms": ttft_ms, "median_ttft_ms": ttft_ms,
        "std_ttft_ms": 0.0, "p99_ttft_ms": ttft_ms * 1.5, "mean_tpot_ms": tpot_ms, "median_tpot_ms": tpot_ms,
        "std_tpot_ms": 0.0, "p99_tpot_ms": tpot_ms * 1.2, "mean_itl_ms": tpot_ms, "median_itl_ms": tpot_ms,
        "std_itl_ms": 0.0, "p95_itl_ms": tpot_ms * 1.5, "p99_itl_ms": tpot_ms * 2,
        "concurrency": concurrency * 0.98, "accept_length": None,
    }
    record.update(extra)
    return record
