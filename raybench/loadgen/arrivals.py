"""When each request of a cell is released, and how a cell is split over load-generator actors.

Arrival schedules are *absolute* offsets in seconds from the cell start, computed once before
the cell runs. A sender waits until ``start + offset[i]`` rather than sleeping one gap after
another, so scheduling error never accumulates (relative sleeps ran 9% under the target rate
in vllm#21104). The driver computes the whole schedule and each actor takes the offsets of its
own request indices, so the cell's arrival process is the same for any number of actors.

Gaps follow vLLM's current approach: ``Gamma(shape=b, scale=1/(rate*b))`` with burstiness
``b`` (mean ``1/rate``, coefficient of variation ``1/sqrt(b)``); ``b = 1`` is a Poisson process,
``b < 1`` burstier, ``b = inf`` evenly spaced. By default the offsets are rescaled so the last
one is exactly ``n / rate`` (vllm PR #21108), which keeps the offered rate equal across seeds.

The dispatch helpers at the bottom are pure so they can be tested alone (as locust's
``dispatch.py`` is): requests are dealt round-robin and concurrency slots split evenly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raybench.errors import ConfigError
from raybench.workloads.base import ScheduledWorkload, SessionWorkload, Workload

DEFAULT_STREAMS_PER_ACTOR = 256


def all_at_once(n: int) -> np.ndarray:
    """Every request at offset 0 s: request rate ``inf``, as in the seed benchmark."""
    return np.zeros(_check_count("n", n), dtype=np.float64)


def poisson(n: int, rate_per_s: float, seed: int = 0, *, normalize: bool = True) -> np.ndarray:
    """Poisson arrivals at ``rate_per_s`` (exponential gaps); see :func:`gamma`."""
    return gamma(n, rate_per_s, 1.0, seed, normalize=normalize)


def gamma(
    n: int, rate_per_s: float, burstiness: float, seed: int = 0, *, normalize: bool = True
) -> np.ndarray:
    """Offsets in seconds of ``n`` requests with gamma-distributed gaps, ascending.

    The first request comes one gap after the start and request ``i`` at the sum of gaps
    ``0..i``, as in vLLM. With ``normalize`` the sums are scaled so the last offset is exactly
    ``n / rate_per_s``; scaling leaves the shape of the gap distribution (its CV) unchanged.
    ``burstiness = inf`` gives the constant gap ``1 / rate_per_s``.
    """
    count = _check_count("n", n)
    rate = _check_positive("rate_per_s", rate_per_s, allow_inf=False)
    shape = _check_positive("burstiness", burstiness, allow_inf=True)
    seed_int = _check_count("seed", seed)
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    if math.isinf(shape):
        return np.arange(1, count + 1, dtype=np.float64) / rate
    rng = np.random.default_rng(seed_int)
    offsets_s = np.cumsum(rng.gamma(shape, 1.0 / (rate * shape), size=count))
    if normalize and offsets_s[-1] > 0:
        offsets_s *= (count / rate) / offsets_s[-1]
    return offsets_s


RAMPS = ("linear", "exponential")


def ramped(n: int, start_per_s: float, end_per_s: float, strategy: str, burstiness: float = 1.0,
           seed: int = 0) -> np.ndarray:
    """Offsets of ``n`` requests whose rate ramps from ``start_per_s`` to ``end_per_s``.

    As vLLM's ``--ramp-up-strategy``: request ``i`` of ``n`` arrives one gamma gap after the
    previous at the rate ``start + (end - start) * p`` (linear) or ``start * (end / start) ** p``
    (exponential), ``p = i / (n - 1)``. Not normalised: the ramp is the point.
    """
    count = _check_count("n", n)
    start = _check_positive("ramp_start_per_s", start_per_s, allow_inf=False)
    end = _check_positive("rate_per_s", end_per_s, allow_inf=False)
    shape = _check_positive("burstiness", burstiness, allow_inf=True)
    progress = np.arange(count, dtype=np.float64) / max(count - 1, 1)
    rates = _ramp(strategy, start, end, progress)
    if math.isinf(shape):
        return np.cumsum(1.0 / rates)
    rng = np.random.default_rng(_check_count("seed", seed))
    return np.cumsum(rng.gamma(shape, 1.0 / (rates * shape)))


def slot_starts(concurrency: int, start: int, ramp_s: float, strategy: str) -> np.ndarray:
    """When each of ``concurrency`` slots opens (s from the cell start) as the cap ramps from
    ``start`` to ``concurrency`` over ``ramp_s`` seconds: slot ``k`` opens when the cap reaches k + 1."""
    total = _check_positive_int("concurrency", concurrency)
    first = _check_positive_int("ramp_start", start)
    if first > total:
        raise ConfigError.invalid("ramp_start", start, f"at most the concurrency ({total})")
    if first == total:
        return np.zeros(total)
    duration = _check_positive("ramp_up_s", ramp_s, allow_inf=False)
    caps = np.arange(1, total + 1, dtype=np.float64)
    if strategy == "linear":
        at = (caps - first) / (total - first)
    elif strategy == "exponential":
        at = np.log(caps / first) / math.log(total / first)
    else:
        raise ConfigError.unknown("ramp_up", strategy, RAMPS)
    return np.clip(at, 0.0, 1.0) * duration


def _ramp(strategy: str, start: float, end: float, progress: np.ndarray) -> np.ndarray:
    if strategy == "linear":
        return start + (end - start) * progress
    if strategy == "exponential":
        return start * (end / start) ** progress
    raise ConfigError.unknown("ramp_up", strategy, RAMPS)


@dataclass(frozen=True, kw_only=True)
class ArrivalProcess:
    """A cell's arrival process as configuration: ``rate_per_s = inf`` releases all at once.

    ``ramp`` (linear or exponential) ramps the rate from ``ramp_start_per_s`` up to ``rate_per_s``.
    """

    rate_per_s: float = math.inf
    burstiness: float = 1.0
    seed: int = 0
    normalize: bool = True
    ramp: str | None = None
    ramp_start_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.ramp is not None:
            if self.ramp not in RAMPS:
                raise ConfigError.unknown("ramp_up", str(self.ramp), RAMPS)
            _check_positive("ramp_start_per_s", self.ramp_start_per_s, allow_inf=False)
            _check_positive("rate_per_s", self.rate_per_s, allow_inf=False)
        rate = _check_positive("rate_per_s", self.rate_per_s, allow_inf=True)
        burstiness = _check_positive("burstiness", self.burstiness, allow_inf=True)
        object.__setattr__(self, "rate_per_s", rate)
        object.__setattr__(self, "burstiness", burstiness)
        object.__setattr__(self, "seed", _check_count("seed", self.seed))
        if not isinstance(self.normalize, bool):
            raise ConfigError.invalid("normalize", self.normalize, "True or False")

    def offsets_s(self, n: int) -> np.ndarray:
        """The offsets in seconds from the cell start of requests ``0 .. n-1``."""
        if self.ramp is not None:
            return ramped(n, self.ramp_start_per_s, self.rate_per_s, self.ramp, self.burstiness, self.seed)
        if math.isinf(self.rate_per_s):
            return all_at_once(n)
        return gamma(n, self.rate_per_s, self.burstiness, self.seed, normalize=self.normalize)

    def describe(self) -> dict[str, Any]:
        """JSON-safe parameters for run metadata (``inf`` written as the string ``"inf"``)."""

        def json_number(value: float) -> float | str:
            return "inf" if math.isinf(value) else value

        record = {
            "rate_per_s": json_number(self.rate_per_s),
            "burstiness": json_number(self.burstiness),
            "seed": self.seed,
            "normalize": self.normalize,
        }
        if self.ramp is not None:
            record.update(ramp=self.ramp, ramp_start_per_s=self.ramp_start_per_s)
        return record


def split_requests(num_requests: int, num_actors: int) -> list[list[int]]:
    """Request indices per actor, dealt round-robin: actor ``k`` gets ``k, k+A, k+2A, ...``.

    Dealing (not slicing into blocks) gives every actor an even share of early and late
    arrivals, so no actor idles while another still holds the tail of the schedule. Actors
    beyond ``num_requests`` get an empty list.
    """
    count = _check_count("num_requests", num_requests)
    actors = _check_positive_int("num_actors", num_actors)
    return [list(range(k, count, actors)) for k in range(actors)]


def split_sessions(sessions: Sequence[Sequence[int]], num_actors: int) -> list[list[int]]:
    """Request indices per actor when requests come in sessions: whole sessions dealt round-robin.

    A session's turns depend on one another (each follows the previous answer), so they stay on
    one actor; session ``s`` goes to actor ``s % num_actors`` whatever the actor count's effect
    on anything else, so the sessions themselves never change.
    """
    actors = _check_positive_int("num_actors", num_actors)
    shards: list[list[int]] = [[] for _ in range(actors)]
    for s, requests in enumerate(sessions):
        shards[s % actors].extend(requests)
    return shards


def split_workload(workload: Workload, num_actors: int) -> list[list[int]]:
    """Each actor's request indices: whole sessions for a session workload, else dealt one by one."""
    if isinstance(workload, SessionWorkload):
        return split_sessions(workload.sessions(), num_actors)
    return split_requests(workload.num_requests, num_actors)


def cell_schedule(workload: Workload, process: ArrivalProcess) -> np.ndarray:
    """Every request's offset in seconds from the cell start, indexed by request id.

    A workload that owns its arrivals (a trace) keeps them; a session workload releases its
    sessions by ``process`` (later turns are timed by their answers, on the actor); any other
    workload's requests are released by ``process``.
    """
    n = workload.num_requests
    if isinstance(workload, ScheduledWorkload):
        offsets = np.asarray(workload.arrivals_s(), dtype=np.float64)
        if offsets.shape != (n,):
            raise ConfigError(f"the workload gave {offsets.size} arrival times for {n} requests")
        return offsets
    if isinstance(workload, SessionWorkload):
        sessions = workload.sessions()
        starts = process.offsets_s(len(sessions))
        offsets = np.zeros(n, dtype=np.float64)
        for start, requests in zip(starts.tolist(), sessions):
            offsets[list(requests)] = start
        return offsets
    return process.offsets_s(n)


def split_concurrency(concurrency: int, num_actors: int) -> list[int]:
    """Concurrency slots per actor: sums to ``concurrency``, shares differ by at most one.

    The larger shares go to the first actors, which :func:`split_requests` also gives the
    larger share of requests when the counts do not divide evenly.
    """
    slots = _check_positive_int("concurrency", concurrency)
    actors = _check_positive_int("num_actors", num_actors)
    if slots < actors:
        raise ConfigError.invalid(
            "concurrency",
            concurrency,
            f"at least num_actors ({actors}) so every actor holds a slot; "
            f"use num_actors <= {slots}",
        )
    base, extra = divmod(slots, actors)
    return [base + 1 if k < extra else base for k in range(actors)]


def default_num_actors(
    concurrency: int,
    *,
    streams_per_actor: int = DEFAULT_STREAMS_PER_ACTOR,
    max_actors: int | None = None,
) -> int:
    """How many load-generator actors a cell of ``concurrency`` streams needs by default.

    One asyncio actor drives a few hundred streams before its event loop lags and timestamps
    drift, hence one actor per ``streams_per_actor`` streams, capped by ``max_actors`` (for
    example the client CPUs) and never more actors than streams.
    """
    slots = _check_positive_int("concurrency", concurrency)
    per_actor = _check_positive_int("streams_per_actor", streams_per_actor)
    actors = math.ceil(slots / per_actor)
    if max_actors is not None:
        actors = min(actors, _check_positive_int("max_actors", max_actors))
    return actors


def _check_count(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError.invalid(field, value, "an integer >= 0")
    return int(value)


def _check_positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError.invalid(field, value, "an integer >= 1")
    return int(value)


def _check_positive(field: str, value: object, *, allow_inf: bool) -> float:
    allowed = "a number > 0 (inf allowed)" if allow_inf else "a finite number > 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError.invalid(field, value, allowed)
    as_float = float(value)
    if math.isnan(as_float) or as_float <= 0 or (math.isinf(as_float) and not allow_inf):
        if field == "rate_per_s" and math.isinf(as_float):
            allowed += "; for rate inf use all_at_once() or ArrivalProcess(rate_per_s=inf)"
        raise ConfigError.invalid(field, value, allowed)
    return as_float
