"""Per-cell figures that need the time axis: in-flight sweep, steady state, peak tokens/s, goodput.

Inputs are normalised tables (``metrics.CellTables``) and the per-request frame; times are ns on
the cluster-wide time base, results carry their unit in their name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from raybench.errors import ConfigError
from raybench.store.schema import RequestStatus

_NS_PER_S = 1_000_000_000
GOODPUT_METRICS = ("ttft", "tpot", "e2el")  # vLLM's --goodput names
STEADY_STATE_FRACTION = 0.9


@dataclass(frozen=True, kw_only=True)
class InFlight:
    """Requests in flight after each arrival (t_sent) or departure (t_done), in event order.

    Intervals are half-open [t_sent, t_done) and a departure is processed before an arrival at
    the same instant, as vLLM's sweep does: a slot handed straight to the next request is not
    counted twice. Failed requests held a slot too, so they are in the sweep.
    """

    t_ns: np.ndarray
    count: np.ndarray

    @classmethod
    def sweep(cls, requests: pl.DataFrame) -> InFlight:
        sent = requests["t_sent_ns"].to_numpy()
        done = requests["t_done_ns"].to_numpy()
        t = np.concatenate([sent, done])
        delta = np.concatenate([np.ones(sent.size, np.int64), -np.ones(done.size, np.int64)])
        order = np.lexsort((delta, t))  # by time, then -1 (departure) before +1 (arrival)
        return cls(t_ns=t[order], count=np.cumsum(delta[order]))

    def peak(self) -> int:
        return int(self.count.max()) if self.count.size else 0


@dataclass(frozen=True, kw_only=True)
class SteadyState:
    """The window between ramp-up and drain, and the output rate inside it.

    The window opens at the first event that brings in-flight requests to ≥ threshold and closes
    at the last event that takes them below it; brief dips inside (a slot between one request's
    end and the next one's start) do not split it.
    """

    start_ns: int
    end_ns: int
    threshold_in_flight: float
    output_tokens: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / _NS_PER_S

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.duration_s


def concurrent_streams(requests: pl.DataFrame) -> int:
    """How many requests of the cell can be in flight at once, whatever the cap.

    One per row, except that a multi-turn session sends its turns one after another: its rows
    (those sharing a non-null ``session``) count once. Tables without the column count rows.
    """
    if "session" not in requests.columns:
        return requests.height
    session = pl.col("session")
    return int(requests.select(session.drop_nulls().n_unique() + session.null_count()).item())


def effective_target(target_concurrency: int | None, max_in_flight: int) -> int | None:
    """The in-flight level a cell can reach: the concurrency cap, or ``max_in_flight`` if fewer.

    ``max_in_flight`` is :func:`concurrent_streams`: the requests that can overlap at all.
    """
    if target_concurrency is None:
        return None
    if isinstance(target_concurrency, bool) or not isinstance(target_concurrency, int) or (
        target_concurrency < 1
    ):
        raise ConfigError.invalid("target_concurrency", target_concurrency, "an int >= 1 or None")
    return min(target_concurrency, max_in_flight)


def steady_state(
    flight: InFlight, ok_chunks: pl.DataFrame, target_in_flight: int | None
) -> SteadyState | None:
    """Output tokens/s while in-flight ≥ 90 % of ``target_in_flight``; None if never reached.

    Tokens are counted from chunk arrivals (Σ n_tokens of successful requests' chunks with
    start ≤ t < end), since server usage has no time axis. Failed requests held slots, so they
    can open the window; but where no successful request carried a token there is no output
    rate to measure, and the answer is None, as for the peak, never a measured-looking 0.
    """
    if target_in_flight is None or flight.count.size == 0 or not ok_chunks["n_tokens"].sum():
        return None
    threshold = STEADY_STATE_FRACTION * target_in_flight
    above = flight.count >= threshold
    if not above.any():
        return None
    start = int(flight.t_ns[int(np.argmax(above))])
    drops = np.flatnonzero(above[:-1] & ~above[1:]) + 1  # the last event empties every slot
    end = int(flight.t_ns[drops[-1]])
    if end <= start:
        return None
    inside = ok_chunks.filter((pl.col("t_ns") >= start) & (pl.col("t_ns") < end))
    return SteadyState(
        start_ns=start,
        end_ns=end,
        threshold_in_flight=threshold,
        output_tokens=int(inside["n_tokens"].sum()),
    )


def peak_output_tokens_per_s(ok_chunks: pl.DataFrame, t0_ns: int, duration_ns: int | None = None) -> float:
    """Most output tokens per second within one bin: the cell's duration cut into equal bins of at most 1 s.

    The bins tile ``[t0_ns, t0_ns + duration_ns]`` exactly (a 0.4 s cell is one 0.4 s bin; a 2.5 s
    cell three bins of 0.83 s), so their mean rate is the cell's mean and the largest bin can
    never be below it, as fixed 1 s bins were for a cell shorter than a second (0.4 s of tokens
    in a 1 s bin). Long cells get bins within a few ms of 1 s. ``duration_ns`` None: plain 1 s bins.
    Per token: a chunk of n tokens adds n to its bin (vLLM and SGLang rebuild one "token" per
    chunk from the ITL list, which undercounts multi-token chunks).
    """
    tokens = ok_chunks.filter(pl.col("n_tokens") >= 1)
    if tokens.height == 0:
        return 0.0
    if duration_ns is None:
        bins_n, width_ns = None, float(_NS_PER_S)
    else:
        if duration_ns <= 0:
            return 0.0
        bins_n = max(1, math.ceil(duration_ns / _NS_PER_S))
        width_ns = duration_ns / bins_n
    index = ((pl.col("t_ns") - t0_ns) / width_ns).floor().cast(pl.Int64)
    if bins_n is not None:  # a token at the very end belongs to the last bin
        index = index.clip(0, bins_n - 1)
    bins = tokens.group_by(index.alias("bin")).agg(pl.col("n_tokens").sum())
    return float(bins["n_tokens"].max()) * _NS_PER_S / width_ns


def validate_slos(goodput_slos_ms: Mapping[str, float] | None) -> dict[str, float]:
    """The SLOs as a plain dict; names are vLLM's (ttft, tpot, e2el), values finite ms ≥ 0."""
    if goodput_slos_ms is None:
        return {}
    out: dict[str, float] = {}
    for name, value in goodput_slos_ms.items():
        if name not in GOODPUT_METRICS:
            raise ConfigError.unknown("goodput SLO", str(name), GOODPUT_METRICS)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0
        ):
            raise ConfigError.invalid(f"goodput_slos_ms[{name!r}]", value, "a finite number of ms >= 0")
        out[name] = float(value)
    return out


def good_requests(per_request: pl.DataFrame, slos_ms: Mapping[str, float]) -> int:
    """Successful requests meeting every SLO (metric ≤ SLO).

    As vLLM's ``all_tpots``, a request with ≤ 1 output token has TPOT 0 here (it is left out of
    the TPOT statistics, not out of goodput). A request whose TTFT or E2E is undefined (no chunk
    matched the mode's trigger) meets no SLO on it.
    """
    columns = {
        "ttft": pl.col("ttft_ms"),
        "tpot": pl.when(pl.col("output_tokens_used") > 1).then(pl.col("tpot_ms")).otherwise(0.0),
        "e2el": pl.col("e2e_ms"),
    }
    conditions = [columns[name] <= slo for name, slo in slos_ms.items()]
    if not conditions:
        return 0
    good = pl.all_horizontal(conditions).fill_null(False)
    return int(per_request.filter(pl.col("ok") & good).height)


def first_errors(requests: pl.DataFrame, limit: int = 10) -> list[str]:
    """Up to ``limit`` failures as text, earliest sent first (vLLM prints 10)."""
    failed = requests.filter(pl.col("status") != RequestStatus.OK.value).sort("t_sent_ns").head(limit)
    out = []
    for row in failed.iter_rows(named=True):
        http = f" http {row['http_status']}" if row["http_status"] is not None else ""
        out.append(f"request {row['request_id']} {row['status']}{http}: {row['error'] or '(no text)'}")
    return out
