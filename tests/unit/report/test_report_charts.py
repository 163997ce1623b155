"""Each seed chart drawn from the published CSV shows exactly the CSV's numbers for its slice.

The expected points are read from the CSV here with the csv module and the seed post's own
slices (output 800 for the concurrency sweeps, concurrency 128 and batch 256 for the output
sweeps, concurrency 128 for prefix caching); the chart's points are read back from its
Vega-Lite spec.
"""

import csv
import math

import polars as pl
import pytest

from raybench.report import CHARTS, NothingToDraw, chart_data, load_source, published_csv, report_frame, series_style
from raybench.report import charts as C

DISPLAY = {"vllm": "vLLM", "sglang": "SGLang", "trt-llm": "TRT-LLM"}


@pytest.fixture(scope="module")
def rows():
    with open(published_csv(), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def frame():
    return load_source("published")


def label(r):
    return f"{r['hardware']}-{DISPLAY[r['backend']]}"


def online(rows, *, prefix="no", **where):
    return [r for r in rows if r["mode"] == "online" and r["prefix_cached"] == prefix
            and all(r[k] == str(v) for k, v in where.items())]


def offline(rows, **where):
    return [r for r in rows if r["mode"] == "offline" and all(r[k] == str(v) for k, v in where.items())]


def f(r, key, scale=1.0):
    return float(r[key]) * scale


# chart name -> (expected {(series, x): y-values}, x column, y columns in the chart's data)
def expected(name, rows):
    sweep = online(rows, output_len=800)
    by_out = online(rows, max_concurrency=128)
    batch = offline(rows, output_len=800)
    b256 = offline(rows, batch_size=256)
    table = {
        "online_throughput_vs_latency": ({(label(r), int(r["max_concurrency"])): (f(r, "mean_e2e_latency_ms", 1e-3), f(r, "total_throughput_tok_s")) for r in sweep},
                                         "concurrency", ("mean_e2e_latency_s", "total_throughput_tokens_per_s")),
        "offline_throughput_vs_latency": ({(label(r), int(r["batch_size"])): (f(r, "duration_s"), f(r, "total_throughput_tok_s")) for r in batch},
                                          "batch_size", ("elapsed_s", "total_throughput_tokens_per_s")),
        "online_throughput_vs_output": ({(label(r), int(r["output_len"])): (f(r, "total_throughput_tok_s"),) for r in by_out},
                                        "output_len", ("total_throughput_tokens_per_s",)),
        "online_latency_vs_output": ({(label(r), int(r["output_len"])): (f(r, "mean_e2e_latency_ms", 1e-3),) for r in by_out},
                                     "output_len", ("mean_e2e_latency_s",)),
        "offline_throughput_vs_output": ({(label(r), int(r["output_len"])): (f(r, "total_throughput_tok_s"),) for r in b256},
                                         "output_len", ("total_throughput_tokens_per_s",)),
        "offline_latency_vs_output": ({(label(r), int(r["output_len"])): (f(r, "duration_s"),) for r in b256},
                                      "output_len", ("elapsed_s",)),
        "ttft_vs_concurrency": ({(label(r), int(r["max_concurrency"])): (f(r, "mean_ttft_ms", 1e-3),) for r in sweep},
                                "concurrency", ("mean_ttft_s",)),
        "tpot_vs_concurrency": ({(label(r), int(r["max_concurrency"])): (f(r, "mean_tpot_ms"),) for r in sweep},
                                "concurrency", ("mean_tpot_ms",)),
        "ttft_vs_output_length": ({(label(r), int(r["output_len"])): (f(r, "mean_ttft_ms", 1e-3),) for r in by_out},
                                  "output_len", ("mean_ttft_s",)),
        "tpot_vs_output_length": ({(label(r), int(r["output_len"])): (f(r, "mean_tpot_ms"),) for r in by_out},
                                  "output_len", ("mean_tpot_ms",)),
    }
    cached = online(rows, prefix="yes", max_concurrency=128, output_len=800)
    pairs = {label(r) for r in cached}
    plain = [r for r in online(rows, max_concurrency=128, output_len=800) if label(r) in pairs]
    for chart, key, scale, column in (
        ("prefix_cache_throughput", "total_throughput_tok_s", 1.0, "total_throughput_tokens_per_s"),
        ("prefix_cache_ttft", "mean_ttft_ms", 1e-3, "mean_ttft_s"),
        ("prefix_cache_tpot", "mean_tpot_ms", 1.0, "mean_tpot_ms"),
        ("prefix_cache_e2e_latency", "mean_e2e_latency_ms", 1e-3, "mean_e2e_latency_s"),
    ):
        points = {(label(r), "Prefix cached"): (f(r, key, scale),) for r in cached}
        points.update({(label(r), "No cache"): (f(r, key, scale),) for r in plain})
        table[chart] = (points, "cache", (column,))
    return table[name]


@pytest.mark.parametrize("chart", CHARTS, ids=[c.name for c in CHARTS])
def test_each_seed_chart_shows_the_csv_numbers(chart, rows, frame):
    want, x, ys = expected(chart.name, rows)
    got_rows = chart_data(chart.draw(frame))
    got = {(r["series"], r[x]): tuple(r[y] for y in ys) for r in got_rows}
    assert len(got_rows) == len(got) == len(want), chart.name
    assert got.keys() == want.keys()
    for key, values in want.items():
        assert got[key] == pytest.approx(values, rel=1e-9), (chart.name, key)


def test_the_slices_are_the_seeds(rows, frame):
    assert len(chart_data(C.online_throughput_vs_latency(frame))) == 30  # 5 series x 6 concurrencies
    assert len(chart_data(C.offline_throughput_vs_output(frame))) == 14  # H200-vLLM has no 3200 row
    assert {r["series"] for r in chart_data(C.prefix_cache_ttft(frame))} == {"MI300X-SGLang", "H200-vLLM", "H200-SGLang"}
    # the headline numbers of the post are among the points
    tput = {(r["series"], r["concurrency"]): r["total_throughput_tokens_per_s"]
            for r in chart_data(C.online_throughput_vs_latency(frame))}
    assert tput["H200-TRT-LLM", 128] == pytest.approx(4175.999)
    assert tput["MI300X-vLLM", 128] == pytest.approx(4573.692)
    offline_max = max(chart_data(C.offline_throughput_vs_latency(frame)), key=lambda r: r["total_throughput_tokens_per_s"])
    assert (offline_max["series"], offline_max["batch_size"]) == ("H200-SGLang", 512)
    assert offline_max["total_throughput_tokens_per_s"] == pytest.approx(6311.04, abs=0.01)
    cached = max(chart_data(C.prefix_cache_throughput(frame)), key=lambda r: r["total_throughput_tokens_per_s"])
    assert cached["total_throughput_tokens_per_s"] == pytest.approx(6422.49)


def test_a_pinned_slice_overrides_the_default(rows, frame):
    points = chart_data(C.prefix_cache_throughput(frame, concurrency=64))
    want = {(label(r), r["prefix_cached"]): float(r["total_throughput_tok_s"])
            for r in rows if r["mode"] == "online" and r["max_concurrency"] == "64" and r["output_len"] == "800"
            and label(r) in {"MI300X-SGLang", "H200-vLLM", "H200-SGLang"}}
    got = {(p["series"], "yes" if p["cache"] == "Prefix cached" else "no"): p["total_throughput_tokens_per_s"]
           for p in points}
    assert got == pytest.approx(want) and len(got) == 6
    with pytest.raises(NothingToDraw, match="one output length"):
        C.online_throughput_vs_output(frame, concurrency=64)  # the seed ran 64 at output 800 only


def colour_map(spec):
    found = {}

    def walk(node):
        if isinstance(node, dict):
            color = node.get("color")
            if isinstance(color, dict) and color.get("field") == "series":
                scale = color["scale"]
                found.update(zip(scale["domain"], scale["range"]))
            shape = node.get("shape")
            if isinstance(shape, dict) and shape.get("field") == "series":
                scale = shape["scale"]
                found.update({("shape", d): s for d, s in zip(scale["domain"], scale["range"])})
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return found


def test_colours_and_markers_agree_across_every_chart(frame):
    style = series_style(frame)
    maps = [colour_map(chart.draw(frame, style=style).to_dict()) for chart in CHARTS]
    merged = {}
    for m in maps:
        for k, v in m.items():
            assert merged.setdefault(k, v) == v, k
    # the seed's families: MI300X reds, H200 greens; vLLM dark, SGLang light
    assert merged["MI300X-vLLM"] == "#e00000" and merged["H200-vLLM"] == "#4e7d32"
    assert merged["H200-SGLang"] == "#a9d18e" and merged["H200-TRT-LLM"] == "#70ad47"
    assert merged["shape", "H200-vLLM"] == merged["shape", "MI300X-vLLM"] == "circle"
    assert len(set(style.colors)) == len(style.colors) == 5
    # the same series keeps its colour when another frame lacks some series
    subset = frame.filter(pl.col("hardware") == "H200")
    assert series_style(subset).of("H200-vLLM")[0] == "#4e7d32"


def test_a_frame_without_the_cells_draws_nothing(frame):
    offline_only = frame.filter(pl.col("mode") == "offline")
    with pytest.raises(NothingToDraw, match="online"):
        C.online_throughput_vs_latency(offline_only)
    with pytest.raises(NothingToDraw, match="prefix"):
        C.prefix_cache_ttft(frame.filter(~pl.col("prefix_cached")))
    one_length = frame.filter(pl.col("output_len") == 800)
    with pytest.raises(NothingToDraw, match="one output length"):
        C.ttft_vs_output_length(one_length)


def test_series_without_hardware_are_named_by_backend_and_get_distinct_colours():
    rows = [
        {"run": "r", "backend": b, "mode": "online", "concurrency": c, "input_len": 10, "output_len": 5,
         "prefix_len": 0, "mean_e2e_latency_ms": 1000.0 * c, "total_throughput_tokens_per_s": 10.0 * c}
        for b in ("sim-a", "sim-b") for c in (1, 2)
    ]
    frame = report_frame(rows)
    style = series_style(frame)
    assert style.domain == ("sim-a", "sim-b") and style.colors[0] != style.colors[1]
    points = chart_data(C.online_throughput_vs_latency(frame))
    assert {(p["series"], p["concurrency"], p["mean_e2e_latency_s"]) for p in points} == {
        ("sim-a", 1, 1.0), ("sim-a", 2, 2.0), ("sim-b", 1, 1.0), ("sim-b", 2, 2.0)}
    assert not any(math.isnan(p["total_throughput_tokens_per_s"]) for p in points)


def test_a_prefix_caching_launch_of_its_own_is_drawn_as_its_engine_with_the_cache_on():
    # the seed runs vLLM's prefix-caching server as a backend of its own: its cached cells pair with
    # the uncached cells of the same run, engine and hardware, not with nothing
    base = {"run": "r", "mode": "online", "hardware": "H200", "concurrency": 32, "input_len": 3200, "output_len": 800,
            "total_throughput_tokens_per_s": 100.0}
    cells = [
        {**base, "cell_id": "a", "backend": "vllm-h200", "engine": "vllm", "prefix_cached": False},
        {**base, "cell_id": "b", "backend": "vllm-h200-prefix", "engine": "vllm", "prefix_cached": True,
         "total_throughput_tokens_per_s": 150.0},
        {**base, "cell_id": "c", "backend": "sglang-h200", "engine": "sglang", "prefix_cached": False},
        {**base, "cell_id": "d", "backend": "sglang-h200", "engine": "sglang", "prefix_cached": True},
    ]
    points = {(p["series"], p["cache"]): p["total_throughput_tokens_per_s"]
              for p in chart_data(C.prefix_cache_throughput(report_frame(cells)))}
    assert points == {("H200-vllm-h200", "No cache"): 100.0, ("H200-vllm-h200", "Prefix cached"): 150.0,
                      ("H200-sglang-h200", "No cache"): 100.0, ("H200-sglang-h200", "Prefix cached"): 100.0}
    # two uncached launches of the engine: which one the cache belongs to is not known, so no pair
    other = {**cells[0], "cell_id": "e", "backend": "vllm-h200-b"}
    series = {p["series"] for p in chart_data(C.prefix_cache_throughput(report_frame([*cells, other])))}
    assert series == {"H200-sglang-h200"}
    # without an engine (other tools' results) series pair only with themselves
    anonymous = [{k: v for k, v in c.items() if k != "engine"} for c in cells]
    assert {p["series"] for p in chart_data(C.prefix_cache_throughput(report_frame(anonymous)))} == {"H200-sglang-h200"}


def test_every_chart_shows_a_points_extrapolated_regimes_in_its_tooltip(frame):
    # docs/reports.md: when any point of a chart has `extrapolated`, its tooltip shows it; a
    # chart whose data dropped the column showed a predicted point as if nothing were extrapolated
    marked = frame.with_columns(
        pl.when(pl.col("series") == "H200-vLLM").then(pl.lit("mixed_steps")).otherwise(None).alias("extrapolated"))
    for chart in CHARTS:
        drawn = chart.draw(marked)
        spec = drawn.to_dict()
        tips = [layer.get("encoding", {}).get("tooltip") for layer in spec.get("layer", [spec])]
        assert any("extrapolated" in str(t) for t in tips), chart.name
        points = chart_data(drawn)
        assert {p["extrapolated"] for p in points if p["series"] == "H200-vLLM"} == {"mixed_steps"}, chart.name
        assert {p["extrapolated"] for p in points if p["series"] != "H200-vLLM"} == {None}, chart.name
