"""How long ``raybench run`` would take, for ``raybench plan``: per cell, per server start, in all.

The estimate follows the runner's order of work: per backend, one server start (only if it has
served cells left to run), then per served cell a warm-up and the cell; offline ``engine`` cells
run after the server is down, each in a fresh in-process engine that loads the model again.

A cell's time comes from the simulator's cost model, the only performance model there is: a
real vLLM / SGLang / TensorRT-LLM server gets the profile ``raybench.plan.simulated`` gives it
(its hardware's GPU, its engine's profile and launch features) and the closed loop of
``raybench.sim.virtual`` runs against it in virtual time. The profiles are fitted to the seed's
published rows (docs/simulator.md says how well they predict them); an engine x GPU pair
without a fitted profile gets uncalibrated numbers, an order of magnitude only. Cells of an external server, of a model the
cost model does not profile, or that the cost model says cannot run, are unknown (None) and
left out of the total, which counts them in ``unknown_cells`` instead.

No Ray here: ``raybench plan`` runs on a laptop.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from raybench.backends.base import BackendKind
from raybench.errors import ConfigError
from raybench.experiment import Cell, Experiment, Mode, SimBackend
from raybench.sim import costmodel
from raybench.sim.config import SimConfig, SimConfigError
from raybench.sim.costmodel import CostModel
from raybench.sim.engine import KvCapacityError
from raybench.sim.virtual import closed_loop

# -- every constant the estimate rests on ------------------------------------------------------
#: seconds from starting a server to its first answer. Guesses for a DeepSeek-R1-sized model
#: (~700 GB of weights, then CUDA graphs / compilation): 10 min for vLLM and SGLang, 15 for
#: TensorRT-LLM (which builds more ahead of time). The simulator's process is ready in 0.3 s
#: (measured); the rest of its 3 s is a guess for the ServerActor's start and the readiness
#: poll. An external server is already up.
SERVER_START_S: Mapping[BackendKind, float] = MappingProxyType({
    BackendKind.VLLM: 600.0,
    BackendKind.SGLANG: 600.0,
    BackendKind.TRTLLM: 900.0,
    BackendKind.SIM: 3.0,
    BackendKind.EXTERNAL: 0.0,
})
#: seconds added to every cell: the load-generator actors' start and the warm-up request(s)
#: (an engine cell: its EngineActor's start). A guess, to calibrate against a measured run.
CELL_OVERHEAD_S = 3.0
#: seconds of CPU a simulated offline engine cell takes: its generate runs in virtual time, so
#: only the computation costs real time (measured: under 0.1 s for 1024 x 3200 -> 3200; this
#: rounds up for building the workload and writing the tables). A guess.
SIM_ENGINE_RUN_S = 1.0
#: output tokens per second one load generator reads from a zero-timing simulator (a guess:
#: what the simulator and the client reach on one core each).
ZERO_TIMING_TOKENS_PER_S = 200_000.0
#: requests a closed loop is simulated with at most: past the first waves a loop of equal requests
#: repeats itself, so a longer cell's time is the simulated one extended at its last rate
#: (simulating ten million requests would keep ``raybench plan`` busy for minutes).
LOOP_SAMPLE_REQUESTS = 8192


@dataclass(frozen=True, kw_only=True)
class PlanEstimate:
    """Seconds a run of some cells would take; None where it cannot be estimated.

    ``cell_s`` includes CELL_OVERHEAD_S and is 0.0 for a cell already done. Engine loads (a
    real backend's engine cell loads the model again) are in ``engine_load_s``, server starts
    in ``server_start_s``, both outside ``cell_s``. ``total_s`` sums every known part.
    """

    cell_s: Mapping[str, float | None]  # cell id -> seconds
    server_start_s: Mapping[str, float]  # backend name -> seconds (backends with served cells to run)
    engine_load_s: Mapping[str, float]  # engine cell id -> seconds to load its engine (cells to run)
    total_s: float
    unknown_cells: int

    def cell_seconds(self, cell_id: str) -> float | None:
        try:
            return self.cell_s[cell_id]
        except KeyError:
            raise KeyError(f"cell {cell_id!r} is not in this estimate ({len(self.cell_s)} cells)") from None


def estimate_plan(experiment: Experiment, cells: Sequence[Cell], *, done: Collection[str] = ()) -> PlanEstimate:
    """Estimate running ``cells`` of ``experiment``; cells whose id is in ``done`` cost nothing."""
    # imported here, not at the top: plan.py may well import this module
    from raybench.plan import simulated

    known = {b.name for b in experiment.backends}
    for cell in cells:
        if cell.backend not in known:
            raise ConfigError.unknown("backend of cell " + cell.id, cell.backend, known)
    sims = {b.name: b for b in simulated(experiment).backends}
    done = frozenset(done)
    cell_s: dict[str, float | None] = {}
    server_start_s: dict[str, float] = {}
    engine_load_s: dict[str, float] = {}
    for backend in experiment.backends:
        todo = [c for c in cells if c.backend == backend.name and c.id not in done]
        cell_s.update((c.id, 0.0) for c in cells if c.backend == backend.name and c.id in done)
        if any(not c.runs_in_engine for c in todo):
            server_start_s[backend.name] = SERVER_START_S[backend.kind]
        if backend.kind is BackendKind.EXTERNAL:
            cell_s.update((c.id, None) for c in todo)
            continue
        estimator = _BackendEstimator(sims[backend.name], experiment.model, real=backend.kind is not BackendKind.SIM)
        for cell in todo:
            run_s = estimator.run_s(cell)
            cell_s[cell.id] = None if run_s is None else run_s + CELL_OVERHEAD_S
            if run_s is not None and cell.runs_in_engine and estimator.real:
                engine_load_s[cell.id] = SERVER_START_S[backend.kind]
    known_s = [s for s in cell_s.values() if s is not None]
    return PlanEstimate(
        cell_s=MappingProxyType(cell_s),
        server_start_s=MappingProxyType(server_start_s),
        engine_load_s=MappingProxyType(engine_load_s),
        total_s=sum(known_s) + sum(server_start_s.values()) + sum(engine_load_s.values()),
        unknown_cells=sum(s is None for s in cell_s.values()),
    )


def format_duration(seconds: float) -> str:
    """``45 s``, ``4 min 43 s``, ``12 min``, ``3 h 05 min``: as precise as a plan needs."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds={seconds!r}: expected a finite number >= 0")
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 600:  # short cells: the seconds still tell them apart
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest:02d} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _BackendEstimator:
    """Run seconds of one backend's cells (overheads excluded) from its simulator stand-in."""

    def __init__(self, sim: SimBackend, model: str, *, real: bool) -> None:
        self.sim = sim
        self.real = real  # a real server, priced by the cost model of its stand-in
        self._cost = _cost_model(sim, model)
        self._loops: dict[tuple[int, int, int, int, float], float | None] = {}  # repeats cost one run

    def run_s(self, cell: Cell) -> float | None:
        if cell.dataset_path is not None or cell.dataset == "multiturn":
            return None  # a file's lengths and times, a session's turns: nothing the closed-loop model knows
        n = cell.num_prompts or 0
        concurrency = (cell.concurrency if cell.mode is Mode.ONLINE else cell.batch_size) or n
        if cell.runs_in_engine:
            if not self.real:  # the simulator's offline engine: virtual time, real CPU seconds
                return SIM_ENGINE_RUN_S if self._cost is not None else None
            concurrency = n  # one generate call with every prompt at once
        elif not self.real and self.sim.timing == "zero":
            return max(n * cell.output_len / ZERO_TIMING_TOKENS_PER_S, _rate_floor_s(n, cell.request_rate))
        elif not self.real and self.sim.timing == "fixed":
            return self._fixed_s(cell, n, concurrency)
        key = (n, concurrency, cell.input_len, cell.output_len, cell.request_rate)
        if key not in self._loops:
            self._loops[key] = self._closed_loop_s(*key)
        return self._loops[key]

    def _closed_loop_s(self, n: int, concurrency: int, input_len: int, output_len: int,
                       rate_per_s: float) -> float | None:
        if self._cost is None:
            return None
        def elapsed_s(num_requests: int, concurrency: int) -> float:
            return closed_loop(self._cost, num_requests=num_requests, prompt_tokens=input_len,
                               output_tokens=output_len, concurrency=concurrency, rate_per_s=rate_per_s,
                               tokens_per_chunk=self.sim.tokens_per_chunk).elapsed_s

        try:
            # beyond its running cap the engine queues what is sent: the same pace as a loop at the cap
            running = min(concurrency, self._cost.max_num_seqs)
            sample = max(LOOP_SAMPLE_REQUESTS, 4 * running)  # several turns of the loop: its steady state
            if n <= sample:
                seconds = elapsed_s(n, concurrency)
            else:
                half = sample // 2
                first, whole = elapsed_s(half, running), elapsed_s(sample, running)
                seconds = whole + (whole - first) / (sample - half) * (n - sample)
        except KvCapacityError:  # the server rejects every request: it tells nothing about time
            return None
        return max(seconds, _rate_floor_s(n, rate_per_s))

    def _fixed_s(self, cell: Cell, n: int, concurrency: int) -> float:
        """ttft, then one chunk of k tokens every k x itl (raybench/sim/timing.FixedScheduler)."""
        k = self.sim.tokens_per_chunk
        per_request_s = (self.sim.ttft_ms + (math.ceil(cell.output_len / k) - 1) * k * self.sim.itl_ms) / 1e3
        closed_s = math.ceil(n / concurrency) * per_request_s  # no capacity limit: rounds of C
        if math.isinf(cell.request_rate):
            return closed_s
        return max(closed_s, (n - 1) / cell.request_rate + per_request_s, _rate_floor_s(n, cell.request_rate))


def _rate_floor_s(n: int, rate_per_s: float) -> float:
    """At an arrival rate, n requests take at least n / rate seconds."""
    return 0.0 if math.isinf(rate_per_s) else n / rate_per_s


def _cost_model(sim: SimBackend, model: str) -> CostModel | None:
    """The cost model the simulator would run; None for an unprofiled model or one that does not fit."""
    if costmodel.find_model(model) is None:
        return None
    try:
        config = SimConfig(model=model, gpu=sim.gpu, num_gpus=sim.num_gpus, backend_profile=sim.profile,
                           tokens_per_chunk=sim.tokens_per_chunk, features=sim.engine_features, profiles=sim.profiles)
        return costmodel.resolve(config)
    except SimConfigError:
        return None
