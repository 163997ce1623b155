"""`raybench report`: report.html with the Vega libraries inlined, and PNG + SVG of every chart."""

import json
import re
import shutil

import pytest
from click.testing import CliRunner
from report_fixtures import write_run_dir

from raybench.cli import main
from raybench.report import CHARTS, build_report, chart_data, load_source, write_run_report
from raybench.report.build import draw_charts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def specs_in(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="raybench-specs">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def test_report_of_the_published_csv_draws_every_seed_chart(tmp_path):
    out = tmp_path / "seed"
    result = CliRunner().invoke(main, ["report", "published", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(out / "report.html")
    pngs = sorted(p.stem for p in (out / "charts").glob("*.png"))
    assert pngs == sorted(c.name for c in CHARTS)  # one PNG per seed chart, and no other
    for chart in CHARTS:
        assert (out / "charts" / f"{chart.name}.png").read_bytes().startswith(PNG_MAGIC)
        assert (out / "charts" / f"{chart.name}.svg").read_text().lstrip().startswith("<svg")
    html = (out / "report.html").read_text()
    specs = specs_in(html)
    assert sorted(specs) == sorted(f"chart-{c.name}" for c in CHARTS)
    # a spec in the page holds the same points as the chart (the data the test checks elsewhere)
    tput = specs["chart-online_throughput_vs_latency"]
    points = tput["datasets"][tput["data"]["name"]]
    assert {(p["series"], p["concurrency"]) for p in points} >= {("H200-TRT-LLM", 128), ("MI300X-vLLM", 4)}
    assert "not drawn" not in html


def test_report_html_needs_no_network(tmp_path):
    result = build_report("published", tmp_path, images=False)
    html = result.html.read_text()
    assert "window.vegaEmbed=" in html  # the bundle is inside
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=", html)
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
    assert result.images == () and not (tmp_path / "charts").exists()


def test_report_of_a_run_dir_has_table_metadata_drilldowns_and_notes(tmp_path):
    run = write_run_dir(tmp_path / "exp" / "20260101-000000", backend="sim-h200", failed=1)
    result = build_report(run)
    assert result.html == run / "report.html"
    html = result.html.read_text()
    assert set(result.drawn) == {"online_throughput_vs_latency", "offline_throughput_vs_latency",
                                 "ttft_vs_concurrency", "tpot_vs_concurrency"}
    assert "prefix_cache_ttft: not drawn (no online cells run both with and without prefix caching" in html
    specs = specs_in(html)
    assert sorted(k for k in specs if k.startswith("cell-")) == [
        "cell-sim-h200-online-c16-i512-o64", "cell-sim-h200-online-c4-i512-o64"]
    assert "offline engine mode" in html  # the engine cell has no chunks to draw
    assert "1 of 32 requests failed" in html and 'class="badge error"' in html
    assert "raybench run fixture.py" in html and "plan.json" in html  # metadata
    assert '"field":"extrapolated"' not in html and "extrapolate" not in html  # measured: no prediction marks
    assert sum(1 for p in (run / "charts").glob("*.png")) == 4
    assert sorted(p.name for p in (run / "charts" / "cells").iterdir()) == sorted(
        f"sim-h200-online-c{c}-i512-o64.{ext}" for c in (4, 16) for ext in ("png", "svg"))


def test_a_report_that_cannot_be_drawn_warns_and_keeps_the_run(tmp_path):
    run = write_run_dir(tmp_path / "r", batch_sizes=())
    (run / "cells" / "sim-online-c4-i512-o64" / "summary.json").write_text("{not json")
    warnings = []
    assert write_run_report(run, warn=warnings.append) is None
    assert len(warnings) == 1 and "raybench report" in warnings[0] and "data is on disk" in warnings[0]
    assert (run / "cells" / "sim-online-c16-i512-o64" / "requests.parquet").is_file()


def test_report_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--no-images"]])
def test_report_of_a_results_file_defaults_to_a_directory_beside_the_cwd(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "res.jsonl"
    src.write_text(json.dumps({"backend": "sglang", "dataset_name": "random", "max_concurrency": 4,
                               "random_input_len": 10, "random_output_len": 5, "duration": 1.0, "completed": 4,
                               "total_input_tokens": 40, "total_output_tokens": 20, "input_throughput": 40.0,
                               "output_throughput": 20.0, "mean_e2e_latency_ms": 100.0, "mean_ttft_ms": 10.0,
                               "mean_tpot_ms": 20.0}) + "\n")
    result = CliRunner().invoke(main, ["report", str(src), *args])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report-res" / "report.html").is_file()


def test_the_report_package_never_imports_ray():
    import subprocess
    import sys

    code = "import sys, raybench.report, raybench.report.build, raybench.report.compare; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_repeated_cells_are_one_point_each_and_every_repeat_keeps_its_drilldown(tmp_path):
    run = write_run_dir(tmp_path / "exp" / "20260101-000000", backend="sim", itl_ms=2.0, batch_sizes=())
    other = write_run_dir(tmp_path / "other", backend="sim", itl_ms=4.0, batch_sizes=())
    plan = json.loads((run / "plan.json").read_text())
    for c in (4, 16):
        cell_id = f"sim-online-c{c}-i512-o64"
        summary = json.loads((other / "cells" / cell_id / "summary.json").read_text())
        summary["cell_id"] = summary["cell"]["id"] = f"{cell_id}-rep2"
        summary["cell"]["repeat"] = 2
        shutil.copytree(other / "cells" / cell_id, run / "cells" / f"{cell_id}-rep2")
        (run / "cells" / f"{cell_id}-rep2" / "summary.json").write_text(json.dumps(summary))
        plan["cells"].append(summary["cell"])
    (run / "plan.json").write_text(json.dumps(plan))

    frame = load_source(run)
    assert frame.height == 4
    tpot = {r["cell_id"]: r["mean_tpot_ms"] for r in frame.iter_rows(named=True)}
    drawn, _ = draw_charts(frame)
    points = {r["concurrency"]: r for r in chart_data(drawn["tpot_vs_concurrency"])}
    assert sorted(points) == [4, 16]  # one point per cell, not one per repeat
    for c in (4, 16):
        mean = (tpot[f"sim-online-c{c}-i512-o64"] + tpot[f"sim-online-c{c}-i512-o64-rep2"]) / 2
        assert 2.5 < mean < 4.5  # between the two repeats' TPOT (about 2 and 4 ms)
        assert next(v for k, v in points[c].items() if "tpot" in k.lower()) == pytest.approx(mean)
    html = build_report(run).html.read_text()
    assert sorted(k for k in specs_in(html) if k.startswith("cell-")) == sorted(
        f"cell-sim-online-c{c}-i512-o64{rep}" for c in (4, 16) for rep in ("", "-rep2"))


def test_the_extrapolation_note_names_a_model_the_profile_was_not_fitted_on():
    import polars as pl

    from raybench.report.build import _extrapolated_note
    from raybench.report.frame import report_frame

    steps = report_frame([{"cell_id": "a", "backend": "vllm", "mode": "online", "series": "s",
                           "extrapolated": "mixed_steps"}])
    assert "need steps that" in _extrapolated_note(steps)
    model = pl.concat([steps, report_frame([{"cell_id": "b", "backend": "vllm", "mode": "online", "series": "s",
                                             "extrapolated": "other_model, prefix_hits"}])])
    assert "need steps, or a model (other_model), that" in _extrapolated_note(model)
