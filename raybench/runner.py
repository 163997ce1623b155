"""Drives an experiment on a Ray cluster: servers up, cells in order, results stored, servers down.

The driver owns the run directory: load generators send their rows here while a cell runs,
and each cell's summary is written when the cell completes, so an interrupted run keeps
every cell it finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.ipc

import raybench
from raybench.analysis.lateness import DEFAULT_LATE_SEND_THRESHOLD_MS
from raybench.analysis.workload import turn_fields
from raybench.analysis.summary import format_summary_table, summarize_cell, summarize_offline, summary_frame
from raybench.backends import admin
from raybench.backends.base import BackendKind, ProcessBackend
from raybench.backends.guard import ServerGuard
from raybench.backends.server_actor import ServerHandle
from raybench.capacity import ClientCapacity, PoolSize, client_capacity, size_pool
from raybench.errors import BackendError, RunError, StorageError
from raybench.environment import run_environment
from raybench.executor import CellExecutor, CellRun
from raybench.experiment import Backend, Cell, Experiment, ExternalBackend, Mode
from raybench.loadgen.client import ClientConfig, sent_parameters
from raybench.loadgen.clock import ClockDrift, estimate_anchor
from raybench.loadgen.generator import ClientCheck
from raybench.loadgen.pool import LoadGenPool, PoolResult
from raybench.loadgen.preflight import check_server
from raybench.plan import check_resume, run_settings, schedule_for, workload_for
from raybench.prompting import PromptSource, oov_hint, prompt_sources
from raybench.search import SEARCH_FILE, Probe, bisect, format_result, judge as judge_search
from raybench.store.cells import (
    CHUNKS_FILE,
    REQUESTS_FILE,
    SUMMARY_FILE,
    CellWriter,
    read_cell,
    recorded_requests,
    set_aside,
)
from raybench.store.outcome import CellOutcome, OutcomeKind, judge
from raybench.store.metadata import (
    redact_argv,
)
from raybench.store.rundir import RunDir, storage_fix, write_json_atomic, write_table_atomic
from raybench.store.schema import CHUNKS_SCHEMA
from raybench.telemetry.progress import ProgressDisplay
from raybench.telemetry.scraper import ServerMetricsRecording
from raybench.telemetry.server_metrics import SERVER_METRICS_FILE
from raybench.warmup import warm_up
from raybench.workloads import Workload
from raybench.workloads.reuse import PromptHistory, PromptReuse, prompt_sample
from raybench.workloads.tokenizer import WORD_TOKENIZER

Report = Callable[[str], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run, as opposed to what (the experiment)."""

    actors: int | None = None  # None: one per 256 streams
    streams_per_actor: int = 256
    num_cpus_per_actor: float = 0.25
    request_timeout_s: float = 3600.0
    no_answer_hint_s: float | None = 60.0  # a request silent this long gets a line naming the timeouts
    cell_timeout_s: float | None = None
    max_replacements: int | None = None  # lost load generators replaced per cell; None: one per actor
    client_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    cell_ids: frozenset[str] | None = None  # run only these cells (raybench run --only); None: all
    experiment_file: Path | None = None  # recorded in env.json: its text, digest and git commit
    # each backend's prompt source, where the caller resolved them already (the CLI does, before Ray
    # starts); None: the runner resolves them
    prompt_sources: dict[str, PromptSource] | None = None
    invocation: dict[str, Any] = dataclasses.field(default_factory=dict)  # the command line and its overrides
    late_send_threshold_ms: float = DEFAULT_LATE_SEND_THRESHOLD_MS  # p99 send lateness beyond it flags a cell


def check_workloads(cells: list[Cell]) -> None:
    """Read every file a cell replays, before any server starts: a bad file is one line, not a failed run."""
    seen: set[str] = set()
    for cell in cells:
        if cell.dataset_path is not None and cell.dataset_path not in seen:
            seen.add(cell.dataset_path)
            # the format and the filters, counted in words here; the run counts with its tokenizer
            workload_for(cell, tokenizer=WORD_TOKENIZER, text=False)


class _Server:
    """A backend's running server: its URL, its ServerActor (None for an external URL)."""

    def __init__(self, backend: Backend, url: str, handle: ServerHandle | None = None,
                 version: str | None = None) -> None:
        self.backend, self.url, self.handle = backend, url, handle
        self.name = backend.name
        # what it was sent since it started, where it may keep a prefix cache that no reset empties
        self.history = PromptHistory() if backend.may_cache_prefixes(version) and not backend.reset_cache else None
        # the simulator keeps its own log of what it sent: saved beside what the client measured
        self.ground_truth = backend.kind is BackendKind.SIM

    def save_ground_truth(self, cell_dir: Path) -> None:
        if not self.ground_truth:
            return
        for table in ("chunks", "requests"):
            with urllib.request.urlopen(f"{self.url}/sim/ground_truth?table={table}", timeout=60) as r:
                data = pyarrow.ipc.open_stream(r.read()).read_all()
            write_table_atomic(cell_dir / f"server_{table}.parquet", data)
        self.reset_ground_truth()

    def reset_ground_truth(self) -> None:
        if self.ground_truth:
            urllib.request.urlopen(urllib.request.Request(f"{self.url}/sim/reset", method="POST"), timeout=10).close()

    def reset_cache(self) -> None:
        """Between cells, when the backend asks for it (the seed flushed SGLang before each run)."""
        if not self.backend.reset_cache:
            return
        path = self.backend.cache_reset if isinstance(self.backend, ExternalBackend) else self.backend.endpoints.cache_reset
        admin.reset_cache(self.url, path)

    def prompts_sent_before(self, cell_id: str, workload: Workload) -> PromptReuse | None:
        """What of the cell's first prompts the server was sent by earlier cells (and may have
        cached); the cell's own prompts join that history."""
        if self.history is None:
            return None
        return self.history.check_and_add(cell_id, prompt_sample(workload))

    def check_alive(self, during: str) -> None:
        if self.handle is not None:
            self.handle.check_alive(during)


class Runner:
    def __init__(self, experiment: Experiment, run_dir: RunDir, options: RunOptions, report: Report = print) -> None:
        self.experiment = experiment
        self.run_dir = run_dir
        self.options = options
        self.report = report
        # a ProgressDisplay passed as report draws live; any other callable gets plain lines
        self.progress = report if isinstance(report, ProgressDisplay) else ProgressDisplay(report=report)

    def run(self) -> list[dict[str, Any]]:
        """Run every cell not yet complete in the run dir; return every cell's summary.

        The run dir is locked for the whole run (``RunDir.writing``): a second writer stops at once.
        """
        with self.run_dir.writing():
            try:
                return self._run_plan()
            except StorageError as err:  # disk full: say what is kept and how to go on, in one line
                raise StorageError(f"{err}; {self._kept_and_resume(err)}", path=err.path) from None

    def _kept_and_resume(self, err: StorageError) -> str:
        kept = len(self.run_dir.cell_ids())
        source = self.options.experiment_file
        again = (f"raybench run {source} --run-dir {self.run_dir.path}" if source is not None
                 else "run the command again")
        return (f"kept: {kept} complete cell{'s' if kept != 1 else ''} in {self.run_dir.path} "
                f"(the cell being written is not); {storage_fix(err)}, then: {again}")

    def _run_plan(self) -> list[dict[str, Any]]:
        cells = self.experiment.cells()
        if self.options.cell_ids is not None:
            cells = [c for c in cells if c.id in self.options.cell_ids]
        # tokenizers resolve before any server starts: a named one that does not load stops the run here
        self.sources = self._prompt_sources(cells)
        self.settings = {name: run_settings(source.record, self.experiment.sampling.to_json(),
                                            self.experiment.backend(name).timing_identity())
                         for name, source in self.sources.items()}
        done = check_resume(cells, self.run_dir.completed_cells(), self.settings)
        write_json_atomic(self.run_dir.plan_json, {"experiment": self.experiment.name, "cells": self._run_dir_plan(cells)})
        self.run_dir.keep_previous_env()
        self.env = run_environment(self.experiment, cells, experiment_file=self.options.experiment_file,
                                   invocation=self.options.invocation)
        self.env["prompts"] = {name: source.record for name, source in self.sources.items()}
        self.env["sampling"] = self.experiment.sampling.to_json()
        write_json_atomic(self.run_dir.env_json, self.env)
        self.progress.plan([(c.id, c.num_prompts or 0) for c in cells], done=sorted(done))
        check_client_capacity([c for c in cells if c.id not in done], self.options)
        try:
            self._run_cells(cells, done)
        except BaseException:
            # a run stopped by an error or Ctrl-C still tables the cells that completed; a second
            # error here (the disk still full) would hide the first, which is the one to report
            with contextlib.suppress(Exception):
                if self.run_dir.summaries():
                    self._write_summary_table()
            raise
        summaries = [
            json.loads((self.run_dir.cell_dir(c.id) / SUMMARY_FILE).read_text())
            for c in cells
            if (self.run_dir.cell_dir(c.id) / SUMMARY_FILE).is_file()
        ]
        self._write_summary_table()
        self.progress.finish(summaries)
        return summaries

    def _run_cells(self, cells: list[Cell], done: set[str]) -> None:
        with ServerGuard() as guard:
            for backend in self.experiment.backends:
                todo = [c for c in cells if c.backend == backend.name and c.id not in done]
                # engine cells need the GPUs the server holds: they run once it is down
                engine = [c for c in todo if c.runs_in_engine]
                served = [c for c in todo if not c.runs_in_engine]
                if self.experiment.search is not None:
                    self._search(backend, [c for c in cells if c.backend == backend.name], done, guard)
                elif served:
                    with self._server(backend, guard) as server:
                        for cell in served:
                            self._run_cell(cell, _HttpCells(self, server))
                for cell in engine:
                    self._run_cell(cell, _EngineCells(self))

    def _write_summary_table(self) -> None:
        # every cell of the run dir, not only this invocation's (an --only or --resume adds to earlier ones)
        write_table_atomic(self.run_dir.summary_parquet, summary_frame(self.run_dir.summaries()).to_arrow())

    def _search(self, backend: Backend, cells: list[Cell], done: set[str], guard: ServerGuard) -> None:
        """Bisect the backend's grid cells for the SLOs; the server starts only if a probe must run."""
        search, slos = self.experiment.search, self.experiment.goodput_slos_ms
        over = search.over
        grid = sorted(cells, key=lambda c: getattr(c, over))
        with contextlib.ExitStack() as stack:
            server: list[_Server] = []

            def probe(i: int) -> Probe:
                cell = grid[i]
                if cell.id not in done:
                    if not server:
                        server.append(stack.enter_context(self._server(backend, guard)))
                    self._run_cell(cell, _HttpCells(self, server[0]))
                summary = json.loads((self.run_dir.cell_dir(cell.id) / SUMMARY_FILE).read_text())
                return judge_search(summary, value=getattr(cell, over), attainment=search.attainment)

            result = dataclasses.replace(bisect([getattr(c, over) for c in grid], probe), over=over)
        line = format_result(result, slos, search.attainment)
        self.report(f"{backend.name}: {line}")
        path = self.run_dir.path / SEARCH_FILE
        record = json.loads(path.read_text()) if path.is_file() else {}
        record[backend.name] = {**result.to_json(), "slos_ms": slos, "attainment": search.attainment, "line": line}
        write_json_atomic(path, record)

    def _prompt_sources(self, cells: list[Cell]) -> dict[str, PromptSource]:
        given = self.options.prompt_sources
        if given is not None and {c.backend for c in cells} <= given.keys():
            return given
        chat = "chat" in self.options.client_overrides.get("endpoint", ClientConfig.endpoint)
        return prompt_sources(self.experiment, {c.backend for c in cells}, chat=chat, report=self.report)

    def _run_dir_plan(self, cells: list[Cell]) -> list[dict[str, Any]]:
        """Every cell the run dir is meant to hold: an earlier invocation's (say, --only mode=online) and this one's."""
        planned = [self._cell_record(c) for c in cells]
        if not self.run_dir.plan_json.is_file():
            return planned
        try:
            earlier = json.loads(self.run_dir.plan_json.read_text()).get("cells", [])
        except ValueError as err:
            raise RunError(f"{self.run_dir.plan_json} is unreadable ({err}): move it away to start the plan afresh") from err
        ours = {c["id"] for c in planned}
        return [c for c in earlier if c.get("id") not in ours] + planned

    def _cell_record(self, cell: Cell) -> dict[str, Any]:
        """A cell's settings as plan.json and its summary.json keep them, for a resume to compare."""
        return {**cell.to_json(), **self.settings.get(cell.backend, {})}

    @contextlib.contextmanager
    def _server(self, backend: Backend, guard: ServerGuard) -> Iterator[_Server]:
        model = self.experiment.model
        if isinstance(backend, ExternalBackend):
            check_server(backend.url, model)
            yield _Server(backend, backend.url.rstrip("/"))
            return
        log_path = self.run_dir.server_log(backend.name)
        handle = ServerHandle(backend, model=model, log_path=log_path, on_wait=self.report)
        guard.add(handle)
        self.report(f"starting {backend.name} (log: {log_path})")
        try:
            info = handle.start()
            self.report(f"  {backend.name} ready at {info.url} on node {info.node_ip}")
            for warning in info.warnings:
                self.report(f"WARNING {backend.name}: {warning}")
            record = {**dataclasses.asdict(info), "version": admin.server_version(info.url, backend.endpoints.version)}
            record["argv"] = redact_argv(record["argv"])
            write_json_atomic(log_path.with_suffix(".json"), record)
            self.env["servers"][backend.name].update(
                started=True, version=record["version"], argv=record["argv"], node_ip=info.node_ip,
                gpu_ids=list(info.gpu_ids), visible_devices=info.visible_devices)
            write_json_atomic(self.run_dir.env_json, self.env)
            # trtllm-serve may list a local checkpoint by its directory's name: requests carry what it listed
            yield _Server(backend.with_listed_model(info.model), info.url, handle, version=record["version"])
        finally:
            handle.stop()
            guard.discard(handle)

    def _client(self, server: _Server) -> ClientConfig:
        settings = {**server.backend.dialect.client_settings(), **self.experiment.sampling.client_settings(),
                    "keepalive": self.experiment.keepalive,
                    **self.options.client_overrides}
        return ClientConfig(
            base_url=server.url,
            model=server.backend.served_model(self.experiment.model),
            request_timeout_s=self.options.request_timeout_s,
            **settings,
        )

    def _run_cell(self, cell: Cell, executor: CellExecutor) -> None:
        """Run one cell and record its outcome; a cell that fails gets a summary saying why."""
        cell_dir = self.run_dir.cell_dir(cell.id)
        self.report(f"cell {cell.id}")
        earlier = set_aside(cell_dir)
        if earlier is not None:
            self.report(f"  an earlier attempt did not complete: its files moved to {earlier}; the cell runs again whole")
        t0 = time.monotonic()
        try:
            run = executor.run(cell, cell_dir)
        except (RunError, BackendError) as err:
            outcome = CellOutcome(kind=OutcomeKind.FAILED, planned_requests=cell.num_prompts or 0,
                                  recorded_requests=recorded_requests(cell_dir), reason=str(err))
            self._write_summary(cell, cell_dir, {"cell_id": cell.id}, outcome, t0)
            raise
        summary, outcome = run.summary, run.outcome
        self._write_summary(cell, cell_dir, summary, outcome, t0)
        self.report(format_summary_table(summary) if "duration" in summary else _offline_line(summary))
        if not outcome.complete:
            self.report(f"WARNING {outcome.line(cell.id)}")
        short = summary.get("short_output_requests")
        if short:
            self.report(f"WARNING cell {cell.id}: {short} successful requests stopped short of the forced output "
                        "length (the server may ignore ignore_eos/min_tokens); see short_output_requests in summary.json")
        self.progress.cell_done(cell.id)

    def _write_summary(self, cell: Cell, cell_dir: Path, summary: dict[str, Any], outcome: CellOutcome,
                       t0: float) -> None:
        summary.update(outcome.fields())
        summary["cell"] = self._cell_record(cell)
        summary["raybench_version"] = raybench.__version__
        summary["wall_s"] = round(time.monotonic() - t0, 3)
        write_json_atomic(cell_dir / SUMMARY_FILE, summary)

    def _pool_size(self, cell: Cell) -> PoolSize:
        return pool_size(cell, self.options, client_capacity())

    def _run_http_cell(self, cell: Cell, server: _Server, cell_dir: Path) -> CellRun:
        client = self._client(server)
        source = self.sources[cell.backend]
        workload = workload_for(cell, **source.workload_params())
        concurrency = cell.concurrency if cell.mode is Mode.ONLINE else cell.batch_size
        size = self._pool_size(cell)  # before the warm-up: nothing of the cell starts if it cannot run
        if size.note:
            self.report(size.note)
        labels = _metric_labels(self.experiment, cell)
        server_metrics = ServerMetricsRecording(base_url=server.url, cell_id=cell.id, labels=labels, anchor=estimate_anchor)
        pool = LoadGenPool(cell_id=cell.id, num_actors=size.actors, num_cpus_per_actor=self.options.num_cpus_per_actor,
                           labels=labels, max_replacements=self.options.max_replacements, on_wait=self.report)
        # their processes start during the warm-up, side by side, not during the cell or one after the other
        server_metrics.start()
        try:
            pool.start()
            warm_up(client, workload, self.experiment.warmup_requests, report=self.report,
                    no_answer_hint_s=self.options.no_answer_hint_s)
            server.reset_cache()
            server.reset_ground_truth()
            reused = server.prompts_sent_before(cell.id, workload)
            if reused is not None and reused.flagged:
                self.report(f"WARNING {reused.line(cell.id)}")
            schedule = schedule_for(cell, workload)
            writer = CellWriter(cell_dir)
        except BaseException:
            server_metrics.cancel()  # from the `with` below on, leaving the block stops it
            pool.cancel()  # once run() has begun, the pool kills its own
            raise
        try:
            with server_metrics:
                result = pool.run(
                    client=client, workload=workload, arrivals_s=schedule.arrivals_s, concurrency=concurrency,
                    sink=writer, slot_starts_s=schedule.slot_opens_s,
                    timeout_s=self.options.cell_timeout_s, on_progress=self.progress.cell(cell.id, workload.num_requests),
                )
        except BaseException:
            pool.cancel()  # interrupted before run() began (the scraper's start)
            writer.abort()  # the rows received so far stay as parts; the cell has no summary
            raise
        writer.close()
        if server_metrics.table is not None:
            write_table_atomic(cell_dir / SERVER_METRICS_FILE, server_metrics.table)
        server.check_alive(f"cell {cell.id}")  # a cell whose server crashed is failed: a resume reruns it
        server.save_ground_truth(cell_dir)
        outcome = judge(range(workload.num_requests), writer.request_ids, why_missing=result.why_missing())
        requests, chunks = read_cell(cell_dir)
        if requests.height == 0:
            raise RunError(f"cell {cell.id}: no request was recorded ({result.why_missing() or 'all load generators lost?'})")
        rate = None if math.isinf(cell.request_rate) else cell.request_rate
        summary = summarize_cell(
            requests, chunks, compat=self.experiment.compat, target_concurrency=concurrency,
            request_rate_per_s=rate, burstiness=cell.burstiness, goodput_slos_ms=self.experiment.goodput_slos_ms or None,
            forced_output_len=client.ignore_eos or client.send_min_tokens,
            late_send_threshold_ms=self.options.late_send_threshold_ms,
        )
        summary.update(_client_fields(result, expected=workload.num_requests, recorded=outcome.recorded_requests))
        summary["sampling"] = sent_parameters(client)
        summary["prompts"] = source.cell_record(workload, chat=client.chat)
        self._say_oov(requests, workload, summary)
        summary.update(turn_fields(requests, chunks, compat=self.experiment.compat))
        summary["workload"] = workload.describe()
        summary["prompts_sent_before"] = None if reused is None else reused.to_json()
        return CellRun(summary=summary, outcome=outcome)

    @staticmethod
    def _say_oov(requests: Any, workload: Workload, summary: dict[str, Any]) -> None:
        """Out-of-vocabulary failures: one hint for the cell (the table's last line), however many failed so."""
        for error in requests["error"].drop_nulls().to_list():
            hint = oov_hint(error, workload)
            if hint:
                summary["hint"] = f"the server rejected prompt ids{hint}"
                return

    def _run_engine_cell(self, cell: Cell, cell_dir: Path) -> CellRun:
        from raybench.backends.engine_actor import run_offline_engine

        backend = self.experiment.backend(cell.backend)
        if not isinstance(backend, ProcessBackend):
            raise RunError(f"cell {cell.id}: offline engine mode needs an in-process engine; {backend.name} has none")
        workload = workload_for(cell, **{**self.sources[cell.backend].workload_params(), "text": False})
        specs = workload.build(range(workload.num_requests))
        result = run_offline_engine(backend, model=self.experiment.model, specs=specs)
        requests = result.requests_table(cell.id, specs)
        write_table_atomic(cell_dir / REQUESTS_FILE, requests)
        # an in-process engine streams nothing: an empty chunks table keeps every cell alike
        write_table_atomic(cell_dir / CHUNKS_FILE, CHUNKS_SCHEMA.empty_table())
        summary = summarize_offline(
            result.elapsed_s, result.prompt_tokens, result.output_tokens, cell.input_len, cell.output_len
        )
        summary["cell_id"] = cell.id
        return CellRun(summary=summary,
                       outcome=judge(range(workload.num_requests), requests.column("request_id").to_pylist()))


class _HttpCells:
    """Cells run over HTTP against one running server (a ``CellExecutor``)."""

    def __init__(self, runner: Runner, server: _Server) -> None:
        self.runner, self.server = runner, server

    def run(self, cell: Cell, cell_dir: Path) -> CellRun:
        return self.runner._run_http_cell(cell, self.server, cell_dir)


class _EngineCells:
    """Offline cells run in a backend's in-process engine (a ``CellExecutor``)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def run(self, cell: Cell, cell_dir: Path) -> CellRun:
        return self.runner._run_engine_cell(cell, cell_dir)


def pool_size(cell: Cell, options: RunOptions, capacity: ClientCapacity) -> PoolSize:
    """How many load generators a cell runs on; a one-line error when the cluster cannot host its streams."""
    concurrency = cell.concurrency if cell.mode is Mode.ONLINE else cell.batch_size
    return size_pool(cell_id=cell.id, streams=min(concurrency, cell.num_prompts or concurrency), actors=options.actors,
                     streams_per_actor=options.streams_per_actor, cpus_per_actor=options.num_cpus_per_actor,
                     capacity=capacity)


def check_client_capacity(cells: list[Cell], options: RunOptions) -> None:
    """Every served cell's streams against the cluster as it is now: refused before any server starts, not an hour in."""
    capacity = client_capacity()
    for cell in cells:
        if not cell.runs_in_engine:
            pool_size(cell, options, capacity)


def _metric_labels(experiment: Experiment, cell: Cell) -> dict[str, str]:
    """Tags on a cell's live Ray metrics (hardware stays empty until cells carry one)."""
    return {"experiment": experiment.name, "cell": cell.id, "backend": cell.backend,
            "hardware": str(getattr(cell, "hardware", None) or "")}


def _client_fields(result: PoolResult, *, expected: int, recorded: int) -> dict[str, Any]:
    actors = []
    verdicts = set()
    for a in result.actors:
        check = a.self_check
        row = {"name": a.name, "node": a.node, "num_requests": a.num_requests, "concurrency": a.concurrency,
               "clock_offset_ns": a.clock_offset_ns, "clock_rtt_ns": a.clock_rtt_ns, "lost": a.lost, "error": a.error,
               "replaced_by": a.replaced_by}
        if check is not None:
            row.update(dataclasses.asdict(check))
            row["cpu_share"] = round(check.cpu_share, 3)
            row["client_check"] = check.verdict().value
            verdicts.add(check.verdict())
        row.update(_clock_fields(a.clock))
        actors.append(row)
    drifts = [abs(a.clock.drift_ns) for a in result.actors if a.clock is not None and a.clock.drift_ns is not None]
    # saturation outranks contention: one saturated actor is the client's own limit
    verdict = next((v for v in (ClientCheck.CLIENT_SATURATED, ClientCheck.HOST_CONTENDED) if v in verdicts),
                   ClientCheck.OK)
    return {
        "num_actors": len(result.actors),
        "actors": actors,
        "client_check": verdict.value,
        "client_saturated": verdict is ClientCheck.CLIENT_SATURATED,
        "host_contended": verdict is ClientCheck.HOST_CONTENDED,
        # how far any actor's clock moved against the driver's during the cell (anchored before and after)
        "clock_drift_max_ms": max(drifts) / 1e6 if drifts else None,
        "clock_drift_flagged": any(a.clock is not None and a.clock.flagged for a in result.actors),
        "lost_actors": len(result.lost_actors),
        "replaced_actors": sum(1 for a in result.actors if a.replaced_by is not None),
        "requests_not_recorded": expected - recorded,
        "requests_abandoned": result.abandoned_requests,  # never sent: their actor was lost and not replaced
        "timed_out": result.timed_out,
    }


def _clock_fields(clock: ClockDrift | None) -> dict[str, Any]:
    after = None if clock is None else clock.after
    return {
        "clock_offset_after_ns": None if after is None else after.offset_ns,
        "clock_rtt_after_ns": None if after is None else after.rtt_ns,
        "clock_drift_ns": None if clock is None else clock.drift_ns,
        "clock_drift_uncertainty_ns": None if clock is None else clock.uncertainty_ns,
    }


def _offline_line(summary: dict[str, Any]) -> str:
    return (
        f"  offline: {summary['num_requests']} requests in {summary['elapsed_s']:.2f} s: "
        f"{summary['requests_per_second']:.2f} req/s, {summary['tokens_per_second']:.1f} total tok/s, "
        f"{summary['output_tokens_per_s']:.1f} output tok/s"
    )
