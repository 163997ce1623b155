"""`raybench compare`: ratios per matching cell, against run dirs, vLLM JSON, SGLang JSONL, the CSV."""

import json

import polars as pl
import pytest
from click.testing import CliRunner
from report_fixtures import sglang_record, vllm_record, write_run_dir

from raybench.cli import main
from raybench.errors import ConfigError
from raybench.report import compare_sources, load_source, ratio_table


def row(ratios, **where):
    for key, value in where.items():
        ratios = ratios.filter(pl.col(key) == value)
    assert ratios.height == 1, ratios
    return ratios.row(0, named=True)


def test_two_runs_compare_cell_by_cell(tmp_path):
    fast = write_run_dir(tmp_path / "q" / "fast", itl_ms=2.0)
    slow = write_run_dir(tmp_path / "q" / "slow", itl_ms=4.0)
    result = CliRunner().invoke(main, ["compare", str(fast), str(slow), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["series", "cell", "vs", "reference"]
    assert any(line.startswith("q/slow") and "online c4 in512 out64" in line for line in lines)
    assert lines[-1] == f"comparison report: {tmp_path / 'cmp' / 'report.html'}"
    ratios = pl.read_csv(tmp_path / "cmp" / "ratios.csv")
    assert ratios.height == 3  # c4, c16 online and b32 offline, each against its twin
    c4 = row(ratios, mode="online", size=4)
    assert (c4["series"], c4["reference_series"]) == ("q/slow", "q/fast")
    # TPOT doubles with the ITL; TTFT (20 ms) is the same; a request lasts 20+63*4 vs 20+63*2 ms
    assert c4["tpot_ratio"] == pytest.approx(2.0, rel=1e-3)
    assert c4["ttft_ratio"] == pytest.approx(1.0, rel=1e-3)
    assert c4["e2e_ratio"] == pytest.approx((20 + 63 * 4) / (20 + 63 * 2), rel=1e-3)
    assert c4["throughput_ratio"] == pytest.approx((20 + 63 * 2) / (20 + 63 * 4), rel=1e-2)
    offline = row(ratios, mode="offline")
    assert offline["throughput_ratio"] == pytest.approx(0.5) and offline["e2e_ratio"] == pytest.approx(2.0)
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "Ratios per matching cell" in html and "q/fast (reference)" in html
    specs = json.loads(html.split('id="raybench-specs">')[1].split("</script>")[0])
    tput = specs["chart-online_throughput_vs_latency"]
    assert {p["series"] for p in tput["datasets"][tput["data"]["name"]]} == {"q/fast", "q/slow"}
    assert (tmp_path / "cmp" / "charts" / "online_throughput_vs_latency.png").is_file()


def test_compare_against_a_vllm_result_json(tmp_path):
    run = write_run_dir(tmp_path / "q" / "run", batch_sizes=())
    run_row = load_source(run).filter(pl.col("concurrency") == 4).row(0, named=True)
    ref = tmp_path / "vllm-infqps-concurrency4.json"
    ref.write_text(json.dumps(vllm_record(concurrency=4, completed=32, input_len=512, output_len=64, duration_s=4.0,
                                          ttft_ms=40.0, tpot_ms=4.0, e2el_ms=292.0)))
    result = CliRunner().invoke(main, ["compare", str(run), "--reference", str(ref), "--out", str(tmp_path / "c"),
                                       "--no-images"])
    assert result.exit_code == 0, result.output
    assert "online c4 in512 out64" in result.output and "vllm" in result.output
    ratios = pl.read_csv(tmp_path / "c" / "ratios.csv")
    c4 = row(ratios, size=4)
    assert c4["reference_series"] == "vllm-infqps-concurrency4"
    assert c4["throughput_ratio"] == pytest.approx(run_row["total_throughput_tokens_per_s"] / (32 * 576 / 4.0))
    assert c4["ttft_ratio"] == pytest.approx(0.5, rel=1e-3) and c4["tpot_ratio"] == pytest.approx(0.5, rel=1e-3)
    assert c4["e2e_ratio"] == pytest.approx(run_row["mean_e2e_latency_ms"] / 292.0)
    assert ratios.height == 1  # c16 has no vLLM cell to match


def test_compare_against_an_sglang_jsonl(tmp_path):
    run = write_run_dir(tmp_path / "q" / "run", batch_sizes=())
    ref = tmp_path / "sglang_0101_32_512_64.jsonl"
    ref.write_text("".join(
        json.dumps(sglang_record(concurrency=c, completed=32, input_len=512, output_len=64, duration_s=d,
                                 ttft_ms=10.0, tpot_ms=1.0)) + "\n"
        for c, d in ((4, 2.0), (16, 0.5))))
    result = compare_sources([run], tmp_path / "c", reference=ref, images=False)
    assert sorted(result.ratios["size"].to_list()) == [4, 16]
    c16 = row(result.ratios, size=16)
    assert c16["reference_throughput_tokens_per_s"] == pytest.approx(32 * 576 / 0.5)
    assert c16["tpot_ratio"] == pytest.approx(2.0, rel=1e-3)
    assert "sglang_0101_32_512_64" in result.table


def test_compare_with_the_published_results_matches_workload_then_hardware(tmp_path):
    same = write_run_dir(tmp_path / "e" / "h200", backend="vllm", hardware="H200", concurrencies=(128,),
                         batch_sizes=(), num_prompts=256, input_len=3200, output_len=800, itl_ms=50.0)
    other = write_run_dir(tmp_path / "e" / "sim", backend="sim", concurrencies=(128,), batch_sizes=(),
                          num_prompts=256, input_len=3200, output_len=800, itl_ms=50.0)
    small = write_run_dir(tmp_path / "e" / "small", batch_sizes=())
    result = compare_sources([same, other, small], tmp_path / "c", reference="published", images=False)
    ratios = result.ratios
    # the H200-vLLM run is compared with the published H200-vLLM cell only
    mine = ratios.filter(pl.col("series") == "e/h200")
    assert mine["reference_series"].to_list() == ["dstack (published): H200-vLLM"]
    assert mine["reference_throughput_tokens_per_s"].to_list() == [pytest.approx(3723.915, abs=0.001)]
    # a backend the reference lacks is set beside every published series at that workload
    assert sorted(ratios.filter(pl.col("series") == "e/sim")["reference_series"].str.split(": ").list.get(1)) == sorted(
        ["H200-SGLang", "H200-TRT-LLM", "H200-vLLM", "MI300X-SGLang", "MI300X-vLLM"])
    assert ratios.filter(pl.col("series") == "e/small").is_empty()  # 512/64 was never published


def test_ratio_table_tolerates_measured_prompt_lengths():
    from raybench.report import report_frame

    base = {"backend": "sglang", "hardware": "H200", "mode": "online", "concurrency": 128, "output_len": 800,
            "prefix_len": 2000, "total_throughput_tokens_per_s": 100.0}
    ref = report_frame([{**base, "run": "ref", "cell_id": "a", "input_len": 3200}])
    close = report_frame([{**base, "run": "r", "cell_id": "b", "input_len": 3275, "total_throughput_tokens_per_s": 150.0}])
    far = report_frame([{**base, "run": "r", "cell_id": "c", "input_len": 4000}])
    assert ratio_table(ref, close)["throughput_ratio"].to_list() == [1.5]
    assert ratio_table(ref, far).is_empty()


def test_compare_needs_two_sources(tmp_path):
    with pytest.raises(ConfigError, match="at least two"):
        compare_sources(["published"], tmp_path)
    result = CliRunner().invoke(main, ["compare", "published", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "at least two" in result.output


def _set_engine(run, engine):
    """The cells' engine, as `raybench run` records it: the backend's kind (vllm, sglang, sim)."""
    for path in run.glob("cells/*/summary.json"):
        summary = json.loads(path.read_text())
        summary["cell"]["engine"] = engine
        path.write_text(json.dumps(summary))
    return run


@pytest.mark.parametrize("backend, engine, published", [("vllm-h200", "vllm", "H200-vLLM"),
                                                        ("my-sglang", "sglang", "H200-SGLang")])
def test_a_named_backend_is_compared_with_the_published_series_of_its_engine_and_gpu(tmp_path, backend, engine,
                                                                                       published):
    # experiments/deepseek_r1.py names its backends vllm-h200, ...: their label (H200-vllm-h200) is no
    # published label, but the engine and GPU are the published H200-vLLM's
    run = _set_engine(write_run_dir(tmp_path / "e" / "h200", backend=backend, hardware="H200", concurrencies=(128,),
                                    batch_sizes=(), num_prompts=256, input_len=3200, output_len=800, itl_ms=50.0),
                      engine)
    result = compare_sources([run], tmp_path / "c", reference="published", images=False)
    assert result.ratios["reference_series"].to_list() == [f"dstack (published): {published}"]


def test_a_simulated_run_is_marked_in_the_comparison(tmp_path):
    # `raybench run --simulate` keeps the backends' names; its cells record the simulator as their engine
    run = _set_engine(write_run_dir(tmp_path / "e" / "sim", backend="vllm-h200", hardware="H200", concurrencies=(128,),
                                    batch_sizes=(), num_prompts=256, input_len=3200, output_len=800, itl_ms=50.0),
                      "sim")
    result = compare_sources([run], tmp_path / "c", reference="published", images=False)
    assert set(result.ratios["series"]) == {"e/sim (simulated)"}
    assert "e/sim (simulated)" in result.table
    # the simulator is no engine the published results ran: set beside every published series
    assert result.ratios.height == 5


def _simulating(run, imitates, timing="engine"):
    """env.json and the cells as `raybench run --simulate` leaves them: each server the simulator,
    with the engine its profile imitates; each cell served with ``timing``."""
    env = json.loads((run / "env.json").read_text())
    backends = {json.loads(p.read_text())["cell"]["backend"] for p in run.glob("cells/*/summary.json")}
    env["servers"] = {name: {"kind": "sim", "simulator": {"model": "m", "gpu": "H200", "num_gpus": 8, "modes": {
        "online": {"engine": imitates, "features": {}}}}} for name in backends}
    (run / "env.json").write_text(json.dumps(env))
    for path in run.glob("cells/*/summary.json"):
        summary = json.loads(path.read_text())
        summary["cell"]["simulator"] = {"timing": timing}
        path.write_text(json.dumps(summary))
    return _set_engine(run, "sim")


@pytest.mark.parametrize("backend, imitates, published", [("vllm-h200", "vllm", "H200-vLLM"),
                                                          ("vllm", "sglang", "H200-SGLang")])
def test_a_simulated_run_is_compared_with_the_engine_it_imitates(tmp_path, backend, imitates, published):
    # before, a `raybench run --simulate` cell was set beside all five published series
    run = _simulating(write_run_dir(tmp_path / "e" / "sim", backend=backend, hardware="H200", concurrencies=(128,),
                                    batch_sizes=(), num_prompts=256, input_len=3200, output_len=800, itl_ms=50.0),
                      imitates)
    result = compare_sources([run], tmp_path / "c", reference="published", images=False)
    assert result.ratios["reference_series"].to_list() == [f"dstack (published): {published}"]
    assert "no engine timed them" not in result.table
    # a simulated reference of the same backend still comes first, not the published series beside it
    again = compare_sources([run, "published"], tmp_path / "d", reference=run, images=False)
    assert again.ratios.filter(pl.col("run") == "e/sim (2)")["reference_run"].to_list() == ["e/sim"]


def test_a_simulator_timed_zero_is_compared_but_said_to_time_no_engine(tmp_path):
    run = _simulating(write_run_dir(tmp_path / "e" / "sim", backend="vllm-h200", hardware="H200", concurrencies=(128,),
                                    batch_sizes=(), num_prompts=256, input_len=3200, output_len=800, itl_ms=50.0),
                      "vllm", timing="zero")
    result = compare_sources([run], tmp_path / "c", reference="published", images=False)
    assert result.ratios.height == 1
    assert (f"compared, but no engine timed them (the simulator answered as fast as it could, or after set delays; "
            f"rerun with --sim-timing engine to compare its model):\n  {run}: cell vllm-h200-online-c128-i3200-o800: "
            "simulator timing zero") in result.table


def test_a_simulated_backend_named_after_an_engine_is_not_that_engine(tmp_path):
    run = _set_engine(write_run_dir(tmp_path / "e" / "sim", backend="vllm", hardware="H200", concurrencies=(128,),
                                    batch_sizes=(), num_prompts=256, input_len=3200, output_len=800, itl_ms=50.0),
                      "sim")
    assert compare_sources([run], tmp_path / "c", reference="published", images=False).ratios.height == 5
