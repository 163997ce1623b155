"""Fit engine profiles to measured benchmark rows: robust, deterministic, numpy only.

A row (``Observation``) is one benchmark cell: its engine's launch features, its workload and
what was measured (total throughput; mean TTFT, TPOT and E2E where the row has them). Per
(engine, GPU) pair:

1. For each KV reserve on a grid (``RESERVE_GRID_GIB``; it sets the KV capacity), every row is
   simulated once (``virtual.simulate``). Every request released at once, so the schedule does
   not depend on the step costs, and each measured quantity is a linear function of the
   coefficients: duration = the summed features of all steps, mean TTFT = the mean over
   requests of the features summed between send and first token, and so on.
2. The six coefficients are fitted in log space (relative errors; throughput through the
   duration it implies) by iteratively reweighted, non-negative least squares with Huber
   weights (a row off by more than HUBER_LOG counts linearly, not quadratically) and a weak
   pull towards physically plausible values (PRIOR) that keeps directions the rows cannot
   tell apart (fixed cost vs. a small per-sequence cost) from wandering.
3. The reserve whose fit has the least robust loss wins. The profile records the regimes of
   the model (``features.REGIMES``: mixed steps, prefix hits, preemption, ...) its rows went
   through at that reserve, so a prediction that needs another one can say it extrapolates.
   Where reserves far apart fit almost alike (``EQUAL_FIT``, ``PINNED_SPAN_GIB``) the rows have
   not pinned the KV pool, whatever they went through: the profile then leaves out
   ``kv_limited``, and a prediction that the pool limits says it extrapolates.

A row that the KV capacity never limited gives the same trace at every larger capacity, so it
is simulated once, not once per grid point.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from raybench.sim.config import SimConfigError
from raybench.sim.costmodel import FEATURES, CostModel
from raybench.sim.engine import KvCapacityError
from raybench.sim.profiles import LEGACY_FITTED_MODEL, NUMBERS, EngineProfile
from raybench.sim.virtual import RequestSpec, Trace, simulate

METRICS = ("throughput", "ttft", "tpot", "e2e")
#: GiB per GPU kept outside the KV pool, tried in turn (largest first: smallest capacity)
RESERVE_GRID_GIB = tuple(float(r) for r in range(48, -1, -4))
#: where the fit is pulled weakly when the rows cannot tell two coefficients apart
PRIOR = {"fixed_step_ms": 25.0, "per_seq_ms": 0.01, "moe_read_factor": 8.0, "compute_factor": 20.0,
         "kv_read_factor": 5.0, "eager_factor": 1.0}
FITTED = len(PRIOR)
PRIOR_WEIGHT = 0.2  # per coefficient, against a weight of 1 per measured metric
HUBER_LOG = 0.15  # log-error beyond which a residual counts linearly
EQUAL_FIT = 0.01  # reserves whose loss is within this share of the least fit the rows alike
PINNED_SPAN_GIB = 8.0  # ... and if they span more than this, the rows do not pin the KV pool
ITERATIONS = 25


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One measured benchmark cell (see the module docstring); metrics absent are None."""

    engine: str
    gpu: str
    label: str  # how error tables name the row
    requests: tuple[RequestSpec, ...]
    concurrency: int  # closed-loop slots (online) or the batch size (offline)
    throughput_tokens_per_s: float
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    model: str = LEGACY_FITTED_MODEL  # what the row's server ran; the profile records it (fitted_model)
    build: Callable[[float], CostModel] = field(repr=False, compare=False)  # reserve GiB -> cost model

    @property
    def key(self) -> str:
        return f"{self.engine}/{self.gpu}"


@dataclass(frozen=True, kw_only=True)
class RowPrediction:
    label: str
    measured: Mapping[str, float]
    predicted: Mapping[str, float]


@dataclass(frozen=True, kw_only=True)
class PairFit:
    profile: EngineProfile
    rows: tuple[RowPrediction, ...]
    loss: float
    #: (least, largest) reserve GiB that fit about as well as the chosen one, where they span more
    #: than PINNED_SPAN_GIB: the rows do not pin the KV pool; None: they do
    pool_unpinned: tuple[float, float] | None = None


def metric_vectors(trace: Trace) -> dict[str, np.ndarray]:
    """Per metric, the (features + idle) vector whose dot product with [coefficients, 1] is it."""
    last = trace.done[np.argmax(trace.done.sum(axis=1))]
    out_minus_one = np.maximum(trace.output_tokens - 1, 1)[:, None]
    return {
        "duration": last,
        "ttft": (trace.first - trace.sent).mean(axis=0) * 1e3,
        "tpot": ((trace.done - trace.first) / out_minus_one).mean(axis=0) * 1e3,
        "e2e": (trace.done - trace.sent).mean(axis=0) * 1e3,
        "tokens": np.array([float(trace.prompt_tokens.sum() + trace.output_tokens.sum())]),
    }


def predict_metrics(vectors: Mapping[str, np.ndarray], coefficients: Sequence[float]) -> dict[str, float]:
    c = np.append(np.asarray(coefficients, dtype=np.float64), 1.0)
    duration = float(vectors["duration"] @ c)
    out = {"throughput": float(vectors["tokens"][0]) / duration if duration > 0 else math.inf}
    out.update({m: float(vectors[m] @ c) for m in ("ttft", "tpot", "e2e")})
    return out


def fit_pair(observations: Sequence[Observation], *, fitted_on: str = "") -> PairFit:
    """The profile that fits these rows (all of one pair and model) best; see the module docstring.
    ValueError (its message without the pair, which the caller names) where no reserve on the grid
    runs every row, or the rows ran several models."""
    first = observations[0]
    models = sorted({o.model for o in observations})
    if len(models) > 1:  # one profile's numbers hold for one model's kernels
        raise ValueError(f"its rows ran {len(models)} models ({', '.join(models)}), and a profile holds for one: "
                         "calibrate each model's results on their own (one --reference per model)")
    traces: dict[int, dict[str, np.ndarray]] = {}  # rows the KV never limited: one trace for all
    regimes: dict[int, frozenset[str]] = {}
    best: PairFit | None = None
    losses: dict[float, float] = {}
    why = ""  # why the last reserve tried (the smallest: the largest KV pool) ran no row, where none ran
    for reserve in RESERVE_GRID_GIB:
        vectors, seen = [], set()
        for i, obs in enumerate(observations):
            if i in traces:
                vectors.append(traces[i])
                seen |= regimes[i]
                continue
            vec = _vectors(obs, reserve)
            if isinstance(vec, str):
                why = f"at {reserve:g} GiB, row {obs.label} cannot run: {vec}"
                break
            ran = vec.pop("regimes")
            seen |= ran
            if "kv_limited" not in ran:
                traces[i], regimes[i] = vec, ran
            vectors.append(vec)
        else:
            coefficients, loss = _fit(observations, vectors)
            losses[reserve] = loss
            if best is None or loss < best.loss - 1e-12:
                profile = _profile(first, coefficients, reserve, fitted_on, seen)
                rows = tuple(RowPrediction(label=o.label, measured=_measured(o),
                                           predicted=predict_metrics(v, profile.coefficients))
                             for o, v in zip(observations, vectors))
                best = PairFit(profile=profile, rows=rows, loss=loss)
    if best is None:
        raise ValueError(f"no KV reserve on the grid ({RESERVE_GRID_GIB[0]:g} to {RESERVE_GRID_GIB[-1]:g} GiB) runs "
                         f"every row's requests; {why}")
    alike = [r for r, loss in losses.items() if loss <= best.loss * (1 + EQUAL_FIT)]
    if max(alike) - min(alike) > PINNED_SPAN_GIB:
        regimes = tuple(r for r in best.profile.fitted_regimes or () if r != "kv_limited")
        best = replace(best, profile=replace(best.profile, fitted_regimes=regimes),
                       pool_unpinned=(min(alike), max(alike)))
    return best


def _vectors(obs: Observation, reserve: float) -> dict[str, np.ndarray] | str:
    """The row's metric vectors at ``reserve``; where it cannot run there, why (the weights do not
    fit the GPU, a request exceeds the KV pool or the context)."""
    try:
        cost = obs.build(reserve)
        trace = simulate(cost, obs.requests, concurrency=obs.concurrency)
    except SimConfigError as err:  # the weights leave no KV pool: the field it names is the simulator's, not the row's
        return err.allowed
    except (KvCapacityError, ValueError) as err:
        return str(err)
    vec: dict = metric_vectors(trace)
    vec["regimes"] = trace.regimes
    return vec


def _measured(obs: Observation) -> dict[str, float]:
    out = {"throughput": obs.throughput_tokens_per_s}
    for name, value in (("ttft", obs.ttft_ms), ("tpot", obs.tpot_ms), ("e2e", obs.e2e_ms)):
        if value is not None and value > 0:
            out[name] = value
    return out


def _design(observations, vectors):
    """Rows (a, b, target): predicted = a . theta + b, in units of the prior."""
    prior = np.array([PRIOR[n] for n in NUMBERS[:FITTED]]) * np.array([1e-3, 1e-3, 1, 1, 1, 1])
    a_rows, b_rows, targets = [], [], []
    for obs, vec in zip(observations, vectors):
        tokens = float(vec["tokens"][0])
        measured = _measured(obs)
        for metric, value in measured.items():
            v = vec["duration"] if metric == "throughput" else vec[metric]
            target = tokens / value if metric == "throughput" else value
            a_rows.append(v[:FITTED] * prior)
            b_rows.append(v[FITTED] + v[FITTED + 1])  # the physical part (coefficient 1) and idle seconds
            targets.append(target)
    return np.array(a_rows), np.array(b_rows), np.array(targets), prior


def _fit(observations, vectors) -> tuple[np.ndarray, float]:
    a, b, y, prior = _design(observations, vectors)
    u = np.ones(a.shape[1])
    for _ in range(ITERATIONS):
        p = np.maximum(a @ u + b, 1e-12)
        r = np.log(p / y)
        w = np.where(np.abs(r) <= HUBER_LOG, 1.0, HUBER_LOG / np.maximum(np.abs(r), 1e-12))
        # linearised: log(p') ~ log(p) + (p' - p) / p; want log(p') = log(y)
        target = p * (1.0 - r) - b
        scale = np.sqrt(w) / p
        u = _nnls_ridge(a * scale[:, None], target * scale, PRIOR_WEIGHT, u)
    p = np.maximum(a @ u + b, 1e-12)
    r = np.abs(np.log(p / y))
    loss = float(np.sum(np.where(r <= HUBER_LOG, 0.5 * r * r, HUBER_LOG * (r - 0.5 * HUBER_LOG))))
    return u * prior, loss


def _nnls_ridge(a: np.ndarray, y: np.ndarray, ridge: float, start: np.ndarray) -> np.ndarray:
    """argmin |a u - y|^2 + ridge |u - 1|^2 over u >= 0, by coordinate descent (tiny problems)."""
    g = a.T @ a + ridge * np.eye(a.shape[1])
    h = a.T @ y + ridge
    # plain floats: for six coordinates numpy's per-call cost is most of each update
    rows, targets, u = g.tolist(), h.tolist(), start.tolist()
    for _ in range(300):
        before = u[:]
        for k, (row, target) in enumerate(zip(rows, targets)):
            if row[k] <= 0:
                continue
            u[k] = max(0.0, u[k] + (target - sum(map(operator.mul, row, u))) / row[k])
        if u == before:  # a fixed point: every later sweep would leave it as it is
            break
    return np.array(u)


def _profile(obs: Observation, coefficients: np.ndarray, reserve: float, fitted_on: str,
             regimes: set[str]) -> EngineProfile:
    c = [float(x) for x in coefficients]
    return EngineProfile(engine=obs.engine, gpu=obs.gpu, fixed_step_ms=c[0] * 1e3, per_seq_ms=c[1] * 1e3,
                         moe_read_factor=c[2], compute_factor=c[3], kv_read_factor=c[4], eager_factor=c[5],
                         reserve_gib=reserve, fitted_model=obs.model, fitted_on=fitted_on,
                         fitted_regimes=tuple(sorted(regimes)))


assert len(FEATURES) == FITTED + 1 and NUMBERS[:FITTED] == tuple(PRIOR)  # the order the design matrix relies on
