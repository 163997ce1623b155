"""Ramp-up of the request rate (vLLM's --ramp-up-strategy) and of the concurrency cap."""

import math

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.experiment import Online
from raybench.loadgen.arrivals import ArrivalProcess, ramped, slot_starts


@pytest.mark.parametrize("strategy, rate", [
    ("linear", lambda p: 2 + (20 - 2) * p),
    ("exponential", lambda p: 2 * (20 / 2) ** p),
])
def test_an_even_ramp_has_gaps_of_one_over_the_current_rate(strategy, rate):
    offsets = ramped(10, 2.0, 20.0, strategy, burstiness=math.inf)
    gaps = np.diff(np.concatenate([[0.0], offsets]))
    np.testing.assert_allclose(gaps, [1 / rate(i / 9) for i in range(10)])


def test_a_poisson_ramp_speeds_up_and_is_seeded():
    process = ArrivalProcess(rate_per_s=100.0, ramp="linear", ramp_start_per_s=10.0, seed=3)
    offsets = process.offsets_s(4000)
    np.testing.assert_array_equal(offsets, ArrivalProcess(rate_per_s=100.0, ramp="linear", ramp_start_per_s=10.0,
                                                          seed=3).offsets_s(4000))
    first, last = np.diff(offsets[:500]).mean(), np.diff(offsets[-500:]).mean()
    assert first == pytest.approx(1 / 14.5, rel=0.15) and last == pytest.approx(1 / 95.5, rel=0.15)
    assert process.describe()["ramp"] == "linear"


def test_concurrency_slots_open_as_the_cap_ramps():
    np.testing.assert_allclose(slot_starts(8, 2, 6.0, "linear"), [0, 0, 1, 2, 3, 4, 5, 6])
    expo = slot_starts(16, 1, 4.0, "exponential")
    np.testing.assert_allclose(expo, [4 * math.log(k) / math.log(16) for k in range(1, 17)])
    np.testing.assert_allclose(slot_starts(4, 4, 9.0, "linear"), [0, 0, 0, 0])


@pytest.mark.parametrize("kwargs, field", [
    ({"ramp_up": "sigmoid", "ramp_start": 1}, "ramp_up"),
    ({"ramp_up": "linear"}, "ramp_start"),
    ({"ramp_up": "linear", "ramp_start": 9, "ramp_up_s": 5}, "ramp_start"),  # above the concurrency
    ({"ramp_up": "linear", "ramp_start": 1}, "ramp_up_s"),  # a concurrency ramp needs a duration
    ({"ramp_up": "linear", "ramp_start": 50, "request_rate": 10}, "ramp_start"),
    ({"ramp_start": 5}, "ramp_start"),
])
def test_bad_ramps_are_refused(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        Online(concurrency=(8,), input_len=4, output_len=2, num_prompts=4, **kwargs)
