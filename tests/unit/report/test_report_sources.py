"""Every source becomes the same report frame: run dirs, the published CSV, vLLM and SGLang files."""

import json

import polars as pl
import pytest
from report_fixtures import sglang_record, vllm_record, write_run_dir

from raybench.errors import ConfigError
from raybench.report import COLUMNS, load_source, published_csv
from raybench.report.frame import combine_runs


def test_the_published_csv_ships_with_the_package_and_loads_whole():
    frame = load_source("published")
    assert published_csv().is_file() and published_csv().parent.name == "data"
    assert frame.columns == list(COLUMNS)
    assert frame.height == 117
    assert frame.filter(pl.col("mode") == "online").height == 54
    assert set(frame["series"]) == {"H200-vLLM", "H200-SGLang", "H200-TRT-LLM", "MI300X-vLLM", "MI300X-SGLang"}
    assert frame["run"].unique().to_list() == ["dstack (published)"]
    prefix = frame.filter(pl.col("prefix_cached"))
    assert prefix.height == 9 and set(prefix["prefix_len"]) == {2000}
    assert frame["p99_itl_ms"].null_count() == 117  # the source's column is mislabelled
    trt = frame.filter((pl.col("series") == "H200-TRT-LLM") & (pl.col("concurrency") == 128) & (pl.col("output_len") == 800))
    assert trt["total_throughput_tokens_per_s"].to_list() == [pytest.approx(4175.999)]
    assert frame["cell_id"].n_unique() == 117


def test_a_run_dir_reads_each_cell_and_names_series_by_backend_without_hardware(tmp_path):
    run = write_run_dir(tmp_path / "exp" / "20260101-000000", backend="sim-h200")
    frame = load_source(run)
    assert frame["cell_id"].to_list() == [
        "sim-h200-online-c4-i512-o64", "sim-h200-online-c16-i512-o64", "sim-h200-offline-engine-b32-i512-o64"]
    assert frame["hardware"].null_count() == 3
    assert set(frame["series"]) == {"sim-h200"} and set(frame["run"]) == {"exp/20260101-000000"}
    online = frame.filter(pl.col("concurrency") == 4).row(0, named=True)
    assert online["mean_tpot_ms"] == pytest.approx(2.0)
    assert online["mean_ttft_ms"] == pytest.approx(20.0)
    assert online["completed"] == 32 and online["failed"] == 0
    summary = json.loads((run / "cells" / online["cell_id"] / "summary.json").read_text())
    assert online["total_throughput_tokens_per_s"] == summary["total_token_throughput"]
    assert online["mean_e2e_latency_ms"] == summary["mean_e2el_ms"]
    offline = frame.filter(pl.col("mode") == "offline").row(0, named=True)
    assert offline["batch_size"] == 32
    assert offline["duration_s"] == pytest.approx(32 * 64 * 2.0 / 1e3 / 8)
    assert offline["total_throughput_tokens_per_s"] == pytest.approx(32 * (512 + 64) / offline["duration_s"])


@pytest.mark.parametrize("hardware, label", [("H200", "H200-vLLM"), ({"gpu": "MI300X", "count": 8}, "MI300X-vLLM")])
def test_hardware_in_a_cell_names_the_series(tmp_path, hardware, label):
    run = write_run_dir(tmp_path / "r", backend="vllm", hardware=hardware, batch_sizes=())
    assert set(load_source(run)["series"]) == {label}


def test_vllm_save_result_json(tmp_path):
    path = tmp_path / "vllm-infqps-concurrency64-DeepSeek-R1-20260101-120000.json"
    path.write_text(json.dumps(vllm_record(concurrency=64, completed=500, input_len=3200, output_len=800,
                                           duration_s=500.0, ttft_ms=3000.0, tpot_ms=60.0, hardware="H200")))
    row = load_source(path).row(0, named=True)
    assert (row["source"], row["backend"], row["series"], row["mode"]) == ("vllm", "vllm", "H200-vLLM", "online")
    assert (row["concurrency"], row["input_len"], row["output_len"], row["prefix_len"]) == (64, 3200, 800, 0)
    assert row["total_throughput_tokens_per_s"] == pytest.approx(500 * 4000 / 500.0)
    assert row["input_throughput_tokens_per_s"] == pytest.approx(3200.0)
    assert row["mean_ttft_ms"] == 3000.0 and row["p99_tpot_ms"] == pytest.approx(72.0)
    # E2EL was not among --percentile-metrics: the mean comes from the saved latencies (s)
    assert row["mean_e2e_latency_ms"] == pytest.approx(3000.0 + 799 * 60.0)
    assert row["run"] == path.stem


def test_vllm_append_result_lines_and_metadata_lengths(tmp_path):
    path = tmp_path / "sweep.json"
    records = [vllm_record(concurrency=c, completed=100, input_len=1000, output_len=100, duration_s=10.0,
                           ttft_ms=100.0, tpot_ms=10.0, e2el_ms=1234.0) for c in (4, 8)]
    records[1]["output_len"] = "128"  # --metadata output_len=128 wins over tokens / completed
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    frame = load_source(path)
    assert frame["concurrency"].to_list() == [4, 8]
    assert frame["output_len"].to_list() == [100, 128]
    assert frame["mean_e2e_latency_ms"].to_list() == [1234.0, 1234.0]
    assert frame["series"].to_list() == ["vllm", "vllm"]


def test_sglang_bench_serving_jsonl(tmp_path):
    path = tmp_path / "sglang_0101_500_3200_800.jsonl"
    lines = [
        sglang_record(concurrency=128, completed=500, input_len=3200, output_len=800, duration_s=400.0,
                      ttft_ms=20000.0, tpot_ms=100.0),
        sglang_record(concurrency=128, completed=500, input_len=3275, output_len=800, duration_s=390.0,
                      ttft_ms=9000.0, tpot_ms=95.0, dataset="generated-shared-prefix", random_input_len=1024,
                      random_output_len=1024),
    ]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    frame = load_source(path)
    plain, cached = frame.row(0, named=True), frame.row(1, named=True)
    assert (plain["source"], plain["series"], plain["input_len"], plain["output_len"]) == ("sglang", "sglang", 3200, 800)
    assert not plain["prefix_cached"]
    # SGLang S25 writes no total throughput: dstack's input + output
    assert plain["total_throughput_tokens_per_s"] == pytest.approx(500 * 4000 / 400.0)
    assert plain["mean_e2e_latency_ms"] == pytest.approx(20000 + 799 * 100.0)
    # shared prefix: random_*_len are unused defaults; lengths come from the tokens
    assert cached["prefix_cached"] and (cached["input_len"], cached["output_len"]) == (3275, 800)


def test_unreadable_sources_say_what_was_expected(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_source(tmp_path / "nope.json")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"\.jsonl \(SGLang\)"):
        load_source(tmp_path / "x.txt")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match="neither vLLM"):
        load_source(tmp_path / "other.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="run directory"):
        load_source(tmp_path / "empty")


CSV_HEADER = "mode,hardware,backend,output_len,total_throughput_tok_s,input_len,max_concurrency\n"


@pytest.mark.parametrize("text, expected", [
    ("x,y\n1,2\n", r"lacks the columns \['backend', 'hardware', 'mode', 'output_len', 'total_throughput_tok_s'\]"),
    (CSV_HEADER, "has a header but no rows"),
    (CSV_HEADER + "online,H200,vllm,800,4000,3200,4\nonline,H200,vllm,800,fast,3200,8\n",
     r"line 3: total_throughput_tok_s='fast' is not a number"),
    (CSV_HEADER + "online,H200,vllm,800,4000,3200,four\n", r"line 2: max_concurrency='four' is not a number"),
])
def test_a_bad_reference_csv_names_the_line_and_the_value(tmp_path, text, expected):
    (tmp_path / "ref.csv").write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_source(tmp_path / "ref.csv")


def test_a_csv_metric_without_samples_is_missing_not_a_number(tmp_path):
    (tmp_path / "ref.csv").write_text(CSV_HEADER.replace("\n", ",mean_ttft_ms\n") + "online,H200,vllm,800,4000,3200,4,nan\n")
    row = load_source(tmp_path / "ref.csv").row(0, named=True)
    assert row["total_throughput_tokens_per_s"] == 4000 and row["mean_ttft_ms"] is None


@pytest.mark.parametrize("content, expected", [
    ("[1, 2]", "record 1 is a JSON number, not an object"),
    (json.dumps([vllm_record(concurrency=4, completed=8, input_len=64, output_len=16, duration_s=2.0, ttft_ms=50,
                             tpot_ms=10), "done"]), "record 2 is a JSON string, not an object"),
    (json.dumps({**vllm_record(concurrency=4, completed=8, input_len=64, output_len=16, duration_s=2.0,
                               ttft_ms=50, tpot_ms=10), "completed": "eight"}), r"record 1: completed='eight' is not a number"),
    (json.dumps(vllm_record(concurrency=4, completed=8, input_len=64, output_len=16, duration_s=2.0, ttft_ms=50,
                            tpot_ms=10, mean_ttft_ms=[50])), r"record 1: mean_ttft_ms=\[50\] is not a number"),
    (json.dumps(vllm_record(concurrency=4, completed=8, input_len=64, output_len=16, duration_s=2.0, ttft_ms=50,
                            tpot_ms=10, total_token_throughput=True)), "total_token_throughput=True is not a number"),
])
def test_a_bad_results_json_names_the_record_and_the_value(tmp_path, content, expected):
    (tmp_path / "r.json").write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_source(tmp_path / "r.json")


def test_a_bad_sglang_line_names_its_record(tmp_path):
    good = sglang_record(concurrency=4, completed=8, input_len=64, output_len=16, duration_s=2.0, ttft_ms=50, tpot_ms=10)
    bad = {**good, "output_throughput": "n/a"}
    (tmp_path / "s.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ConfigError, match=r"s\.jsonl: record 2: output_throughput='n/a' is not a number"):
        load_source(tmp_path / "s.jsonl")


def test_a_results_metric_without_samples_is_missing_not_a_number(tmp_path):
    record = vllm_record(concurrency=4, completed=8, input_len=64, output_len=16, duration_s=2.0, ttft_ms=50,
                         tpot_ms=10, p99_ttft_ms=float("nan"))
    (tmp_path / "r.json").write_text(json.dumps(record))  # vLLM writes NaN where a metric had no sample
    row = load_source(tmp_path / "r.json").row(0, named=True)
    assert row["p99_ttft_ms"] is None and row["mean_ttft_ms"] == 50


def test_an_unreadable_cell_summary_names_the_file_and_the_way_out(tmp_path):
    run_dir = write_run_dir(tmp_path / "e" / "a", batch_sizes=())
    summary = next(run_dir.glob("cells/*/summary.json"))
    summary.write_text('{"cell_id": "x", ')
    # the advice keeps the cell's rows: they are intact beside a damaged summary
    with pytest.raises(ConfigError, match=r"summary\.json is unreadable .*restore it from a copy, or rename it .*--resume"):
        load_source(run_dir)
    summary.write_text("[]")
    with pytest.raises(ConfigError, match="holds a JSON array, not a cell summary object"):
        load_source(run_dir)


def test_an_unreadable_plan_only_loses_the_cell_order(tmp_path):
    run_dir = write_run_dir(tmp_path / "e" / "a", batch_sizes=())
    (run_dir / "plan.json").write_text("{oops")
    assert load_source(run_dir).height == 2


def test_runs_combined_name_one_series_per_run(tmp_path):
    a = load_source(write_run_dir(tmp_path / "e" / "a", batch_sizes=()))
    b = load_source(write_run_dir(tmp_path / "e" / "b", batch_sizes=()))
    both = combine_runs([a, b, load_source("published")])
    assert set(both["series"]) >= {"e/a", "e/b", "dstack (published): H200-vLLM"}


def _with_engine(run, engine):
    for path in run.glob("cells/*/summary.json"):
        summary = json.loads(path.read_text())
        summary["cell"]["engine"] = engine
        path.write_text(json.dumps(summary))
    return run


def test_a_run_of_the_simulator_is_labelled_simulated(tmp_path):
    # `raybench run --simulate` keeps the backend's name and hardware; only its engine says "sim"
    sim = _with_engine(write_run_dir(tmp_path / "e" / "sim", backend="vllm-h200", hardware="H200"), "sim")
    real = _with_engine(write_run_dir(tmp_path / "e" / "real", backend="vllm-h200", hardware="H200"), "vllm")
    assert set(load_source(sim)["label"]) == {"H200-vllm-h200 (simulated)"}
    assert set(load_source(real)["label"]) == {"H200-vllm-h200"}
    # a summary written before cells recorded their engine: env.json says which servers were simulators
    older = write_run_dir(tmp_path / "e" / "older", backend="vllm-h200", hardware="H200")
    env = json.loads((older / "env.json").read_text())
    env["servers"] = {"vllm-h200": {"kind": "sim"}, "other": {"kind": "vllm"}}
    (older / "env.json").write_text(json.dumps(env))
    assert set(load_source(older)["label"]) == {"H200-vllm-h200 (simulated)"}
    assert set(load_source("published")["label"]) == {"H200-vLLM", "H200-SGLang", "H200-TRT-LLM", "MI300X-vLLM",
                                                      "MI300X-SGLang"}
