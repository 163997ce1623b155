"""Arrival schedules (absolute offsets) and the pure split of a cell over actors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.loadgen.arrivals import (
    ArrivalProcess,
    all_at_once,
    default_num_actors,
    gamma,
    poisson,
    split_concurrency,
    split_requests,
)

MANY = 200_000


def gaps_s(offsets_s: np.ndarray) -> np.ndarray:
    return np.diff(offsets_s, prepend=0.0)


def test_all_at_once_releases_everything_at_zero() -> None:
    offsets = all_at_once(500)
    assert offsets.shape == (500,) and offsets.dtype == np.float64
    assert not offsets.any()
    assert all_at_once(0).size == 0


def test_poisson_gap_mean_and_exponential_shape() -> None:
    gaps = gaps_s(poisson(MANY, 20.0, seed=1, normalize=False))
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.01)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.02)
    # Exponential: P(gap > mean) = 1/e.
    assert (gaps > 1 / 20.0).mean() == pytest.approx(math.exp(-1), abs=0.005)


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 4.0])
def test_gamma_gap_mean_and_cv(burstiness: float) -> None:
    gaps = gaps_s(gamma(MANY, 5.0, burstiness, seed=7, normalize=False))
    assert gaps.mean() == pytest.approx(0.2, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(burstiness), rel=0.03)


def test_offsets_are_absolute_ascending_and_start_after_zero() -> None:
    offsets = gamma(1000, 10.0, 0.5, seed=3)
    assert offsets[0] > 0
    assert np.all(np.diff(offsets) >= 0)


def test_normalize_puts_the_last_arrival_at_n_over_rate() -> None:
    offsets = gamma(1000, 8.0, 0.7, seed=2)
    assert offsets[-1] == pytest.approx(1000 / 8.0, rel=1e-12)
    raw = gamma(1000, 8.0, 0.7, seed=2, normalize=False)
    assert raw[-1] != pytest.approx(1000 / 8.0, rel=1e-6)
    # Rescaling keeps the shape: the two schedules are proportional.
    assert offsets / raw == pytest.approx(np.full(1000, offsets[-1] / raw[-1]), rel=1e-12)


def test_infinite_burstiness_is_evenly_spaced() -> None:
    offsets = gamma(4, 2.0, math.inf)
    assert offsets.tolist() == [0.5, 1.0, 1.5, 2.0]


def test_seed_repeats_and_changes_the_schedule() -> None:
    assert np.array_equal(poisson(100, 3.0, seed=5), poisson(100, 3.0, seed=5))
    assert not np.array_equal(poisson(100, 3.0, seed=5), poisson(100, 3.0, seed=6))
    assert poisson(0, 3.0).size == 0


def test_arrival_process_picks_the_schedule() -> None:
    assert not ArrivalProcess().offsets_s(10).any()
    process = ArrivalProcess(rate_per_s=4.0, burstiness=2.0, seed=1)
    assert np.array_equal(process.offsets_s(50), gamma(50, 4.0, 2.0, 1))
    assert ArrivalProcess().describe() == {
        "rate_per_s": "inf",
        "burstiness": 1.0,
        "seed": 0,
        "normalize": True,
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: poisson(10, 0.0), "rate_per_s=0.0 is not allowed: a finite number > 0"),
        (lambda: poisson(10, -2), "rate_per_s=-2 is not allowed"),
        (lambda: poisson(10, float("nan")), "rate_per_s=nan is not allowed"),
        (lambda: poisson(10, math.inf), "for rate inf use all_at_once()"),
        (lambda: gamma(10, 1.0, 0), "burstiness=0 is not allowed: a number > 0 (inf allowed)"),
        (lambda: gamma(10, 1.0, -0.5), "burstiness=-0.5 is not allowed"),
        (lambda: gamma(-1, 1.0, 1.0), "n=-1 is not allowed: an integer >= 0"),
        (lambda: gamma(10, 1.0, 1.0, seed=-3), "seed=-3 is not allowed: an integer >= 0"),
        (lambda: all_at_once(2.5), "n=2.5 is not allowed"),
        (lambda: ArrivalProcess(rate_per_s=0), "rate_per_s=0 is not allowed"),
        (lambda: ArrivalProcess(burstiness=-1.0), "burstiness=-1.0 is not allowed"),
        (lambda: ArrivalProcess(normalize=1), "normalize=1 is not allowed: True or False"),
    ],
)
def test_bad_arrival_values_name_field_and_value(call, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        call()
    assert message in str(caught.value)


@pytest.mark.parametrize(("num_requests", "num_actors"), [(10, 3), (500, 4), (2, 5), (0, 2), (7, 1)])
def test_split_requests_deals_every_index_once_round_robin(num_requests: int, num_actors: int) -> None:
    shards = split_requests(num_requests, num_actors)
    assert len(shards) == num_actors
    assert sorted(i for shard in shards for i in shard) == list(range(num_requests))
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    for k, shard in enumerate(shards):
        assert all(i % num_actors == k for i in shard)


def test_split_requests_gives_each_actor_early_and_late_arrivals() -> None:
    assert split_requests(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    shards = split_requests(1000, 4)
    # Each actor's mean index is near the middle, not a block at one end.
    for shard in shards:
        assert abs(np.mean(shard) - 500) < 5


@pytest.mark.parametrize(("concurrency", "num_actors"), [(10, 3), (256, 1), (1000, 7), (5, 5), (513, 2)])
def test_split_concurrency_sums_exactly_and_is_even(concurrency: int, num_actors: int) -> None:
    slots = split_concurrency(concurrency, num_actors)
    assert len(slots) == num_actors
    assert sum(slots) == concurrency
    assert max(slots) - min(slots) <= 1
    assert min(slots) >= 1
    assert slots == sorted(slots, reverse=True)


def test_split_concurrency_matches_request_shares() -> None:
    assert split_concurrency(10, 3) == [4, 3, 3]
    assert [len(s) for s in split_requests(10, 3)] == [4, 3, 3]


def test_split_concurrency_below_actor_count_suggests_fewer_actors() -> None:
    with pytest.raises(ConfigError) as caught:
        split_concurrency(3, 8)
    message = str(caught.value)
    assert "concurrency=3 is not allowed" in message
    assert "use num_actors <= 3" in message


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: split_concurrency(0, 1), "concurrency=0 is not allowed: an integer >= 1"),
        (lambda: split_concurrency(4, 0), "num_actors=0 is not allowed: an integer >= 1"),
        (lambda: split_requests(-1, 2), "num_requests=-1 is not allowed: an integer >= 0"),
        (lambda: split_requests(5, 0), "num_actors=0 is not allowed: an integer >= 1"),
        (lambda: default_num_actors(0), "concurrency=0 is not allowed: an integer >= 1"),
        (lambda: default_num_actors(8, streams_per_actor=0), "streams_per_actor=0 is not allowed"),
        (lambda: default_num_actors(8, max_actors=0), "max_actors=0 is not allowed: an integer >= 1"),
    ],
)
def test_bad_split_values_name_field_and_value(call, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        call()
    assert message in str(caught.value)


def test_default_num_actors_one_per_256_streams_capped() -> None:
    assert default_num_actors(1) == 1
    assert default_num_actors(256) == 1
    assert default_num_actors(257) == 2
    assert default_num_actors(1024) == 4
    assert default_num_actors(100, streams_per_actor=10) == 10
    assert default_num_actors(10_000, max_actors=8) == 8
    # The default always splits cleanly.
    for concurrency in (1, 7, 256, 300, 4096):
        actors = default_num_actors(concurrency, streams_per_actor=3)
        assert sum(split_concurrency(concurrency, actors)) == concurrency
