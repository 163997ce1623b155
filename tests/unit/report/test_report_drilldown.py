"""A cell's drill-down: distributions, load and output rate over time, and the flags it raises."""

import numpy as np
import polars as pl
import pytest
from report_fixtures import online_tables

from raybench.analysis.summary import summarize_cell
from raybench.report import cell_drilldown, cell_flags, drilldown_data
from raybench.report.drilldown import FlagLevel, histogram


@pytest.fixture
def cell():
    requests, chunks = online_tables("c", concurrency=4, num_prompts=16, input_len=100, output_len=50,
                                     ttft_ms=40.0, itl_ms=4.0)
    return requests, chunks, summarize_cell(requests, chunks, target_concurrency=4)


def test_panels_hold_the_cells_own_figures(cell):
    requests, chunks, summary = cell
    data = drilldown_data(requests, chunks, summary)
    assert data.ttft_hist["count"].sum() == 16
    assert data.ttft_hist["start"].min() == pytest.approx(40.0)
    assert data.itl_hist["count"].sum() == 16 * 49
    assert data.in_flight["in_flight"].max() == 4
    assert data.in_flight["in_flight"].to_list()[-1] == 0
    # every output token is in some bin of the rate panel
    assert (data.tokens["output_tokens_per_s"].sum() * data.bin_width_s) == pytest.approx(16 * 50)
    window = data.window.row(0, named=True)
    assert window == {"start_s": summary["steady_state_start_s"], "end_s": summary["steady_state_end_s"]}


def test_the_drilldown_chart_carries_the_shaded_window(cell):
    requests, chunks, summary = cell
    spec = cell_drilldown(drilldown_data(requests, chunks, summary), title="c").to_dict()
    rects = [d for d in spec["datasets"].values() if d and set(d[0]) == {"start_s", "end_s"}]
    assert rects == [[{"start_s": summary["steady_state_start_s"], "end_s": summary["steady_state_end_s"]}]]
    text = str(spec)
    assert "Requests in flight" in text and "TTFT distribution" in text and "ITL distribution" in text


def test_a_cell_without_chunks_has_no_drilldown(cell):
    requests, chunks, summary = cell
    assert drilldown_data(requests, chunks.head(0), summary) is None


def test_histogram_folds_a_far_tail_into_the_last_bin():
    values = np.concatenate([np.linspace(10, 20, 999), [5000.0]])
    hist = histogram(values, bins=10)
    assert hist["count"].sum() == 1000
    assert hist["end"][-1] < 25  # the bins span the bulk, not the stall...
    assert hist["tail_max"].to_list() == [None] * 9 + [5000.0]  # ...and the last one says where it stopped
    assert histogram(np.linspace(1, 2, 50))["tail_max"].null_count() == 30
    assert histogram(np.array([])).height == 0
    assert histogram(np.array([3.0, 3.0]))["count"].sum() == 2


def test_flags_name_failures_saturation_and_a_missing_steady_state():
    requests, chunks = online_tables("c", concurrency=4, num_prompts=8, input_len=10, output_len=5,
                                     ttft_ms=10, itl_ms=1, failed=2)
    summary = summarize_cell(requests, chunks, target_concurrency=4)
    summary.update(client_saturated=True, actors=[{"max_loop_lag_ms": 120.0}])
    flags = cell_flags(summary)
    levels = [f.level for f in flags]
    assert levels.count(FlagLevel.ERROR) == 1 and levels.count(FlagLevel.WARNING) == 1
    assert "2 of 8 requests failed (http_error 2)" in flags[0].text and "boom" in flags[0].text
    assert "120 ms" in flags[1].text
    never = cell_flags({"failed": 0, "completed": 8, "steady_state_target_in_flight": 64, "steady_state_start_s": None})
    assert [f.level for f in never] == [FlagLevel.WARNING] and "never reached" in never[0].text
    # every request failed: no rate to take a window of, and the failures are what the flag says
    lost = cell_flags({"failed": 8, "completed": 0, "steady_state_target_in_flight": 4, "steady_state_start_s": None,
                       "failure_reasons": {"http_error": 8}})
    assert not any("never reached" in f.text for f in lost)
    assert [f.level for f in cell_flags({"failed": 0})] == [FlagLevel.OK]
    note = "1 of 1 successful requests' usage counts 14 output tokens where their events carried 7"
    events = cell_flags({"failed": 0, "output_tokens_per_event_note": note})
    assert [(f.level, f.text) for f in events] == [(FlagLevel.WARNING, note)]


def test_in_flight_is_reduced_to_at_most_a_few_hundred_points():
    requests, chunks = online_tables("c", concurrency=64, num_prompts=2048, input_len=10, output_len=2,
                                     ttft_ms=1, itl_ms=1)
    data = drilldown_data(requests, chunks, summarize_cell(requests, chunks, target_concurrency=64))
    assert data.in_flight.height <= 600 and data.in_flight["in_flight"].max() == 64
    assert data.tokens.height <= 90 and data.tokens.schema["output_tokens_per_s"] == pl.Float64
