"""A file `vllm bench serve --save-result` (vLLM 0.32.0) really wrote, read as vLLM wrote it.

``REAL_0_32`` is the file written by tests/real/test_vllm_bench.py's compare test (4 prompts of
64 -> 16 tokens at concurrency 2 on the tiny model), every key in its order, values as written.
"""

import json

import pytest

from raybench.report import load_source

REAL_0_32 = {
    "date": "20261203-072619", "endpoint_type": "vllm", "backend": "vllm", "label": None, "model_id": "tiny-llama",
    "tokenizer_id": "/root/.cache/raybench/tiny-llama-v2", "num_prompts": 4, "request_rate": "inf",
    "burstiness": 1.0, "max_concurrency": 2, "duration": 0.363628493003489, "completed": 4, "failed": 0,
    "total_input_tokens": 256, "total_output_tokens": 64, "request_throughput": 11.000238091797774,
    "request_goodput": None, "output_throughput": 176.0038094687644, "total_token_throughput": 880.019047343822,
    "latencies": [0.17094197800179245, 0.18474190000415547, 0.1837637159987935, 0.1780452079983661],
    "queue_times": [0.00015881699800956994, 0.0003604480007197708, 0.17118036399915582, 0.18533730800118065],
    "max_output_tokens_per_s": 64.0, "max_concurrent_requests": 4, "rtfx": 0.0,
    "mean_ttft_ms": 39.0926389991364, "median_ttft_ms": 38.43629999755649, "std_ttft_ms": 6.19261134308992,
    "p99_ttft_ms": 48.01523048074159, "mean_tpot_ms": 9.3520374334427, "median_tpot_ms": 9.247790466664203,
    "std_tpot_ms": 0.27704059770066813, "p99_tpot_ms": 9.798341246879621, "mean_itl_ms": 9.3520374334427,
    "median_itl_ms": 8.538395002688048, "std_itl_ms": 2.8105058779820684, "p99_itl_ms": 17.46585902117658,
    "mean_e2el_ms": 179.37320050077687, "median_e2el_ms": 180.9044619985798, "std_e2el_ms": 5.498832549044889,
    "p99_e2el_ms": 184.7125544839946,
}
# report column -> the file's key: each figure as vLLM wrote it
AS_WRITTEN = {
    "completed": "completed", "failed": "failed", "num_prompts": "num_prompts", "concurrency": "max_concurrency",
    "duration_s": "duration", "request_throughput_per_s": "request_throughput",
    "output_throughput_tokens_per_s": "output_throughput", "total_throughput_tokens_per_s": "total_token_throughput",
    **{f"{stat}_{metric}_ms": f"{stat}_{key}_ms" for metric, key in
       (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2e_latency", "e2el")) for stat in ("mean", "median", "p99")},
}


def _row(tmp_path, record: dict) -> dict:
    path = tmp_path / "vllm.json"
    path.write_text(json.dumps(record))
    return load_source(path).row(0, named=True)


def test_every_figure_is_read_as_vllm_wrote_it(tmp_path):
    row = _row(tmp_path, REAL_0_32)
    assert {col: row[col] for col in AS_WRITTEN} == {col: REAL_0_32[key] for col, key in AS_WRITTEN.items()}
    assert (row["source"], row["backend"], row["mode"], row["input_len"], row["output_len"]) == (
        "vllm", "vllm", "online", 64, 16)  # lengths: 256 and 64 tokens over 4 completed
    assert row["input_throughput_tokens_per_s"] == pytest.approx(256 / 0.363628493003489)


def test_without_e2el_in_the_file_its_mean_is_over_the_successful_requests_latencies(tmp_path):
    # the default --percentile-metrics (ttft,tpot,itl) saves no E2EL; the per-request latencies stay,
    # a failed request's as 0.0, and vLLM's mean E2EL is over the successful ones
    record = {k: v for k, v in REAL_0_32.items() if not k.endswith("e2el_ms")}
    record.update(completed=3, failed=1, latencies=[0.17094197800179245, 0.0, 0.1837637159987935, 0.1780452079983661])
    row = _row(tmp_path, record)
    assert row["mean_e2e_latency_ms"] == pytest.approx((0.17094197800179245 + 0.1837637159987935
                                                        + 0.1780452079983661) / 3 * 1e3)
    assert row["median_e2e_latency_ms"] is None and row["p99_e2e_latency_ms"] is None  # vLLM wrote none


def test_latencies_that_do_not_single_out_the_successful_requests_give_no_mean(tmp_path):
    record = {k: v for k, v in REAL_0_32.items() if not k.endswith("e2el_ms")}
    record.update(completed=2, failed=2)  # four positive latencies for two completed: which two is unknown
    assert _row(tmp_path, record)["mean_e2e_latency_ms"] is None
