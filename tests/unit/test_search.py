"""The SLO search: a bisection over an ascending grid, and when a cell passes."""

import math

import pytest

from raybench.errors import ConfigError
from raybench.experiment import Experiment, Online, SimBackend
from raybench.search import Probe, SloSearch, bisect, format_result, judge


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 8, 16, 33])
def test_bisection_finds_the_last_passing_point_in_log2_probes(n):
    grid = [float(2**i) for i in range(n)]
    for knee in range(-1, n):  # index of the last passing point (-1: none passes)
        asked = []

        def probe(i):
            asked.append(i)
            return Probe(value=grid[i], cell_id=f"c{i}", passed=i <= knee, attained=1.0 if i <= knee else 0.5)

        result = bisect(grid, probe)
        assert result.best == (grid[knee] if knee >= 0 else None)
        assert result.bracket == (result.best, grid[knee + 1] if knee + 1 < n else None)
        assert len(asked) == len(set(asked)) <= math.ceil(math.log2(n + 1))
        if n >= 6:  # ceil(log2(n + 1)) <= n / 2 from six points on
            assert len(asked) <= n / 2


def test_a_cell_passes_when_enough_planned_requests_meet_the_slos():
    summary = {"cell_id": "c", "num_prompts": 98, "requests_not_recorded": 2, "goodput_completed": 97}
    assert judge(summary, value=4, attainment=0.97).passed
    assert not judge(summary, value=4, attainment=0.98).passed  # 97 of the 100 planned
    assert judge(summary, value=4, attainment=0.5).attained == pytest.approx(0.97)


def test_the_answer_line_gives_the_bracket():
    result = bisect([1.0, 2.0, 4.0], lambda i: Probe(value=0, cell_id="", passed=i < 2, attained=0))
    result = type(result)(**{**vars(result), "over": "concurrency"})
    line = format_result(result, {"ttft": 500.0}, 0.99)
    assert "2 concurrent requests (passes; 4 fails)" in line and "ttft <= 500 ms" in line and "2 of 3 grid cells" in line


def test_a_rate_search_makes_one_cell_per_rate():
    experiment = Experiment(name="s", model="m", backends=(SimBackend(),), goodput_slos_ms={"ttft": 100},
                            online=(Online(concurrency=(64,), input_len=8, output_len=4, num_prompts=10),),
                            search=SloSearch(over="request_rate", grid=(1, 2.5, 5)))
    assert [(c.request_rate, c.id) for c in experiment.cells()] == [
        (1.0, "sim-online-c64-i8-o4-r1"), (2.5, "sim-online-c64-i8-o4-r2.5"), (5.0, "sim-online-c64-i8-o4-r5")]


@pytest.mark.parametrize("kwargs, message", [
    ({"search": SloSearch()}, "goodput_slos_ms"),
    ({"search": SloSearch(), "goodput_slos_ms": {"ttft": 1}, "online": (
        Online(concurrency=(1,), input_len=8, output_len=4, num_prompts=2),
        Online(concurrency=(2,), input_len=8, output_len=4, num_prompts=2))}, "exactly one online sweep"),
])
def test_a_search_needs_slos_and_one_sweep(kwargs, message):
    params = {"name": "s", "model": "m", "backends": (SimBackend(),),
              "online": (Online(concurrency=(1, 2), input_len=8, output_len=4, num_prompts=2),), **kwargs}
    with pytest.raises(ConfigError, match=message):
        Experiment(**params)


@pytest.mark.parametrize("kwargs", [{"over": "rate"}, {"over": "request_rate"}, {"over": "request_rate", "grid": (4, 2)},
                                    {"grid": (1, 2)}, {"attainment": 0}])
def test_bad_searches_are_refused(kwargs):
    with pytest.raises(ConfigError):
        SloSearch(**kwargs)
