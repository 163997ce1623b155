"""What a run would do, without running it: select cells, override sizes, swap in the simulator.

``raybench plan`` prints the cells; ``raybench run`` takes the same ``--only``, ``--num-prompts``
and ``--simulate`` so a plan shows exactly the cells a run with those flags would run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from raybench.errors import ConfigError
from raybench.experiment import Cell, Experiment, Hardware, Mode, Online, SimBackend
from raybench.loadgen.arrivals import ArrivalProcess, cell_schedule, slot_starts
from raybench.store.outcome import CellOutcome
from raybench.store.rundir import safe_name
from raybench.workloads import RandomWorkload, SharedPrefixWorkload, Workload
from raybench.workloads.datasets import load_dataset
from raybench.workloads.multiturn import MultiTurnWorkload
from raybench.workloads.trace import TraceWorkload

# the plan fields --only may select on, and the JSON every plan row carries
PLAN_FIELDS = ("id", "backend", "engine", "hardware", "mode", "concurrency", "batch_size", "input_len",
               "output_len", "prefix_len", "num_prompts", "repeat")


def parse_only(text: str | None) -> dict[str, str]:
    """``"backend=vllm,hardware=H200"`` -> {"backend": "vllm", "hardware": "H200"}; a value may
    list alternatives, ``concurrency=4|32`` (as ``raybench calibrate --only`` takes them)."""
    selection: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in PLAN_FIELDS:
            raise ConfigError(f"--only: {item!r}: expected KEY=VALUE with KEY one of {', '.join(PLAN_FIELDS)}")
        if "=" in value:  # no field's value holds '=': another separator (';', '&', ' ') glued two filters together
            raise ConfigError(f"--only: {item!r}: one KEY=VALUE per filter, filters separated by ',', "
                              "e.g. backend=vllm,hardware=H200")
        if key in selection:  # keeping either value alone would drop cells the user asked for
            both = "|".join(dict.fromkeys([selection[key], value.strip()]))
            raise ConfigError(f"--only: {key} is given twice ({key}={selection[key]}, {item}): give several values "
                              f"as one, separated by |, e.g. {key}={both} (quoted: the shell reads | as a pipe)")
        selection[key] = value.strip()
    return selection


def _matches(row: Mapping[str, Any], key: str, value: str) -> bool:
    return any(_matches_one(row, key, alternative.strip()) for alternative in value.split("|"))


def _matches_one(row: Mapping[str, Any], key: str, value: str) -> bool:
    have = row.get(key)
    if key == "backend":  # a backend is named by its name (vllm-h200) or its kind (vllm)
        return value in (row.get("backend"), row.get("engine"))
    return str(have).lower() == value.lower() if have is not None else value.lower() in ("none", "null")


def select(cells: Iterable[Cell], only: Mapping[str, str]) -> list[Cell]:
    return [c for c in cells if all(_matches(plan_row(c), k, v) for k, v in only.items())]


def plan_row(cell: Cell, done: bool | None = None, outcome: CellOutcome | None = None) -> dict[str, Any]:
    """One plan row; with a run dir, ``done`` (complete there) and the cell's ``outcome`` and why."""
    d = cell.to_json()
    row = {k: d.get(k) for k in PLAN_FIELDS}
    # online cells have no batch; offline cells have no concurrency cap and no shared prefix
    # (online random cells keep prefix_len 0, as the seed's results do)
    if row["mode"] == "offline":
        row["concurrency"] = row["prefix_len"] = None
    else:
        row["batch_size"] = None
    if done is not None:
        row["done"] = done
        row["outcome"] = outcome.kind.value if outcome is not None else "not run"
        row["outcome_reason"] = outcome.reason if outcome is not None else None
    return row


def with_num_prompts(experiment: Experiment, num_prompts: int | None) -> Experiment:
    """Online sweeps with ``num_prompts`` requests (prefix sweeps: prompts per group scaled to match)."""
    if num_prompts is None:
        return experiment

    def one(s: Online) -> Online:
        if s.dataset == "prefix":
            return dataclasses.replace(s, prompts_per_group=max(1, num_prompts // s.num_groups))
        if s.dataset == "multiturn":  # whole sessions: as many as fit in num_prompts requests
            return dataclasses.replace(s, num_prompts=max(1, num_prompts // s.num_turns))
        return dataclasses.replace(s, num_prompts=num_prompts)

    return dataclasses.replace(experiment, online=tuple(one(s) for s in experiment.online))


def with_prompts(experiment: Experiment, *, tokenizer: str | None = None, tokenizer_revision: str | None = None,
                 token_id_range: tuple[int, int] | None = None) -> Experiment:
    """The experiment's prompt source overridden (``--tokenizer``, ``--tokenizer-revision``, ``--token-id-range``).

    A tokenizer replaces the file's token_id_range and a range replaces the file's tokenizer:
    the flag names the whole prompt source, as the experiment's fields would.
    """
    if tokenizer is not None and token_id_range is not None:
        raise ConfigError("give --tokenizer or --token-id-range, not both (with a tokenizer, ids come from its vocabulary)")
    changes: dict[str, Any] = {}
    if tokenizer is not None:
        changes.update(tokenizer=tokenizer, token_id_range=None)
    if token_id_range is not None:
        changes.update(token_id_range=token_id_range, tokenizer=None, tokenizer_revision=None)
    if tokenizer_revision is not None:
        changes["tokenizer_revision"] = tokenizer_revision
    return dataclasses.replace(experiment, **changes) if changes else experiment


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a cell's requests may go: each one's release (s from the cell start, by request id)
    and, under a concurrency ramp, when each slot opens (None: all at the start)."""

    arrivals_s: np.ndarray
    slot_opens_s: np.ndarray | None


def schedule_for(cell: Cell, workload: Workload) -> Schedule:
    """The cell's schedule, as the run releases its requests (and ``raybench predict`` replays it):
    a ramp with a request rate ramps the rate, one without ramps the concurrency cap."""
    rate_ramp = cell.ramp_up if cell.ramp_up is not None and not math.isinf(cell.request_rate) else None
    arrivals = cell_schedule(workload, ArrivalProcess(
        rate_per_s=cell.request_rate, burstiness=cell.burstiness, seed=cell.seed, ramp=rate_ramp,
        ramp_start_per_s=cell.ramp_start if rate_ramp else None))
    opens = None
    if cell.ramp_up is not None and rate_ramp is None:
        concurrency = cell.concurrency if cell.mode is Mode.ONLINE else cell.batch_size
        opens = slot_starts(concurrency, int(cell.ramp_start), cell.ramp_up_s, cell.ramp_up)
    return Schedule(arrivals, opens)


def workload_for(cell: Cell, seed: int | None = None, **prompt_params: Any) -> Workload:
    """The cell's workload; ``prompt_params`` (PromptSource.workload_params) pick tokenizer or id range."""
    seed = cell.seed if seed is None else seed
    if cell.dataset == "trace":
        return TraceWorkload.from_file(cell.dataset_path, num_prompts=cell.num_prompts, time_scale=cell.time_scale,
                                       output_len=cell.output_len if cell.force_output_len else None,
                                       seed=seed, **prompt_params)
    if cell.dataset in ("sharegpt", "custom"):
        return load_dataset(cell.dataset, cell.dataset_path, num_prompts=cell.num_prompts, seed=seed,
                            output_len=cell.output_len if cell.force_output_len else None,
                            default_output_len=cell.output_len, **prompt_params)
    if cell.dataset == "multiturn":
        return MultiTurnWorkload(num_sessions=cell.num_prompts // cell.num_turns, num_turns=cell.num_turns,
                                 input_len=cell.input_len, output_len=cell.output_len,
                                 think_time_s=cell.think_time_s, seed=seed, **prompt_params)
    if cell.dataset == "prefix":
        return SharedPrefixWorkload(
            num_groups=cell.num_groups, prompts_per_group=cell.prompts_per_group,
            prefix_len=cell.prefix_len, question_len=cell.input_len - cell.prefix_len,
            output_len=cell.output_len, seed=seed, **prompt_params,
        )
    return RandomWorkload(
        num_prompts=cell.num_prompts, input_len=cell.input_len, output_len=cell.output_len,
        range_ratio=cell.range_ratio, seed=seed, **prompt_params,
    )


def with_repeats(experiment: Experiment, repeats: int | None) -> Experiment:
    return experiment if repeats is None else dataclasses.replace(experiment, repeats=repeats)


def simulated(experiment: Experiment, timing: str | None = None) -> Experiment:
    """Every server replaced by the simulator with its hardware's GPU and its backend's profile.

    ``timing``: None or "engine" runs in real time, as long as the real servers would take;
    "zero" answers as fast as the client reads, to check a whole plan end to end in minutes.
    Simulators the file already has keep their timing unless one is given.
    """
    from raybench.experiment import Mode
    from raybench.predict import engine_name, launch_features
    from raybench.sim import costmodel

    sims = []
    for b in experiment.backends:
        if isinstance(b, SimBackend):
            sims.append(b if timing is None else dataclasses.replace(b, timing=timing))
            continue
        hw = experiment.hardware.get(b.name)
        gpu = hw.name if hw is not None and hw.name in costmodel.GPUS else "H200"
        num_gpus = hw.count if hw else 8
        try:  # the engine and launch features the server would run with (as raybench predict uses)
            engine = engine_name(b, Mode.ONLINE)
            features = launch_features(b, engine, num_gpus)
        except ConfigError:  # an external server: nothing known about it
            engine, features = SimBackend.profile, None
        sims.append(SimBackend(name=b.name, gpu=gpu, num_gpus=num_gpus, profile=engine, engine_features=features,
                               timing=timing or "engine", reset_cache=b.reset_cache))
    return dataclasses.replace(experiment, backends=tuple(sims))


def format_plan_table(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = [c for c in (*PLAN_FIELDS, "outcome", "estimate") if any(c in r for r in rows)]
    if all(r.get("repeat", 1) == 1 for r in rows):  # the column says something only when there are repeats
        cols = [c for c in cols if c != "repeat"]
    text = [[("-" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max([len(c), *(len(t[i]) for t in text)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in text]
    return "\n".join(lines)


def resolve(experiment: Experiment, *, only: str | None = None, num_prompts: int | None = None,
            repeats: int | None = None, simulate: bool = False, sim_timing: str | None = None,
            prompts: Mapping[str, Any] | None = None) -> tuple[Experiment, list[Cell]]:
    """The experiment a run uses and the cells it runs, in order.

    Cells are selected on the experiment as written, so ``backend=vllm`` still names the vLLM
    servers after ``simulate`` has replaced them (cell ids do not change). ``prompts``: the
    overrides :func:`with_prompts` takes (``--tokenizer`` and the like; they change no cell).
    """
    if sim_timing is not None and not simulate:
        raise ConfigError(f"--sim-timing {sim_timing} applies to simulated servers: add --simulate")
    experiment = with_repeats(with_num_prompts(experiment, num_prompts), repeats)
    experiment = with_prompts(experiment, **(prompts or {}))
    selection = parse_only(only)
    ids = {c.id for c in select(experiment.cells(), selection)}
    if not ids:
        raise ConfigError(f"--only {only}: no cell matches; see `raybench plan` for the cells and their fields")
    if simulate:
        experiment = simulated(experiment, sim_timing)
    check_simulators(experiment)
    return experiment, [c for c in experiment.cells() if c.id in ids]


def check_simulators(experiment: Experiment) -> None:
    """Before Ray or any server starts: every simulator can serve the experiment's model as configured.

    Not in ``Experiment`` itself: the time estimate models an unprofiled real server through a
    simulator and must get "unknown", not an error.
    """
    for b in experiment.backends:
        if isinstance(b, SimBackend):
            b.check_model(experiment.model)


def check_hardware(experiment: Experiment, cluster_resources: Mapping[str, float],
                   backends: Iterable[str] | None = None) -> None:
    """Before any server starts: the cluster has the hardware and the GPUs each server is placed on.

    ``backends``: the names of the backends that will run (``--only backend=vllm`` on an H200-only
    cluster must not trip over the MI300X servers); None: all. Simulated servers reserve
    nothing, so a ``--simulate`` run passes on a laptop.
    """
    gpus = cluster_resources.get("GPU", 0)
    types = sorted(k.split(":", 1)[1] for k in cluster_resources if k.startswith("accelerator_type:"))
    names = None if backends is None else set(backends)
    for b in experiment.backends:
        if names is not None and b.name not in names:
            continue
        hw = experiment.hardware.get(b.name)
        needed = getattr(b, "reserved_gpus", 0)
        if hw is not None and set(hw.ray_resources) <= set(b.placement.resources):
            if hw.resource is not None:
                _check_custom_resource(b.name, hw, cluster_resources)
            elif cluster_resources.get(f"accelerator_type:{hw.accelerator_type}", 0) <= 0:
                raise ConfigError(
                    f"hardware {hw.name!r} of backend {b.name!r} needs a node whose GPUs Ray detects as "
                    f"{hw.accelerator_type!r}, but the cluster has none (accelerator types: {', '.join(types) or 'none'}; "
                    f"GPUs: {gpus:g}). Run on {hw.name} nodes, set Hardware(accelerator_type=...) to the type "
                    "`ray status` shows, Hardware(resource=...) to place by a custom resource, or use --simulate"
                )
        if needed > gpus:
            raise ConfigError(
                f"backend {b.name!r} needs {needed} GPUs for one server, but the cluster has {gpus:g}. "
                "Add GPU nodes, lower its tensor/pipeline parallelism, or use --simulate"
            )


def _check_custom_resource(backend: str, hw: Hardware, cluster_resources: Mapping[str, float]) -> None:
    have = cluster_resources.get(hw.resource, 0)
    if have < hw.count:
        available = sorted(k for k in cluster_resources if not k.startswith("node:") and "group" not in k)
        raise ConfigError(
            f"hardware {hw.name!r} of backend {backend!r} needs the Ray resource {hw.resource!r} x {hw.count}, "
            f"but the cluster has {have:g}; its resources: {', '.join(available)}. Start the nodes with "
            f"ray start --resources '{{\"{hw.resource}\": {hw.count}}}', or use --simulate"
        )


# settings that may differ between the run that wrote a cell and a resumed one (nothing measured depends on them)
_RESUME_IGNORES = frozenset({"id"})


def prompt_identity(record: Mapping[str, Any]) -> str:
    """A prompt source's record (PromptSource.record) as one comparable line.

    Names what decides the prompts' ids (tokenizer name, revision, content hash, vocabulary; or
    the id range and whether it was a fallback) and leaves out what does not (where a tokenizer
    was read from, the wording of why the model's own failed to load).
    """
    tokenizer = record.get("tokenizer")
    if isinstance(tokenizer, Mapping):
        if tokenizer.get("kind") == "words":
            return f"the simulator's word count (ids {tokenizer.get('sample_range')})"
        facts = [f"{k} {tokenizer[k]}" for k in ("revision", "tokenizer_json_sha256", "vocab_size") if tokenizer.get(k) is not None]
        return f"tokenizer {tokenizer.get('name')}" + (f" ({', '.join(facts)})" if facts else "")
    low, high = record.get("token_id_range") or (None, None)
    said = f"token ids {low}..{high - 1}" if isinstance(high, int) else "token ids"
    tried = record.get("tried")
    return f"{said} (fallback: tokenizer {tried} did not load)" if tried else said


def run_settings(prompts: Mapping[str, Any], sampling: Mapping[str, Any],
                 simulator: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a backend's cells share besides their Cell fields, recorded beside them in plan.json and
    summary.json so a resume compares it too: how prompts were made, what every request sampled with,
    and for a simulated server its timing (``Backend.timing_identity``)."""
    settings: dict[str, Any] = {"prompts": prompt_identity(prompts), "sampling": dict(sampling)}
    if simulator is not None:
        settings["simulator"] = dict(simulator)
    return settings


def _differences(key: str, there: Any, now: Any) -> list[str]:
    if isinstance(there, Mapping) and isinstance(now, Mapping):  # sampling: name the parameter that changed
        return [d for k in dict.fromkeys([*there, *now]) for d in _differences(f"{key}.{k}", there.get(k), now.get(k))]
    return [] if there == now else [f"{key}={there!r} there, {now!r} now"]


def check_resume(cells: Sequence[Cell], completed: Mapping[str, Mapping[str, Any]],
                 settings: Mapping[str, Mapping[str, Any]] | None = None) -> set[str]:
    """Ids of the cells already complete in a run dir; refuses a plan whose settings differ from theirs.

    ``completed`` holds only complete cells (``RunDir.completed_cells``): an incomplete or failed
    cell is run again, whole, whatever settings its earlier attempt had (that attempt is set aside).
    ``settings``: backend name -> its :func:`run_settings`, compared too where the cell recorded them
    (cells written before they were recorded are compared on their Cell fields only).

    A cell id does not spell out every setting (num_prompts, the seed, simulated or not, the
    tokenizer, the sampling), so without this a resume with other flags would silently mix, say,
    40-prompt and 500-prompt cells, or greedy and sampled ones.
    """
    done: set[str] = set()
    for cell in cells:
        stored = completed.get(safe_name(cell.id))
        if stored is None:
            continue
        planned = {**cell.to_json(), **(settings or {}).get(cell.backend, {})}
        diffs = [d for k in planned if k not in _RESUME_IGNORES and k in stored
                 for d in _differences(k, stored[k], planned[k])]
        if diffs:
            raise ConfigError(
                f"cell {cell.id} is complete in the run directory with other settings ({'; '.join(diffs)}). "
                "Resume with the options the run was started with (see its env.json \"options\"), or start a new run directory"
            )
        done.add(cell.id)
    return done
