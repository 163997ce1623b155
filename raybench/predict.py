"""``raybench predict``: every cell of an experiment in virtual time, as a run directory.

Each server's launch settings become the simulator's engine features (``launch_features``),
its engine x GPU picks a fitted profile (``raybench calibrate`` writes them; the shipped ones
are fitted on the seed's output-800 rows), and the engine core runs the cell's closed loop in
virtual time (``raybench.sim.virtual``). The run directory has the layout of ``raybench run``:
per cell a requests table (one row per request, times in virtual nanoseconds), an empty chunks
table (a prediction has no per-chunk stream), summary.json with the same fields plus
``"prediction": true``, then summary.parquet and report.html, so analysis, compare and report
read it unchanged; the report labels every predicted series "(predicted)". A cell whose run
went through regimes of the engine model (``features.REGIMES``: mixed steps, prefix hits,
preemption, ...) that its profile's fit never saw lists them in ``"extrapolated"``: no measured
row constrained what those steps cost; so does a cell whose model is not the one its profile was
fitted on (``other_model``), whatever steps it took. Everything that can stop a cell (no profile,
an unknown model or GPU, weights that do not fit, requests the server would refuse) is checked
before the run directory is made (``check_cell``).

No Ray here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import raybench
from raybench.analysis.summary import summarize_cell, summarize_offline, summary_frame
from raybench.backends.base import BackendKind
from raybench.errors import ConfigError
from raybench.experiment import WARMUP_MAX_TOKENS, Backend, Cell, Experiment, Mode
from raybench.plan import Schedule, schedule_for, workload_for
from raybench.sim import costmodel
from raybench.sim.api import ApiError
from raybench.sim.config import SimConfigError
from raybench.sim.engine import EngineCore, KvCapacityError
from raybench.sim.features import (
    REGIMES,
    SGLANG_MAX_PREFILL_TOKENS,
    EngineFeatures,
    Policy,
    PrefixCache,
    defaults,
    sglang_memory_fraction,
)
from raybench.sim.prefixcache import PrefixStore
from raybench.sim.profiles import OTHER_MODEL, EngineProfile, load_profiles, pair_key
from raybench.sim.timing import IDLE_GATHER_S
from raybench.sim.virtual import RequestSpec, Trace, shared_prefix_requests, simulate, warm_up
from raybench.store.outcome import judge
from raybench.store.rundir import RunDir, write_json_atomic, write_table_atomic
from raybench.store.schema import CHUNKS_SCHEMA, RequestStatus, requests_from_columns
from raybench.workloads.base import Workload
from raybench.workloads.reuse import PromptHistory, PromptReuse, prompt_sample
from raybench.workloads.tokenizer import WORD_TOKENIZER
from raybench.workloads.trace import TraceWorkload

SUMMARY_FILE = "summary.json"
#: vLLM V0's chunked-prefill budget for its OpenAI server (EngineArgs, usage context API server)
VLLM_CHUNKED_BUDGET = 2048
#: vLLM's KV block when VLLM_ATTENTION_BACKEND=FLASHMLA: the kernel takes 64-token pages only, so
#: vLLM raises any other --block-size to it
FLASHMLA_BLOCK_TOKENS = 64


@dataclass(frozen=True, kw_only=True)
class CellPlan:
    """What predicting one cell needs: the engine profile key, features and GPU."""

    engine: str
    gpu: str
    num_gpus: int
    features: EngineFeatures

    @property
    def key(self) -> str:
        return pair_key(self.engine, self.gpu)


def engine_name(backend: Backend, cell_mode: Mode) -> str:
    """The profile engine of a backend: offline TensorRT-LLM cells are a TensorRT engine build."""
    kind = backend.kind
    if kind is BackendKind.TRTLLM:
        runtime = getattr(getattr(backend, "runtime", None), "value", "pytorch")
        return "trtllm-engine" if cell_mode is Mode.OFFLINE or runtime == "tensorrt" else "trtllm"
    if kind in (BackendKind.VLLM, BackendKind.SGLANG):
        return kind.value
    if kind is BackendKind.SIM:
        return getattr(backend, "profile", "generic")
    raise ConfigError(f"backend {backend.name}: a {kind.value} server has no engine model to predict with")


def launch_features(backend: Backend, engine: str, num_gpus: int) -> EngineFeatures:
    """The engine features a backend's launch settings give (the engine's defaults elsewhere)."""
    if backend.kind is BackendKind.SIM and getattr(backend, "engine_features", None) is not None:
        return backend.engine_features
    f = defaults(engine if engine in ("vllm", "sglang", "trtllm", "trtllm-engine") else "generic")
    get = lambda name: getattr(backend, name, None)  # noqa: E731 -- attribute of whichever backend class
    flags = _flags(getattr(backend, "extra_args", ()))
    if engine == "sglang":
        tp = get("tp") or num_gpus
        dp = get("dp") or tp if get("enable_dp_attention") else 1
        chunk = next((c for c in (get("chunked_prefill_size"), _int(flags.get("--chunked-prefill-size")))
                      if c is not None), 8192)
        chunked = chunk > 0  # -1 (any size <= 0) turns chunked prefill off
        if not chunked:  # each rank's scheduler then takes up to --max-prefill-tokens of prompts a step
            chunk = (_int(flags.get("--max-prefill-tokens")) or SGLANG_MAX_PREFILL_TOKENS) * dp
        elif get("enable_dp_attention") and not get("dp"):
            # Since sgl-project/sglang#4390 (2025-03-13) DP attention needs --dp-size and gives each
            # rank chunk // dp; before it, --enable-dp-attention alone set dp = tp and gave each rank
            # chunk // 2. A launch without --dp-size starts only on those earlier releases.
            chunk = chunk // 2 * dp  # the engine splits the step budget over dp ranks
        f = f.with_(dp_attention=dp, prefill_tokens_per_step=chunk, chunked_prefill=chunked,
                    prefix_cache=PrefixCache.NONE if get("disable_radix_cache") else PrefixCache.RADIX,
                    max_running=get("max_running_requests") or f.max_running,
                    memory_fraction=get("mem_fraction_static") or sglang_memory_fraction(tp),
                    max_model_len=get("context_length"))
    elif engine == "vllm":
        eager = get("enforce_eager") or "--enforce-eager" in flags
        max_len = get("max_model_len") or _int(flags.get("--max-model-len"))
        chunked = bool(get("enable_chunked_prefill"))
        budget = get("max_num_batched_tokens") or _int(flags.get("--max-num-batched-tokens"))
        budget = budget or (VLLM_CHUNKED_BUDGET if chunked else (max_len or f.prefill_tokens_per_step))
        env = dict(getattr(backend, "env", {}))
        flashmla = (get("attention_backend") or env.get("VLLM_ATTENTION_BACKEND")) == "FLASHMLA"
        block = FLASHMLA_BLOCK_TOKENS if flashmla else (_int(flags.get("--block-size")) or f.block_tokens)
        f = f.with_(policy=Policy.MIXED if chunked else Policy.PREFILL_FIRST, chunked_prefill=chunked,
                    prefill_tokens_per_step=budget, max_model_len=max_len,
                    prefix_cache=PrefixCache.BLOCK_HASH if get("enable_prefix_caching") else PrefixCache.NONE,
                    block_tokens=block,
                    max_running=get("max_num_seqs") or f.max_running,
                    memory_fraction=get("gpu_memory_utilization") or f.memory_fraction,
                    cuda_graphs=not eager,
                    graph_max_context=_int(flags.get("--max-seq-len-to-capture")) or f.graph_max_context,
                    # V0 turns it off for eager mode and pipeline parallelism; the V1 engine core
                    # hands each step's tokens out at once
                    async_output=not (eager or (get("pp") or 1) > 1 or "--disable-async-output-proc" in flags
                                      or env.get("VLLM_USE_V1") == "1"))
    elif engine == "trtllm":
        f = f.with_(max_running=get("max_batch_size") or f.max_running,
                    prefill_tokens_per_step=get("max_num_tokens") or f.prefill_tokens_per_step,
                    max_model_len=get("max_seq_len"),
                    memory_fraction=get("kv_cache_free_gpu_memory_fraction") or f.memory_fraction)
    return f


def _flags(args: Sequence[str]) -> dict[str, str]:
    out, args = {}, list(args)
    for i, a in enumerate(args):
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            out[name] = value if eq else (args[i + 1] if i + 1 < len(args) else "")
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _gpus(experiment: Experiment, backend: Backend) -> tuple[str, int]:
    hw = experiment.hardware.get(backend.name)
    if hw is not None:
        return hw.name, hw.count
    return getattr(backend, "gpu", "H200"), getattr(backend, "num_gpus", 8)


def cell_plan(experiment: Experiment, cell: Cell) -> CellPlan:
    backend = experiment.backend(cell.backend)
    gpu, num_gpus = _gpus(experiment, backend)
    engine = engine_name(backend, cell.mode)
    return CellPlan(engine=engine, gpu=gpu, num_gpus=num_gpus, features=launch_features(backend, engine, num_gpus))


def launch_record(experiment: Experiment, backend: Backend) -> dict[str, Any] | None:
    """What the simulator makes of a backend's launch, per cell mode, as JSON. A run keeps it in
    env.json so that ``raybench calibrate`` fits the run's rows with the settings they ran with,
    whatever the backend is called. None for a server the simulator has no engine model of."""
    gpu, num_gpus = _gpus(experiment, backend)
    modes = {}
    for mode in Mode:
        try:
            engine = engine_name(backend, mode)
        except ConfigError:
            return None
        modes[mode.value] = {"engine": engine, "features": launch_features(backend, engine, num_gpus).to_json()}
    return {"model": experiment.model, "gpu": gpu, "num_gpus": num_gpus, "modes": modes}


def profile_for(plan: CellPlan, profiles: Mapping[str, EngineProfile], source: str) -> EngineProfile:
    """The fitted profile of a cell's pair; ConfigError naming the pairs there are and how to fit one."""
    profile = profiles.get(plan.key)
    if profile is None:
        have = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"no simulator profile for {plan.key} in {source} (it has: {have}); fit one with "
                          f"`raybench calibrate --reference RESULTS --out PROFILES.json` and pass --profiles PROFILES.json")
    return profile


def requests_for(cell: Cell, *, kept_cache: bool = False, text_block: int | None = None) -> list[RequestSpec]:
    """The cell's requests as the engine core sees them: cacheable segments keyed by what draws
    their content, a shared prefix and a question. ``kept_cache``: the server's prefix cache holds
    what earlier cells sent (no reset between cells), so a random prompt is a segment too, and a
    cell that sends an earlier cell's prompts again (the same seed) finds them, as over HTTP.
    ``text_block``: the words a block of a data set's prompt holds in the server's prefix cache
    (``text_block_of``); None: the server keeps none."""
    n = cell.num_prompts or cell.batch_size or 1
    if cell.dataset_path is not None:  # a data set or a trace: its own prompt and output lengths
        return file_requests(cell, text_block)
    if cell.dataset == "multiturn":
        return conversation_requests(cell)
    if cell.dataset == "prefix" and cell.prefix_len and cell.prompts_per_group:
        return shared_prefix_requests(n, cell.input_len, cell.prefix_len, cell.output_len, cell.prompts_per_group,
                                      cell.seed)
    if kept_cache:
        key = ("random", cell.seed, cell.input_len, cell.range_ratio)
        return [RequestSpec(prompt_tokens=cell.input_len, output_tokens=cell.output_len,
                            segments=(((*key, slot), cell.input_len),)) for slot in range(n)]
    return [RequestSpec(prompt_tokens=cell.input_len, output_tokens=cell.output_len)] * n


#: the finest block a data set's prompt is keyed by: a radix cache matches to the token, but
#: 16-word blocks keep a prompt to a few dozen segments and miss at most 15 tokens of a hit
TEXT_BLOCK_WORDS = 16


def text_block_of(features: EngineFeatures) -> int | None:
    """The words a block of a data set's prompt holds in a server's prefix cache; None: no cache."""
    if features.prefix_cache is PrefixCache.NONE:
        return None
    return max(features.block_tokens, TEXT_BLOCK_WORDS)


@functools.lru_cache(maxsize=8)  # predict_run reads each file before it writes anything, then predicts from it
def file_workload(cell: Cell) -> Workload:
    """The workload of a cell that replays a file, read as ``raybench run --simulate`` reads it with
    no tokenizer named: prompts counted in words, the simulator's count. A file that is missing or
    unreadable is a ConfigError, as in a run."""
    return workload_for(cell, tokenizer=WORD_TOKENIZER, text=False)


def file_requests(cell: Cell, text_block: int | None = None) -> list[RequestSpec]:
    """The requests of a cell that replays a file; outputs as the file or the cell's forced length says.
    A trace's prompts are runs of its blocks, so a prefix cache finds what they share; a data set's
    prompts, with ``text_block``, runs of that many words keyed by every word up to their end, as
    the simulator's server keys a text prompt, so prompts that begin alike (a template, a system
    prompt, a prompt sent again) hit as they do over HTTP."""
    workload = file_workload(cell)
    specs = workload.build(range(workload.num_requests))
    if isinstance(workload, TraceWorkload):
        segments = [workload.segments(spec.request_id) for spec in specs]
    elif text_block is not None:
        segments = [text_segments(spec.prompt_token_ids, text_block) for spec in specs]
    else:
        segments = [()] * len(specs)
    return [RequestSpec(prompt_tokens=spec.prompt_tokens, output_tokens=spec.max_tokens, segments=seg)
            for spec, seg in zip(specs, segments)]


def text_segments(ids: np.ndarray, block: int) -> tuple[tuple[int, int], ...]:
    """((key, words), ...) of a prompt's word ids, ``block`` at a time; a key chains every block
    before it, so equal keys mean equal prefixes."""
    ids = np.asarray(ids)
    out, key = [], hash(("text", block))
    for start in range(0, len(ids), block):
        part = ids[start:start + block]
        key = hash((key, part.tobytes()))
        out.append((key, len(part)))
    return tuple(out)


def conversation_requests(cell: Cell) -> list[RequestSpec]:
    """A multi-turn cell's turns: each prompt the conversation so far (its session's earlier
    prompt a cacheable prefix), each later turn waiting for the answer before it."""
    workload = workload_for(cell)
    return [RequestSpec(prompt_tokens=spec.prompt_tokens, output_tokens=spec.max_tokens,
                        segments=workload.segments(spec.request_id),
                        after=spec.request_id - 1 if spec.turn else -1)
            for spec in workload.build(range(workload.num_requests))]


def schedule_of(cell: Cell) -> Schedule | None:
    """When the run would release the cell's requests (``raybench.plan.schedule_for``: a Poisson or
    gamma process at its rate, a ramp, a trace's own times, a conversation's start); None where it
    sends them all at once into open slots."""
    if math.isinf(cell.request_rate) and cell.ramp_up is None and cell.dataset not in ("trace", "multiturn"):
        return None
    workload = file_workload(cell) if cell.dataset_path is not None else workload_for(cell)
    return schedule_for(cell, workload)


def simulate_requests(cell: Cell, cost: costmodel.CostModel, requests: Sequence[RequestSpec], concurrency: int,
                      core: EngineCore | None = None) -> Trace:
    """The cell's requests through the engine core, released as the run would release them.

    A served cell's server answers a request it cannot take (beyond the context limit or the KV
    capacity) with a 400 and the run goes on, as over HTTP; a cell whose every request is refused
    is a KvCapacityError, and so is any refused request of an offline engine's batch."""
    schedule = schedule_of(cell)
    refuse = not cell.runs_in_engine
    if schedule is None:
        trace = simulate(cost, requests, concurrency=concurrency, rate_per_s=cell.request_rate, core=core,
                         refuse=refuse)
    else:
        # requests that come apart meet an idle engine as they meet the simulator's: one that wakes
        # it waits a moment for the rest of a burst
        trace = simulate(cost, requests, concurrency=concurrency, core=core, arrivals_s=schedule.arrivals_s,
                         slot_opens_s=schedule.slot_opens_s, gather_s=IDLE_GATHER_S,
                         think_s=cell.think_time_s or 0.0, refuse=refuse)
    if len(trace.refused) == len(requests):
        raise KvCapacityError(f"every request would be refused: {next(iter(trace.refused.values()))}")
    return trace


class Server:
    """One server's cells in a row, as ``raybench run`` sends them: before each cell its warm-up
    (the cell's first ``warmup_requests`` requests, WARMUP_MAX_TOKENS tokens at most), then the
    cache reset if the backend asks for one; the prefix cache carries what earlier cells and
    warm-ups left. Cells that run in an engine of their own (offline engine cells) start cold."""

    def __init__(self, backend: Backend, warmup_requests: int) -> None:
        self.backend = backend
        self.warmup_requests = warmup_requests
        self._plan: CellPlan | None = None
        self._cache: PrefixStore | None = None
        self._sent = PromptHistory()

    def prompts_sent_before(self, cell: Cell, plan: CellPlan) -> PromptReuse | None:
        """What of the cell's first prompts earlier cells sent this server, as ``raybench run``
        flags it (a server with a prefix cache that is not reset between cells); None on a server
        that keeps no cache or resets it. A data set's prompts are compared as its words, where a run
        compares its tokenizer's ids: equal texts are equal either way."""
        if plan != self._plan:  # a server that does not keep the earlier cells' cache
            self._sent.clear()
        if not self.keeps_cache(plan):
            return None
        workload = file_workload(cell) if cell.dataset_path is not None else workload_for(cell)
        return self._sent.check_and_add(cell.id, prompt_sample(workload))

    def keeps_cache(self, plan: CellPlan) -> bool:
        """Its prefix cache holds what earlier cells sent: it has one, and no reset empties it."""
        return not self.backend.reset_cache and plan.features.prefix_cache is not PrefixCache.NONE

    def run(self, cell: Cell, plan: CellPlan, cost: costmodel.CostModel, requests: Sequence[RequestSpec],
            concurrency: int) -> Trace:
        core = EngineCore(cost, prefix_cache=self._cache if plan == self._plan else None)
        warm_up(core, [dataclasses.replace(r, output_tokens=min(r.output_tokens, WARMUP_MAX_TOKENS))
                       for r in requests[:self.warmup_requests]])
        if self.backend.reset_cache:
            core.reset_prefix_cache()
        trace = simulate_requests(cell, cost, requests, concurrency, core)
        self._plan, self._cache = plan, core.prefix_cache
        return trace


def server_order(experiment: Experiment, cells: Sequence[Cell]) -> list[Cell]:
    """``cells`` in the order ``raybench run`` runs them: backend by backend, the served cells
    first, then the ones that run in an engine of their own, each in the experiment's order."""
    position = {c.id: i for i, c in enumerate(experiment.cells())}
    ordered = sorted(cells, key=lambda c: position.get(c.id, len(position)))
    return [c for b in experiment.backends for engine in (False, True) for c in ordered
            if c.backend == b.name and c.runs_in_engine is engine]


def simulate_cell(experiment: Experiment, cell: Cell, profiles: Mapping[str, EngineProfile],
                  source: str = "the shipped profiles", server: Server | None = None,
                  ) -> tuple[Trace, EngineProfile, CellPlan]:
    """``server``: the cell's server, when earlier cells ran on it (``predict_run``); None: a
    fresh server, as for the first cell, with no warm-up."""
    plan = cell_plan(experiment, cell)
    profile = profile_for(plan, profiles, source)
    cost = cell_cost(experiment, cell, plan, profile)
    try:
        concurrency = (cell.concurrency if cell.mode is Mode.ONLINE else (cell.batch_size or cell.num_prompts)) or 1
        # an offline engine's simulator keeps no prefix cache of text
        text_block = None if cell.runs_in_engine else text_block_of(plan.features)
        if server is None or cell.runs_in_engine:
            trace = simulate_requests(cell, cost, requests_for(cell, text_block=text_block), concurrency)
        else:
            requests = requests_for(cell, kept_cache=server.keeps_cache(plan), text_block=text_block)
            trace = server.run(cell, plan, cost, requests, concurrency)
    except (SimConfigError, KvCapacityError) as err:
        raise ConfigError(f"cell {cell.id}: the simulator cannot run it: {err}") from err
    return trace, profile, plan


def cell_cost(experiment: Experiment, cell: Cell, plan: CellPlan, profile: EngineProfile) -> costmodel.CostModel:
    """The cell's cost model; ConfigError for a model or GPU the simulator has no profile of, or
    weights that leave no KV pool."""
    model = costmodel.find_model(experiment.model)
    if model is None:
        names = ", ".join(m.name for m in costmodel.MODELS)
        raise ConfigError(f"model {experiment.model!r} has no simulator model: one of {names}")
    if plan.gpu not in costmodel.GPUS:
        raise ConfigError.unknown(f"GPU of backend {cell.backend}", plan.gpu, tuple(costmodel.GPUS))
    try:
        return costmodel.build(model, costmodel.GPUS[plan.gpu], plan.num_gpus, profile, plan.features)
    except SimConfigError as err:
        raise ConfigError(f"cell {cell.id}: the simulator cannot run it: {err}") from err


def check_cell(experiment: Experiment, cell: Cell, profiles: Mapping[str, EngineProfile], source: str) -> None:
    """A ConfigError for what would stop the cell's prediction, found without running it, so that
    ``predict_run`` stops before it writes anything: no profile for its pair, a model or GPU the
    simulator does not know, weights that do not fit, a file it cannot read, requests the engine
    would refuse where that stops the cell (every request of a served cell, any of an offline
    engine's batch, one of its warm-up). The engine's admission checks depend on the request's
    lengths and the launch only, so a fresh engine core answers them as the run's would."""
    plan = cell_plan(experiment, cell)
    cost = cell_cost(experiment, cell, plan, profile_for(plan, profiles, source))
    requests = requests_for(cell)
    core = EngineCore(cost)
    refusals: dict[tuple[int, int], str | None] = {}

    def refusal(prompt_tokens: int, output_tokens: int) -> str | None:
        if (prompt_tokens, output_tokens) not in refusals:
            try:
                core.add_request(len(refusals), prompt_tokens, output_tokens)
                refusals[prompt_tokens, output_tokens] = None
            except KvCapacityError as err:
                refusals[prompt_tokens, output_tokens] = str(err)
        return refusals[prompt_tokens, output_tokens]

    refused = [why for r in requests if (why := refusal(r.prompt_tokens, r.output_tokens)) is not None]
    if refused and (cell.runs_in_engine or len(refused) == len(requests)):
        every = "" if cell.runs_in_engine else "every request would be refused: "
        raise ConfigError(f"cell {cell.id}: the simulator cannot run it: {every}{refused[0]}")
    if cell.runs_in_engine:
        return
    for r in requests[:experiment.warmup_requests]:  # a refused warm-up stops the cell in a run too
        why = refusal(r.prompt_tokens, min(r.output_tokens, WARMUP_MAX_TOKENS))
        if why is not None:
            raise ConfigError(f"cell {cell.id}: its warm-up (its first {experiment.warmup_requests} requests with at "
                              f"most {WARMUP_MAX_TOKENS} output tokens, sent before the cell as `raybench run` sends "
                              f"them) would be refused, which stops the cell: {why}")


#: the most tokens one chunk row holds (CHUNKS_SCHEMA's n_tokens is an int16)
CHUNK_TOKENS_MAX = int(np.iinfo(np.int16).max)


#: the latest virtual time a prediction can write: a run's timestamps are int64 nanoseconds
LAST_TIMESTAMP_S = float(np.iinfo(np.int64).max) / 1e9


def check_fits_timestamps(cell: Cell, trace: Trace, profile: EngineProfile, source: str) -> None:
    """A ConfigError for a prediction whose times a run directory cannot hold (non-finite, or
    past the ~292 years int64 ns reach), rather than tables of wrapped-around garbage."""
    times = np.concatenate([trace.due_s(profile.coefficients), *trace.times_s(profile.coefficients)])
    last = float(np.max(np.abs(times), initial=0.0)) if np.isfinite(times).all() else math.inf
    if last < LAST_TIMESTAMP_S:
        return
    rate = "" if math.isinf(cell.request_rate) else f"request_rate {cell.request_rate:g}/s, "
    raise ConfigError(
        f"cell {cell.id}: its prediction reaches {last:.3g} s of virtual time, beyond the {LAST_TIMESTAMP_S:.3g} s "
        f"(~292 years) a run's nanosecond timestamps hold; check the cell's {rate}arrival times and "
        f"the {profile.key} profile's coefficients in {source}")


def requests_table(cell: Cell, trace: Trace, profile: EngineProfile) -> pa.Table:
    """One row per request, as a run records it: a refused request is an HTTP 400 with the
    simulator's error body, no first token and no output."""
    sent, first, done = trace.times_s(profile.coefficients)
    n = len(sent)
    to_ns = lambda s: np.round(s * 1e9).astype(np.int64)  # noqa: E731
    ok = np.ones(n, dtype=bool)
    ok[list(trace.refused)] = False
    first_ns = pa.array(to_ns(first), mask=~ok)
    answered = lambda values: pa.array(values, mask=~ok)  # noqa: E731
    errors = [None] * n
    for req, message in trace.refused.items():
        errors[req] = f"HTTP 400: {ApiError(400, message).body().decode()}"
    return requests_from_columns({
        "cell_id": [cell.id] * n, "request_id": np.arange(n, dtype=np.uint64), "actor": ["predict"] * n,
        "node": ["virtual"] * n, "prompt_tokens": trace.prompt_tokens.astype(np.int32),
        "server_prompt_tokens": answered(trace.prompt_tokens.astype(np.int32)),
        "max_tokens": trace.output_tokens.astype(np.int32),
        "output_tokens": answered(trace.output_tokens.astype(np.int32)),
        "cached_tokens": answered(trace.cached_tokens.astype(np.int32)),
        "t_scheduled_ns": to_ns(trace.due_s(profile.coefficients)),
        "t_sent_ns": to_ns(sent), "t_first_ns": first_ns, "t_done_ns": to_ns(done),
        "status": np.where(ok, RequestStatus.OK.value, RequestStatus.HTTP_ERROR.value).tolist(),
        "http_status": np.where(ok, 200, 400).astype(np.int16), "error": errors,
    })


def chunks_table(cell: Cell, trace: Trace, profile: EngineProfile) -> pa.Table:
    """Per request its first token, the rest of its tokens at its end, and the end of its stream.

    Enough for TTFT, TPOT, E2E and tokens per second; a prediction at every decode step would
    be millions of rows per cell and say nothing more about those metrics. A chunk holds at most
    CHUNK_TOKENS_MAX tokens (the schema's int16), so a longer rest is several chunks at its end."""
    _, first, done = trace.times_s(profile.coefficients)
    ids = np.setdiff1d(np.arange(len(first)), np.fromiter(trace.refused, dtype=np.int64))
    rest = np.maximum(trace.output_tokens[ids] - 1, 0).astype(np.int64)
    pieces = np.maximum(1, -(-rest // CHUNK_TOKENS_MAX))  # at least one, as for a one-token output
    rows = pieces + 2
    starts = np.cumsum(rows) - rows
    seq = np.arange(int(rows.sum())) - np.repeat(starts, rows)
    last = np.repeat(rows - 1, rows)
    piece = seq - 1  # which part of the rest a middle row holds
    rest_rows = np.repeat(rest, rows)
    n_tokens = np.where(seq == 0, 1, np.where(seq == last, 0,
                        np.minimum(CHUNK_TOKENS_MAX, rest_rows - piece * CHUNK_TOKENS_MAX)))
    to_ns = lambda s: np.round(s * 1e9).astype(np.int64)  # noqa: E731
    t_ns = np.where(seq == 0, np.repeat(to_ns(first[ids]), rows), np.repeat(to_ns(done[ids]), rows))
    return pa.Table.from_pydict({
        "cell_id": [cell.id] * len(seq), "request_id": np.repeat(ids, rows).astype(np.uint64),
        "seq": seq.astype(np.int32), "t_ns": t_ns, "n_tokens": n_tokens.astype(np.int16),
        "kind": np.where(seq == last, "done", "token").tolist(),
    }, schema=CHUNKS_SCHEMA)


def predict_cell(experiment: Experiment, cell: Cell, profiles: Mapping[str, EngineProfile], cell_dir: Path,
                 source: str = "the shipped profiles", server: Server | None = None) -> dict[str, Any]:
    """Predict one cell into ``cell_dir``; return its summary. ``server``: see ``simulate_cell``."""
    reused = None
    if server is not None and not cell.runs_in_engine:
        reused = server.prompts_sent_before(cell, cell_plan(experiment, cell))
    trace, profile, plan = simulate_cell(experiment, cell, profiles, source, server)
    check_fits_timestamps(cell, trace, profile, source)
    table = requests_table(cell, trace, profile)
    cell_dir.mkdir(parents=True, exist_ok=True)
    write_table_atomic(cell_dir / "requests.parquet", table)
    write_table_atomic(cell_dir / "chunks.parquet", chunks_table(cell, trace, profile))
    if cell.runs_in_engine:
        done_s = trace.times_s(profile.coefficients)[2]
        summary = summarize_offline(float(done_s.max()), trace.prompt_tokens.tolist(), trace.output_tokens.tolist(),
                                    cell.input_len, cell.output_len)
        summary["cell_id"] = cell.id
    else:
        from raybench.store.cells import read_cell

        requests, chunks = read_cell(cell_dir)
        # as the run summarises it (forced lengths: the engine model makes every output its max_tokens)
        summary = summarize_cell(requests, chunks, compat=experiment.compat, target_concurrency=cell.concurrency,
                                 request_rate_per_s=None if math.isinf(cell.request_rate) else cell.request_rate,
                                 burstiness=cell.burstiness, goodput_slos_ms=experiment.goodput_slos_ms or None,
                                 forced_output_len=True)
        # two token chunks per request: the gap between them is no inter-chunk latency anyone saw
        summary.update({k: None for k in summary if "itl" in k and "per_token" not in k})
    # every planned request is a row of the prediction: judged like a measured cell, so resume,
    # plan --run-dir, compare and the report treat both alike
    summary.update(judge(range(len(trace.prompt_tokens)), table.column("request_id").to_pylist()).fields())
    extrapolated = profile.extrapolated(trace.regimes, experiment.model)
    summary.update(cell=cell.to_json(), raybench_version=raybench.__version__, prediction=True,
                   prompts_sent_before=None if reused is None else reused.to_json(),
                   extrapolated=None if extrapolated is None else list(extrapolated),
                   predicted_with={"profile": profile.key, "fitted_on": profile.fitted_on,
                                   "fitted_model": profile.fitted_model, "source": source,
                                   "features": plan.features.to_json(), "steps": trace.num_steps,
                                   "start_cached_tokens": trace.start_cached_tokens,
                                   "regimes": sorted(trace.regimes),
                                   "fitted_regimes": None if profile.fitted_regimes is None
                                   else list(profile.fitted_regimes)})
    write_json_atomic(cell_dir / SUMMARY_FILE, summary)
    return summary


def extrapolation_lines(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per regime the fits never saw, the cells whose prediction relies on it (empty: none does)."""
    cells: dict[str, list[str]] = {}
    for s in summaries:
        for regime in s.get("extrapolated") or ():
            cells.setdefault(regime, []).append(str(s.get("cell_id")))
    if not cells:
        return []
    total = sum(1 for s in summaries if s.get("extrapolated"))
    need = "steps, or a model," if OTHER_MODEL in cells else "steps"
    lines = [(f"{total} of {len(summaries)} cells extrapolate: their runs need {need} that no row their profile "
              "was fitted on had, so nothing measured constrains what those steps cost")]
    for regime in sorted(cells):
        names = cells[regime]
        shown = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
        count = f"{len(names)} cell" + ("s" if len(names) != 1 else "")
        lines.append(f"  {regime}, {count} ({shown}): {REGIMES.get(regime) or _other_model_line(summaries)}")
    return lines


def _other_model_line(summaries: Sequence[Mapping[str, Any]]) -> str:
    """What OTHER_MODEL means here: the profiles the marked cells used and the models they were fitted on."""
    fitted: dict[str, list[str]] = {}
    for s in summaries:
        if OTHER_MODEL in (s.get("extrapolated") or ()):
            with_ = s.get("predicted_with") or {}
            fitted.setdefault(str(with_.get("fitted_model")), []).append(str(with_.get("profile")))
    on = "; ".join(f"{', '.join(sorted(set(pairs)))} on {model}" for model, pairs in fitted.items())
    return (f"the cells' model is not the one their profiles were fitted on ({on}), and the fitted constants "
            "describe that model's kernels; fit profiles on this model's results (raybench calibrate) and pass "
            "them with --profiles")


def resent_prompt_lines(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The cells a run would flag prompts_sent_before, per server (empty: none)."""
    flagged: dict[str, list[str]] = {}
    for s in summaries:
        if (s.get("prompts_sent_before") or {}).get("flagged"):
            flagged.setdefault(str((s.get("cell") or {}).get("backend")), []).append(str(s.get("cell_id")))
    lines = []
    for backend, ids in flagged.items():
        shown = ", ".join(ids[:2]) + (", ..." if len(ids) > 2 else "")
        lines.append(f"{backend}: {len(ids)} cell{'s' if len(ids) != 1 else ''} ({shown}) send prompts that earlier "
                     "cells sent this server, which keeps a prefix cache and is not reset between cells: a run flags "
                     "them (prompts_sent_before), as their TTFT would measure the cache; reset_cache=True on the "
                     "backend measures each cell on its own")
    return lines


def predict_run(experiment: Experiment, cells: Sequence[Cell], out_root: Path, *, profiles_path: str | None = None,
                report: bool = True) -> tuple[RunDir, list[dict[str, Any]]]:
    """Predict ``cells`` into a new run directory under ``out_root``; returns it and the summaries.
    What would stop a cell stops the prediction before anything is written (``check_cell``)."""
    from raybench.report.build import is_run_dir

    if is_run_dir(out_root):  # RunDir.create would nest the prediction inside that run
        raise ConfigError(f"--out {out_root} is a run directory; --out takes the root that run directories go "
                          f"under (e.g. runs), and the prediction goes to ROOT/{experiment.name}-prediction/STAMP")
    try:
        profiles = load_profiles(profiles_path)
    except SimConfigError as err:
        raise ConfigError(f"--profiles: {err}") from err
    source = profiles_path or "the shipped profiles"
    for cell in cells:
        check_cell(experiment, cell, profiles, source)
    run_dir = RunDir.create(out_root, f"{experiment.name}-prediction")
    # a new directory, but a `raybench run --run-dir` of it must not write beside the prediction
    with run_dir.writing():
        return run_dir, _predict_into(run_dir, experiment, cells, profiles, source, report=report)


def _predict_into(run_dir: RunDir, experiment: Experiment, cells: Sequence[Cell], profiles: Mapping[str, EngineProfile],
                  source: str, *, report: bool) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    servers = {b.name: Server(b, experiment.warmup_requests) for b in experiment.backends}
    predicted = {c.id: predict_cell(experiment, c, profiles, run_dir.cell_dir(c.id), source, servers[c.backend])
                 for c in server_order(experiment, cells)}
    summaries = [predicted[c.id] for c in cells]
    write_json_atomic(run_dir.plan_json, {"experiment": experiment.name, "prediction": True,
                                          "cells": [c.to_json() for c in cells]})
    write_json_atomic(run_dir.env_json, {"prediction": True, "raybench_version": raybench.__version__,
                                         "profiles": source, "model": experiment.model,
                                         "servers": {b.name: {"simulator": launch_record(experiment, b)}
                                                     for b in experiment.backends},
                                         "predict_s": round(time.perf_counter() - t0, 3)})
    write_table_atomic(run_dir.summary_parquet, summary_frame(summaries).to_arrow())
    if report:
        from raybench.report.build import build_report

        build_report(run_dir.path, images=False, drilldowns=False)
    return summaries
