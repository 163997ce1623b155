"""``raybench calibrate`` and the error tables of ``raybench predict --reference``.

Reference rows come from any source the report reads (``raybench.report.sources``: the seed's
published CSV, a raybench run dir, vLLM / SGLang result files). Each row is matched to the launch
settings it ran with. A raybench run records them (env.json: each server's engine, engine
features, model, GPU and GPU count, as ``predict.launch_record`` makes them), so its rows need no
matching. Other rows take the seed's servers (``raybench.backends.seed``) by default, or the
backends of an experiment file; a pair nothing matches runs with its engine's defaults. The
simulator's calibration (``raybench.sim.calibrate``) fits each engine x GPU pair on the
selected rows only.

A shared-prefix row that does not say how many groups it had is taken as the seed's: groups of
num_prompts / 10 prompts, sent in a shuffled order (``virtual.shared_prefix_requests``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from raybench.backends.base import BackendKind
from raybench.errors import ConfigError
from raybench.experiment import Backend, Experiment
from raybench.predict import engine_name, launch_features
from raybench.report.frame import ENGINE_NAMES
from raybench.sim import costmodel
from raybench.sim.calibrate import METRICS, Observation, PairFit, fit_pair, metric_vectors, predict_metrics
from raybench.sim.features import EngineFeatures, defaults
from raybench.sim.profiles import EngineProfile, uncalibrated
from raybench.sim.virtual import RequestSpec, shared_prefix_requests, simulate
from raybench.store.rundir import json_type

FILTER_KEYS = ("backend", "hardware", "mode", "concurrency", "batch_size", "input_len", "output_len", "prefix_len")
# engine names as the sources write them: raybench's cells (engine), the seed's CSV, and the
# backend names of vLLM's and SGLang's benchmark clients (dstack's trt-torch-flow among them)
_KINDS = {name: BackendKind(kind) for name, kind in ENGINE_NAMES.items()}
_MEASURED = {"throughput": "total_throughput_tokens_per_s", "ttft": "mean_ttft_ms", "tpot": "mean_tpot_ms",
             "e2e": "mean_e2e_latency_ms"}
#: what a raybench run dir adds to its rows: the launch each ran with (JSON), and the cell's shared-prefix groups
_RUN_COLUMNS = {"launch": pl.Utf8, "prompts_per_group": pl.Int64, "prompt_seed": pl.Int64}
SEED_MODEL = "deepseek-ai/DeepSeek-R1"


def seed_launches() -> list[tuple[Backend, str]]:
    """The seed's servers and their GPUs: what the published rows ran with."""
    from raybench.backends import seed

    return [(seed.SEED_SGLANG_H200, "H200"), (seed.SEED_SGLANG_MI300X, "MI300X"), (seed.SEED_VLLM_H200, "H200"),
            (seed.SEED_VLLM_H200_PREFIX, "H200"), (seed.SEED_VLLM_MI300X, "MI300X"), (seed.SEED_TRTLLM_H200, "H200")]


def experiment_launches(experiment: Experiment) -> list[tuple[Backend, str]]:
    return [(b, experiment.hardware[b.name].name) for b in experiment.backends if b.name in experiment.hardware]


def load_reference(sources: Sequence[str], *, report: Callable[[str], None] | None = None,
                   measured_only: bool = False, needs_measured: str = "calibrate fits") -> pl.DataFrame:
    """Every row of every source with a measured total throughput; ConfigError if none has one.

    A cell that did not complete is left out, as compare leaves it out, whether in its run dir or
    given as its summary.json: its numbers cover only the requests it recorded. So is a result in
    which no request completed, and cells flagged ``prompts_sent_before``: their server may have
    answered them from a prefix cache an earlier cell filled, which a row simulated on its own
    does not have. So are cells of the simulator with ``--timing zero`` or ``fixed``: their
    latencies are the simulator's settings, not an engine's. ``report`` gets one line for each,
    and one for each result kept that has failed requests.
    ``measured_only``: a source that holds predictions (raybench predict's cells) is a ConfigError,
    whose line says why by ``needs_measured`` (the command that uses measured results, and how)."""
    from raybench.report.sources import PREDICTED, read_source

    if not sources:
        raise ConfigError("--reference: give at least one source (a results file, a run dir, or 'published')")
    frames = []
    for source in sources:
        rows = read_source(source)
        frame = rows.frame
        if measured_only and frame["label"].str.ends_with(PREDICTED).any():
            raise ConfigError(f"--reference {source} holds predictions (raybench predict), not measurements: "
                              f"{needs_measured} measured results (a raybench run, a results file, or published)")
        left_out = dict(rows.left_out)
        if Path(source).is_dir():
            summaries = _cell_summaries(Path(source))
            left_out.update({**_cells_sent_before(summaries), **_cells_of_timed_simulators(Path(source), summaries)})
        for line in (*(f"left out {line}" for line in left_out.values()), *rows.marked):
            if report is not None:
                report(f"--reference {source}: {line}")
        frame = frame.filter(~pl.col("cell_id").is_in(list(left_out)))
        if Path(source).is_dir():
            frame = _with_run_launches(frame, Path(source), summaries, report)
        else:
            frame = frame.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in _RUN_COLUMNS.items()])
        usable = frame.filter(pl.col("total_throughput_tokens_per_s").is_not_null()
                              & (pl.col("total_throughput_tokens_per_s") > 0) & pl.col("hardware").is_not_null()
                              & pl.col("output_len").is_not_null() & pl.col("input_len").is_not_null())
        if usable.height == 0:
            why = f" ({len(left_out)} left out: {'; '.join(left_out.values())})" if left_out else ""
            raise ConfigError(f"--reference {source}: no usable rows (each needs hardware, input_len, output_len "
                              f"and a total throughput){why}")
        frames.append(usable)
    return pl.concat(frames, how="vertical_relaxed")


def _cells_of_timed_simulators(run_dir: Path, summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Cells served by the simulator with ``--timing zero`` or ``fixed`` (env.json keeps its command line).

    Those timings answer as fast as the simulator can, or after set delays: no engine is behind
    the numbers, so a profile fitted on them would describe none. Engine timing stays usable, and
    so do offline cells run in-process, which the simulator's engine times whatever the server's flag.
    """
    env = _read_run_json(run_dir / "env.json")
    servers = env.get("servers") if isinstance(env, dict) else None
    refused = {}
    for name, server in (servers if isinstance(servers, dict) else {}).items():
        if not isinstance(server, dict) or server.get("kind") != "sim":
            continue
        timing = _sim_timing(server.get("argv"))
        if timing != "engine":
            refused[name] = (f"with --timing {timing}: its timing measures no engine" if timing else
                             "whose timing env.json does not record, so it may measure no engine")
    out = {}
    for cell_id, summary in summaries.items():
        cell = summary.get("cell") or {}
        backend = cell.get("backend")
        if cell.get("mode") == "offline" and cell.get("offline_method") == "engine":
            continue  # the in-process offline engine always runs engine timing (engine_actor.generate_sim)
        if backend in refused:
            out[cell_id] = (f"cell {cell_id}: served by the simulator {backend} {refused[backend]}; only runs of "
                            "real servers, or of the simulator with --timing engine, can be fitted")
    return out


def _sim_timing(argv: Any) -> str | None:
    """The ``--timing`` of a simulator's command line; "zero" (`raybench sim`'s default) where the flag is absent."""
    if not isinstance(argv, list):
        return None
    args = [str(a) for a in argv]
    for i, arg in enumerate(args):
        if arg == "--timing" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--timing="):
            return arg.partition("=")[2]
    return "zero"


def _cell_summaries(run_dir: Path) -> dict[str, dict[str, Any]]:
    """A run dir's cell summaries by cell id (load_source has read them all, so each is readable)."""
    summaries = (_read_run_json(path) for path in sorted(run_dir.glob("cells/*/summary.json")))
    return {str(s.get("cell_id")): s for s in summaries if isinstance(s, dict)}


def _cells_sent_before(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Cells whose prompts an earlier cell had sent to the same server, which may have cached them."""
    out = {}
    for cell_id, summary in summaries.items():
        reused = summary.get("prompts_sent_before")
        if isinstance(reused, dict) and reused.get("flagged"):
            out[cell_id] = (f"cell {cell_id}: {reused.get('share', 0):.0%} of its prompt tokens had been sent to its "
                            f"server by {', '.join(reused.get('cells') or [])} (prompts_sent_before), so its TTFT may "
                            "measure a prefix cache")
    return out


def _read_run_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return err


def _with_run_launches(frame: pl.DataFrame, run_dir: Path, summaries: Mapping[str, Mapping[str, Any]],
                       report: Callable[[str], None] | None) -> pl.DataFrame:
    """A run dir's rows with the launch each backend recorded (env.json) and their cells' prefix groups
    and seed (each summary's cell). A backend without a record (a run of an earlier raybench) is
    named on ``report``."""
    env = _read_run_json(run_dir / "env.json")
    servers = env.get("servers") if isinstance(env, dict) else None
    recorded: dict[str, dict[str, Any]] = {}
    unmodelled = set()  # servers the simulator has no engine model of (an external URL)
    for name, server in (servers if isinstance(servers, dict) else {}).items():
        record = server.get("simulator") if isinstance(server, dict) else None
        if record is not None:
            recorded[name] = _checked_launch(record, f"{run_dir / 'env.json'}: servers.{name}.simulator")
        elif isinstance(server, dict) and "simulator" in server:
            unmodelled.add(name)
    launches, groups, seeds, unrecorded = [], [], [], []
    for row in frame.iter_rows(named=True):
        record = recorded.get(row["backend"])
        mode = (record or {}).get("modes", {}).get(row["mode"])
        launches.append(json.dumps({**{k: record[k] for k in ("model", "gpu", "num_gpus")}, **mode}) if mode else None)
        if mode is None and row["backend"] not in unrecorded:
            unrecorded.append(row["backend"])
        cell = (summaries.get(row.get("cell_id")) or {}).get("cell") or {}
        groups.append(cell.get("prompts_per_group") if isinstance(cell.get("prompts_per_group"), int) else None)
        seeds.append(cell.get("seed") if isinstance(cell.get("seed"), int) else None)
    for name in unrecorded if report is not None else ():
        why = ("the simulator has no engine model of that server" if name in unmodelled else
               f"env.json is unreadable: {env}" if isinstance(env, Exception) else
               # a damaged file is no older raybench's: saying so would send the user looking for the wrong fix
               f"env.json holds a JSON {json_type(env)}, not an object" if not isinstance(env, dict) else
               "a run of an earlier raybench")
        report(f"--reference {run_dir}: env.json records no launch settings of {name} ({why}): its rows take "
               "those of the --experiment or seed server of that name, else of its engine")
    return frame.with_columns(pl.Series("launch", launches, dtype=pl.Utf8),
                              pl.Series("prompts_per_group", groups, dtype=pl.Int64),
                              pl.Series("prompt_seed", seeds, dtype=pl.Int64))


def _checked_launch(record: Any, where: str) -> dict[str, Any]:
    """A recorded launch (``predict.launch_record``), checked now so that a damaged one is an error naming it."""
    problem = _launch_problem(record)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}; restore env.json, or pass --experiment with the run's experiment "
                          "and remove that record")
    return record


def _launch_problem(record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("modes"), dict):
        return "not a launch record (model, gpu, num_gpus, modes)"
    for key in ("model", "gpu"):
        if not isinstance(record.get(key), str):
            return f"{key}={record.get(key)!r} is no name"
    if not isinstance(record.get("num_gpus"), int) or record["num_gpus"] < 1:
        return f"num_gpus={record.get('num_gpus')!r} is no GPU count"
    for mode in record["modes"].values():
        if not isinstance(mode, dict) or not isinstance(mode.get("engine"), str) \
                or not isinstance(mode.get("features"), dict):
            return "a mode without its engine and engine features"
        try:
            EngineFeatures.from_json(mode["features"])
        except ValueError as err:
            return str(err)
    return None


def parse_filter(text: str | None) -> dict[str, set[str]]:
    """``"output_len=800,concurrency=4|16|none"`` -> {"output_len": {"800"}, "concurrency": {...}}."""
    out: dict[str, set[str]] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, values = item.partition("=")
        if not sep or key.strip() not in FILTER_KEYS:
            raise ConfigError(f"--only: {item!r}: expected KEY=V1|V2 with KEY one of {', '.join(FILTER_KEYS)}")
        if "=" in values:  # no field's value holds '=': another separator (';', '&', ' ') glued two filters together
            raise ConfigError(f"--only: {item!r}: one KEY=V1|V2 per filter, filters separated by ',', "
                              "e.g. output_len=800,prefix_len=0")
        if key.strip() in out:  # a second KEY= would silently replace the first's values
            raise ConfigError(f"--only: {key.strip()} is given twice; write several values of one key as "
                              f"{key.strip()}=A|B")
        out[key.strip()] = {v.strip().lower() for v in values.split("|")}
    return out


def select_rows(frame: pl.DataFrame, only: str | None) -> pl.DataFrame:
    wanted = parse_filter(only)
    rows = [r for r in frame.iter_rows(named=True) if all(_value(r, k) in v for k, v in wanted.items())]
    if not rows:
        raise ConfigError(f"--only {only}: selects none of the {frame.height} reference rows; "
                          f"keys: {', '.join(FILTER_KEYS)}, values separated by |, 'none' for an empty field")
    return pl.DataFrame(rows, schema=frame.schema)


def _value(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "backend" and value is not None:
        return str(value).lower()
    if key == "prefix_len" and not value:
        return "0"
    return "none" if value is None else str(value).lower()


@dataclass(frozen=True, kw_only=True)
class RowSetting:
    engine: str
    gpu: str
    features: EngineFeatures
    num_gpus: int = 8
    model: str = SEED_MODEL
    #: the engine name the row gave where raybench knows no such engine (fitted as "generic"); None: known
    unknown_engine: str | None = None


def engine_kind(row: Mapping[str, Any]) -> BackendKind | None:
    """The engine a reference row ran: a raybench cell's engine column, else its backend column
    (where the seed's CSV and the clients' files name the engine); None if neither is known."""
    return _KINDS.get(str(row.get("engine") or "").lower()) or _KINDS.get(str(row.get("backend") or "").lower())


def row_setting(row: Mapping[str, Any], launches: Sequence[tuple[Backend, str]]) -> RowSetting:
    """The engine, GPU and launch features a reference row ran with: those its run recorded, else
    those of the launch in ``launches`` it matches."""
    from raybench.backends import seed
    from raybench.experiment import Mode

    if row.get("launch"):
        launch = json.loads(row["launch"])
        return RowSetting(engine=launch["engine"], gpu=launch["gpu"], num_gpus=launch["num_gpus"],
                          model=launch.get("model") or SEED_MODEL, features=EngineFeatures.from_json(launch["features"]))
    kind = engine_kind(row)
    mode = Mode.OFFLINE if row["mode"] == "offline" else Mode.ONLINE
    gpu = row["hardware"]
    prefix = bool(row.get("prefix_len"))
    on_gpu = [b for b, hw in launches if hw == gpu]
    # a raybench cell names the backend it ran (vllm-h200); the seed's rows and the other tools'
    # files name only the engine, whose launches on that GPU are the candidates
    matches = [b for b in on_gpu if b.name == row["backend"]] or [b for b in on_gpu if kind is not None and b.kind is kind]
    if matches:
        # the launch with prefix caching on for prefix rows (the seed ran a second vLLM command)
        matches.sort(key=lambda b: bool(getattr(b, "enable_prefix_caching", False)) != prefix)
        backend = matches[0]
        if mode is Mode.OFFLINE and backend in seed.SEED_BACKENDS and backend.kind is BackendKind.VLLM:
            backend = replace(backend, max_model_len=backend.max_model_len or seed.SEED_OFFLINE_MAX_MODEL_LEN)
        engine = engine_name(backend, mode)
        return RowSetting(engine=engine, gpu=gpu, features=launch_features(backend, engine, 8))
    engine = kind.value if kind is not None else "generic"
    if kind is BackendKind.TRTLLM and mode is Mode.OFFLINE:
        engine = "trtllm-engine"
    unknown = None if kind is not None else str(row.get("engine") or row.get("backend") or "")
    return RowSetting(engine=engine, gpu=gpu, features=defaults(engine), unknown_engine=unknown)


def row_label(row: Mapping[str, Any]) -> str:
    size = f"c{row['concurrency']}" if row["mode"] != "offline" else f"b{row['batch_size']}"
    prefix = f" prefix{row['prefix_len']}" if row.get("prefix_len") else ""
    return f"{row['hardware']}-{row['backend']} {row['mode']} {size} i{row['input_len']} o{row['output_len']}{prefix}"


def row_requests(row: Mapping[str, Any]) -> tuple[RequestSpec, ...]:
    n = int(row.get("num_prompts") or row.get("batch_size") or row.get("completed") or 1)
    inp, out, prefix = int(row["input_len"]), int(row["output_len"]), int(row.get("prefix_len") or 0)
    counted = counted_prompt_tokens(row)
    if counted is not None and counted != inp:
        # text prompts re-encode to more tokens than were drawn (the seed's shared-prefix prompts:
        # 3275 for 3200); the prefix is assumed to grow in the same proportion as the whole
        prefix = round(prefix * counted / inp)
        inp = counted
    if prefix:  # sent shuffled, as the seed's client (SGLang's generated-shared-prefix) sent them
        per_group = row.get("prompts_per_group") or max(1, n // 10)
        return tuple(shared_prefix_requests(n, inp, prefix, out, per_group, row.get("prompt_seed") or 0))
    return (RequestSpec(prompt_tokens=inp, output_tokens=out),) * n


def counted_prompt_tokens(row: Mapping[str, Any]) -> int | None:
    """Mean prompt tokens of a row as the server counted them (input tokens / completed), where
    the row records them; None where it does not."""
    values = [row.get(k) for k in ("input_throughput_tokens_per_s", "duration_s", "completed")]
    if any(v is None for v in values):
        return None
    rate, duration, done = (float(v) for v in values)
    if not all(math.isfinite(v) and v > 0 for v in (rate, duration, done)):
        return None
    return round(rate * duration / done)


def observation(row: Mapping[str, Any], setting: RowSetting, model: costmodel.ModelProfile,
                profile: EngineProfile | None = None) -> Observation:
    gpu = costmodel.GPUS.get(setting.gpu)
    if gpu is None:
        raise ConfigError.unknown("hardware of reference row " + row_label(row), setting.gpu, tuple(costmodel.GPUS))
    base = profile or uncalibrated(setting.engine, setting.gpu)

    def build(reserve_gib: float) -> costmodel.CostModel:
        p = EngineProfile(**{**base.__dict__, "reserve_gib": reserve_gib})
        return costmodel.build(model, gpu, setting.num_gpus, p, setting.features)

    requests = row_requests(row)
    conc = int(row.get("concurrency") or row.get("batch_size") or len(requests))
    measured = {m: row.get(col) for m, col in _MEASURED.items()}
    return Observation(engine=setting.engine, gpu=setting.gpu, label=row_label(row), requests=requests,
                       model=model.name, concurrency=conc, throughput_tokens_per_s=float(measured["throughput"]),
                       ttft_ms=measured["ttft"], tpot_ms=measured["tpot"], e2e_ms=measured["e2e"], build=build)


def observations(frame: pl.DataFrame, launches: Sequence[tuple[Backend, str]], *,
                 report: Callable[[str], None] | None = None) -> list[Observation]:
    """The rows as the fit sees them. ``report`` gets one line per engine name no launch and no
    known engine matches: its rows run with the generic engine's defaults, which a typo
    (``vLLM-0.7``) would otherwise leave unnoticed, its pair never used for the engine meant."""
    out = []
    unknown: dict[tuple[str, str], int] = {}  # (engine name, GPU) -> rows
    for row in frame.iter_rows(named=True):
        setting = row_setting(row, launches)
        model = costmodel.find_model(setting.model)
        if model is None:
            names = ", ".join(m.name for m in costmodel.MODELS)
            raise ConfigError(f"reference row {row_label(row)} ran {setting.model!r}, which has no simulator "
                              f"model: one of {names}")
        if setting.unknown_engine is not None:
            name = (setting.unknown_engine, setting.gpu)
            unknown[name] = unknown.get(name, 0) + 1
        out.append(observation(row, setting, model))
    for (name, gpu), count in unknown.items() if report is not None else ():
        rows = f"{count} row{'s' if count != 1 else ''}"
        report(f"--reference: {rows} on {gpu} name the engine {name!r}, which raybench does not know: fitted as a "
               f"generic engine (profile generic/{gpu}, which no vllm, sglang or trtllm backend uses); known engine "
               f"names: {', '.join(sorted(_KINDS))}; or give --experiment a backend named {name!r}")
    return out


def calibrate(frame: pl.DataFrame, launches: Sequence[tuple[Backend, str]], *, fitted_on: str,
              report: Callable[[str], None] | None = None) -> list[PairFit]:
    """One fit per engine x GPU pair present in ``frame`` (already filtered); ``report``: see ``observations``."""
    obs = observations(frame, launches, report=report)
    pairs: dict[str, list[Observation]] = {}
    for o in obs:
        pairs.setdefault(o.key, []).append(o)
    fits = []
    for key in sorted(pairs):
        try:
            fits.append(fit_pair(pairs[key], fitted_on=fitted_on))
        except ValueError as err:
            raise ConfigError(f"calibrate {key}: {err}") from err
    return fits


# -- error tables ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RowError:
    pair: str
    label: str
    errors_pct: Mapping[str, float]  # signed (predicted - measured) / measured x 100
    extrapolated: tuple[str, ...] = ()  # regimes the prediction needed that its profile's fit never saw


def row_errors(pair: str, label: str, measured: Mapping[str, float | None],
               predicted: Mapping[str, float], extrapolated: Iterable[str] = ()) -> RowError:
    errors = {m: 100.0 * (predicted[m] - v) / v for m, v in measured.items()
              if v is not None and v > 0 and m in predicted and math.isfinite(predicted[m])}
    return RowError(pair=pair, label=label, errors_pct=errors, extrapolated=tuple(extrapolated))


def profiled_cost(obs: Observation, profile: EngineProfile) -> costmodel.CostModel:
    """The cost model of a row's launch under ``profile``: its KV reserve and its coefficients."""
    cost = obs.build(profile.reserve_gib)
    return costmodel.build(cost.model, cost.gpu, cost.num_gpus, profile, cost.features)


def predicted_row_error(obs: Observation, profile: EngineProfile) -> RowError:
    """One measured row predicted with ``profile`` (its KV reserve and coefficients), against the measurement."""
    cost = profiled_cost(obs, profile)
    trace = simulate(cost, obs.requests, concurrency=obs.concurrency)
    predicted = predict_metrics(metric_vectors(trace), profile.coefficients)
    measured = {"throughput": obs.throughput_tokens_per_s, "ttft": obs.ttft_ms, "tpot": obs.tpot_ms,
                "e2e": obs.e2e_ms}
    return row_errors(obs.key, obs.label, measured, predicted, profile.extrapolated(trace.regimes, obs.model) or ())


def error_table(groups: Mapping[str, Sequence[RowError]], worst: int = 8) -> str:
    """Median and max absolute % error per metric, per group, then the worst rows."""
    head = f"{'pair / set':34s} {'rows':>4s}  " + "  ".join(f"{m + ' med/max %':>17s}" for m in METRICS)
    lines = [head]
    everything: list[RowError] = []
    for name, rows in groups.items():
        if not name.startswith("ALL"):
            everything += rows
        lines.append(f"{name:34s} {len(rows):4d}  " + "  ".join(f"{_stat(rows, m):>17s}" for m in METRICS))
    ranked = sorted(((abs(e), m, r) for r in everything for m, e in r.errors_pct.items()), key=lambda t: -t[0])
    if ranked:
        lines.append("worst rows:")
        lines += [f"  {r.errors_pct[m]:+7.1f} % {m:10s} {r.label}"
                  + (f"  [extrapolated: {', '.join(r.extrapolated)}]" if r.extrapolated else "")
                  for _, m, r in ranked[:worst]]
    return "\n".join(lines)


def _stat(rows: Iterable[RowError], metric: str) -> str:
    values = [abs(r.errors_pct[metric]) for r in rows if metric in r.errors_pct]
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.0f}"


def fit_groups(fits: Sequence[PairFit]) -> dict[str, list[RowError]]:
    groups: dict[str, list[RowError]] = {}
    for fit in fits:
        groups[f"{fit.profile.key} (in-sample)"] = [
            row_errors(fit.profile.key, r.label, r.measured, r.predicted) for r in fit.rows]
    groups["ALL (in-sample)"] = [e for rows in list(groups.values()) for e in rows]
    return groups


def check_out(out: Path, references: Sequence[str]) -> None:
    """ConfigError where ``--out`` would overwrite a measured input (a ``--reference`` file, the
    bundled published results, or a file inside a ``--reference`` run directory) or any file that
    is not a profiles file, or names no file at all. Checked before the fit, which reads them."""
    from raybench.report.sources import published_csv
    from raybench.sim.config import SimConfigError
    from raybench.sim.profiles import load_profiles

    if not out.name or out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is no file name: give the profiles file to write, e.g. profiles.json")
    target = out.resolve()
    for source in references:
        path = published_csv() if source == "published" else Path(source)
        if not path.exists():
            continue
        ref = path.resolve()
        same = target == ref or (out.is_file() and path.is_file() and os.path.samefile(out, path))  # hard links
        if same or (path.is_dir() and target.is_relative_to(ref) and out.exists()):
            what = "is" if same else "is a file of"
            raise ConfigError(f"--out {out} {what} --reference {source}: writing the profiles there would replace "
                              "measured results; give another --out file")
    if out.exists():
        try:
            load_profiles(out)
        except SimConfigError:
            raise ConfigError(f"--out {out} exists and is not a profiles file: writing there would replace it; give "
                              "another --out file, or remove it first") from None


def write_profiles(fits: Sequence[PairFit], out: Path) -> None:
    from raybench.sim.profiles import dump_profiles

    try:
        dump_profiles([f.profile for f in fits], out)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write ({err.strerror or err})") from err


def _row_key(kind: str | None, row: Mapping[str, Any]) -> tuple:
    size = row.get("concurrency") if row.get("mode") != "offline" else row.get("batch_size")
    return (kind, row.get("hardware"), row.get("mode"), size, row.get("input_len"), row.get("output_len"),
            int(row.get("prefix_len") or 0))


def compare_to_reference(summaries: Sequence[Mapping[str, Any]], reference: pl.DataFrame) -> dict[str, list[RowError]]:
    """Predicted cells against the reference rows of the same engine, GPU and workload, per pair."""
    from raybench.report.sources import raybench_row

    refs: dict[tuple, Mapping[str, Any]] = {}
    for r in reference.iter_rows(named=True):
        kind = engine_kind(r)
        refs.setdefault(_row_key(kind.value if kind else None, r), r)
    groups: dict[str, list[RowError]] = {}
    for summary in summaries:
        row = raybench_row(summary, run="prediction")
        ref = refs.get(_row_key(summary["cell"].get("engine"), row))
        if ref is None:
            continue
        pair = summary.get("predicted_with", {}).get("profile", "?")
        measured = {m: ref.get(col) for m, col in _MEASURED.items()}
        predicted = {m: row.get(col) for m, col in _MEASURED.items() if row.get(col) is not None}
        groups.setdefault(pair, []).append(row_errors(pair, row_label(ref), measured, predicted,
                                                      summary.get("extrapolated") or ()))
    if not groups:
        raise ConfigError("--reference: no predicted cell matches a reference row (same engine, GPU, mode, "
                          "concurrency or batch, input, output and prefix length)")
    groups = dict(sorted(groups.items()))
    groups["ALL"] = [e for rows in list(groups.values()) for e in rows]
    return groups
