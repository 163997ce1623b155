"""``ServerActor``: one backend's server on the node Ray picked, from start to a sure teardown.

    driver                                   GPU node
    ServerHandle.start() ── creates ──►      ServerActor (num_gpus / {"H200": 8})
      log pump thread ◄── read_log ──        ServerHost: ServerProcess(argv, own process group)
      servers/<name>.log                       + watchdog (kills the group if the actor dies)

The actor reserves the backend's GPUs or custom resources (while Ray finds it no room, the
driver says so every ``wait_report_s`` and gives up after the backend's ``place_timeout_s``;
the server's own start-up is not counted), binds the server to the node's IP on a free port,
waits for readiness under the backend's deadline, and answers a failure with the last 50 lines
of the server's log. Its log lives on the GPU node and is pulled into the driver's run dir
while the server runs. Stopping is SIGTERM, then SIGKILL of the whole group after
``stop_grace_s``; a container is removed too. ``guard.ServerGuard`` makes the driver stop
every server whatever ends the run; the watchdog covers the actor dying unasked.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from raybench.backends.base import BackendKind, ProcessBackend
from raybench.backends.process import ServerProcess, free_port, log_tail
from raybench.backends.watchdog import release_watchdog, start_watchdog
from raybench.errors import BackendError
from raybench.priority import current as current_niceness
from raybench.priority import run_at_normal_priority

log = logging.getLogger(__name__)

LOG_CHUNK_BYTES = 4 * 2**20
STARTUP_LOG_BYTES = 64 * 2**20  # what the backend reads of the log once ready (vLLM's start-up is far less)
_PUMP_INTERVAL_S = 1.0
_CALL_TIMEOUT_S = 60.0
_WAIT_REPORT_S = 30.0  # a line this often while the server waits for room: no silent hang
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_VISIBLE_DEVICE_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


@dataclass(frozen=True, kw_only=True)
class ServerInfo:
    """Where a started server runs and what it was started with."""

    name: str
    kind: str
    url: str
    model: str  # the name /v1/models lists (requests carry it: ProcessBackend.with_listed_model)
    node_id: str
    node_ip: str
    pid: int
    gpu_ids: tuple[str, ...]
    visible_devices: dict[str, str]  # CUDA_/HIP_VISIBLE_DEVICES as the server inherits them
    argv: tuple[str, ...]
    container: str | None = None
    niceness: int = 0  # the server's CPU niceness (it inherits the actor's; Ray's workers start at 15)
    from_log: dict[str, str | None] = field(default_factory=dict)  # what its log says it runs (ProcessBackend.read_startup_log)
    warnings: tuple[str, ...] = ()  # where its log contradicts the settings, one line each


class ServerHost:
    """The ServerActor's logic, without Ray: start, read the log, stop. Runs on the server's node."""

    def __init__(self, backend: ProcessBackend, *, model: str, node_id: str, node_ip: str,
                 gpu_ids: tuple[str, ...] = (), log_label: str | None = None) -> None:
        self.backend = backend
        self.model = model
        self.node_id = node_id
        self.node_ip = node_ip
        self.gpu_ids = tuple(str(g) for g in gpu_ids)
        self._dir = Path(tempfile.mkdtemp(prefix="raybench-server-"))
        self.log_path = self._dir / "server.log"
        self.log_path.touch()
        self.log_label = log_label or str(self.log_path)  # how errors name the log (the driver's copy)
        self._lock = threading.Lock()
        self._process: ServerProcess | None = None
        self._watchdog_fd: int | None = None
        self._container: list[str] | None = None  # the command that removes it
        self._stopped = False

    def start(self) -> ServerInfo:
        b = self.backend
        bind = b.host if b.host is not None else self.node_ip
        url_host = self.node_ip if bind in _WILDCARD_HOSTS else bind
        port = free_port(url_host)
        spec = b.launch_spec(model=self.model, host=bind, port=port, python=sys.executable, gpu_ids=self.gpu_ids)
        remove = self._ray_only_env(spec.env)
        visible = {k: os.environ[k] for k in _VISIBLE_DEVICE_VARS if k in os.environ and k not in remove}
        names = b.served_model_names(self.model)
        process = ServerProcess(
            name=b.name, argv=spec.argv, base_url=f"http://{url_host}:{port}", model=names[0], aliases=names[1:],
            log_path=self.log_path, env=spec.env, env_remove=remove, ready_timeout_s=b.ready_timeout_s,
            stop_grace_s=b.stop_grace_s,
        )
        niceness = current_niceness()
        with self.log_path.open("a") as log:
            log.write(f"raybench: starting {b.kind.value} on node {self.node_ip} (GPUs {','.join(self.gpu_ids) or 'none'}):"
                      f" {' '.join(spec.argv)}\n")
            if niceness > 0:
                log.write(f"raybench: the server runs at niceness {niceness} (Ray's worker default, which this actor "
                          "could not lower): start the node with RAY_worker_niceness=0\n")
        with self._lock:
            if self._stopped:
                raise BackendError(f"{b.name} was stopped before it started")
            try:
                pid = process.launch()
            except BackendError as err:
                raise BackendError(f"{err} on node {self.node_ip}: is {b.kind.value} installed there and on its PATH "
                                   f"({os.environ.get('PATH', '')})? Or give the backend a container image") from err
            self._process = process
            if spec.container_name and b.container is not None:
                self._container = b.container.remove_argv(spec.container_name)
            self._watchdog_fd = start_watchdog(pgid=pid, grace_s=b.stop_grace_s, remove_argv=self._container or (),
                                               env=b.server_env())
        try:
            process.wait_ready()
        except BackendError as err:
            raise BackendError(f"[node {self.node_ip}] " + str(err).replace(str(self.log_path), self.log_label)) from err
        findings = b.read_startup_log(self.read_log(0, STARTUP_LOG_BYTES).decode(errors="replace"))
        return ServerInfo(
            name=b.name, kind=b.kind.value, url=process.base_url, model=process.model, node_id=self.node_id,
            node_ip=self.node_ip, pid=pid, gpu_ids=self.gpu_ids, visible_devices=visible, argv=tuple(spec.argv),
            container=spec.container_name, niceness=niceness, from_log=dict(findings.facts), warnings=findings.warnings,
        )

    def _ray_only_env(self, env: dict[str, str] | Any) -> tuple[str, ...]:
        """Variables a Ray worker has and a server started by hand would not; the backend's env wins.

        Ray sets OMP_NUM_THREADS=1 in workers with no CPU reserved (the engines pick their own
        thread counts), and, with no GPU reserved, the visible-devices variable to "" (a real
        backend placed with num_gpus=0 manages its node's GPUs itself; the simulator needs none).
        """
        remove = []
        if "OMP_NUM_THREADS" not in env:
            remove.append("OMP_NUM_THREADS")
        var = self.backend.platform.visible_devices_env
        if not self.gpu_ids and self.backend.kind is not BackendKind.SIM and os.environ.get(var) == "" and var not in env:
            remove.append(var)
        return tuple(remove)

    def read_log(self, offset: int, max_bytes: int = LOG_CHUNK_BYTES) -> bytes:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read(max_bytes)
        except FileNotFoundError:
            return b""

    def poll(self) -> int | None:
        """The server's exit code if it has exited, else None."""
        process = self._process
        return None if process is None else process.poll()

    def tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> int | None:
        """SIGTERM the group, SIGKILL it after the grace period, remove the container; idempotent."""
        with self._lock:
            self._stopped = True
            process, self._process = self._process, None
            fd, self._watchdog_fd = self._watchdog_fd, None
            container, self._container = self._container, None
        code = process.stop() if process is not None else None
        if container:
            subprocess.run(container, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60, check=False)
        if fd is not None:
            release_watchdog(fd)
        return code

    def cleanup(self) -> None:
        """Delete the node-local log once the driver has pulled all of it."""
        shutil.rmtree(self._dir, ignore_errors=True)


class _ServerActor:
    """The Ray face of ServerHost. Threaded: read_log and stop answer while start waits."""

    def __init__(self, backend: ProcessBackend, model: str, log_label: str) -> None:
        run_at_normal_priority()  # the server inherits the actor's niceness
        context = ray.get_runtime_context()
        gpu_ids = tuple(context.get_accelerator_ids().get("GPU", ()))
        self.host = ServerHost(backend, model=model, node_id=context.get_node_id(),
                               node_ip=ray.util.get_node_ip_address(), gpu_ids=gpu_ids, log_label=log_label)

    def placed(self) -> str:
        """Answers once Ray has placed and built the actor: from then on only the server's start-up is left."""
        return self.host.node_ip

    def start(self) -> ServerInfo | str:
        """The server's info once ready, or the error (with the log's tail) as one message."""
        try:
            return self.host.start()
        except BackendError as err:
            self.host.stop()
            return str(err)
        except Exception as err:  # noqa: BLE001 (one message to the driver, not a remote traceback)
            self.host.stop()
            return f"{self.host.backend.name} could not be started on node {self.host.node_ip}: {type(err).__name__}: {err}"

    def read_log(self, offset: int, max_bytes: int = LOG_CHUNK_BYTES) -> bytes:
        return self.host.read_log(offset, max_bytes)

    def poll(self) -> int | None:
        return self.host.poll()

    def tail(self) -> str:
        return self.host.tail()

    def stop(self) -> int | None:
        return self.host.stop()

    def cleanup(self) -> None:
        self.host.cleanup()


ServerActor = ray.remote(max_restarts=0, max_concurrency=4)(_ServerActor)


class _LogPump:
    """Appends the server's node-local log to the driver's copy, in a background thread."""

    def __init__(self, actor: Any, path: Path) -> None:
        self.actor = actor
        self.path = path
        self.offset = 0
        self._stop = threading.Event()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._thread = threading.Thread(target=self._run, name=f"raybench-log:{path.name}", daemon=True)
        self._thread.start()

    def _pull(self) -> int:
        data = ray.get(self.actor.read_log.remote(self.offset), timeout=_CALL_TIMEOUT_S)
        if data:
            self._file.write(data)
            self._file.flush()
            self.offset += len(data)
        return len(data)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                full = self._pull() >= LOG_CHUNK_BYTES
            except GetTimeoutError:
                # the actor still waits for a node (GPUs busy with another job): its log starts once it runs
                continue
            except Exception:  # noqa: BLE001 (actor lost or Ray shut down: finish() says what is left)
                return
            if not full:
                self._stop.wait(_PUMP_INTERVAL_S)

    def finish(self, pull: bool = True) -> None:
        """Stop the thread, then pull whatever is left (unless the actor is already unreachable)."""
        self._stop.set()
        self._thread.join()
        try:
            while pull and self._pull():
                pass
        except (RayActorError, GetTimeoutError):
            pass
        self._file.close()


class ServerHandle:
    """The driver's side of one ServerActor: start it, pull its log, check it, stop it."""

    def __init__(self, backend: ProcessBackend, *, model: str, log_path: Path,
                 on_wait: Callable[[str], None] | None = None, wait_report_s: float = _WAIT_REPORT_S) -> None:
        self.backend = backend
        self.model = model
        self.log_path = log_path
        self.info: ServerInfo | None = None
        # told every wait_report_s while Ray finds the actor no room (GPUs held by another job)
        self.on_wait = on_wait or (lambda line: log.warning("%s", line))
        self.wait_report_s = wait_report_s
        self._actor: Any = None
        self._pump: _LogPump | None = None
        self._placed = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self.info is None:
            raise BackendError(f"{self.backend.name} is not running")
        return self.info.url

    def start(self) -> ServerInfo:
        """Place the actor, start the server, wait until ready; BackendError with the log's tail if not."""
        check_placement(self.backend)
        name = f"raybench:server:{self.backend.name}:{uuid.uuid4().hex[:6]}"
        with self._lock:
            self._actor = actor = ServerActor.options(name=name, **self.backend.actor_options()).remote(
                self.backend, self.model, str(self.log_path))
            self._pump = _LogPump(actor, self.log_path)
        try:
            self._wait_placed(actor)
            # asked only once placed: an actor given up while it waited never started a server
            result = ray.get(actor.start.remote())
        except RayActorError as err:
            self.stop()
            raise BackendError(f"the ServerActor of {self.backend.name} died while starting: {err}") from err
        except BackendError:  # no room in time: the pending actor must not take the GPUs later
            self.stop()
            raise
        if isinstance(result, str):
            self.stop()
            raise BackendError(result)
        self.info = result
        return result

    def _wait_placed(self, actor: Any) -> None:
        """Return once Ray has placed ``actor``; a line every ``wait_report_s`` until then, and a
        BackendError after the backend's ``place_timeout_s``."""
        b = self.backend
        ref = actor.placed.remote()
        t0 = time.monotonic()
        while True:
            left_s = b.place_timeout_s - (time.monotonic() - t0)
            ready, _ = ray.wait([ref], timeout=max(0.0, min(self.wait_report_s, left_s)))
            if ready:
                ray.get(ref)  # RayActorError where the actor died instead of starting
                with self._lock:
                    self._placed = True
                return
            waited_s = time.monotonic() - t0
            want = _wanted_resources(b)
            free = _free_resources(want)
            if waited_s >= b.place_timeout_s:
                raise BackendError(
                    f"{b.name}: Ray found no room for its server in {waited_s:.0f} s: it needs {want or 'nothing'} "
                    f"on one node, and free/total in the cluster is {free}; {_what_to_do(want)}, "
                    "or raise place_timeout_s")
            self.on_wait(f"  {b.name}: waiting {waited_s:.0f} s for a node with {want or 'room'} for its server "
                         f"(free/total now: {free}); giving up after {b.place_timeout_s:g} s")

    def check_alive(self, during: str) -> None:
        """BackendError with the log's tail if the server has exited (it crashed during ``during``)."""
        if self._actor is None:
            return
        try:
            code = ray.get(self._actor.poll.remote(), timeout=_CALL_TIMEOUT_S)
            tail = ray.get(self._actor.tail.remote(), timeout=_CALL_TIMEOUT_S) if code is not None else ""
        except (RayActorError, GetTimeoutError) as err:
            raise BackendError(f"the ServerActor of {self.backend.name} was lost during {during}: {err}") from err
        if code is not None:
            raise BackendError(f"{self.backend.name} exited with code {code} during {during}; "
                               f"last lines of {self.log_path}:\n{tail}")

    def stop(self) -> None:
        """Stop the server and the actor; safe to call twice, from a signal handler's unwinding too."""
        with self._lock:
            actor, self._actor = self._actor, None
            pump, self._pump = self._pump, None
            placed = self._placed
        if actor is None:
            return
        # Ray gone: its actors went with it, and their watchdogs did the rest. Never placed: no server
        # was started, and a call would wait for a node the actor never got
        if not ray.is_initialized() or not placed:
            if ray.is_initialized():
                ray.kill(actor, no_restart=True)
            if pump is not None:
                pump.finish(pull=False)
            return
        try:
            ray.get(actor.stop.remote(), timeout=self.backend.stop_grace_s + _CALL_TIMEOUT_S)
        except (RayActorError, GetTimeoutError):
            pass  # the actor is gone or stuck: killing it below fires the watchdog
        finally:
            if pump is not None:
                pump.finish()
            try:
                ray.get(actor.cleanup.remote(), timeout=_CALL_TIMEOUT_S)
            except (RayActorError, GetTimeoutError):
                pass
            ray.kill(actor, no_restart=True)


def _wanted_resources(backend: ProcessBackend) -> dict[str, float]:
    """Every resource actor_options() asks for: a CPU count no node has leaves the actor pending too."""
    want = {"GPU": float(backend.reserved_gpus), "CPU": float(backend.placement.num_cpus),
            **{k: float(v) for k, v in backend.placement.resources.items()}}
    return {k: v for k, v in want.items() if v > 0}


def _free_resources(want: dict[str, float]) -> str:
    """``GPU=0/8, h200-pool=0/1``: free of total in the whole cluster, for what ``want`` names."""
    keys = list(want) or ["GPU", "CPU"]
    free, total = ray.available_resources(), ray.cluster_resources()
    return ", ".join(f"{k}={free.get(k, 0.0):g}/{total.get(k, 0.0):g}" for k in keys)


def _what_to_do(want: dict[str, float]) -> str:
    """Advice for the resources the cluster as a whole has too few of free, or for why none is short."""
    free = ray.available_resources()
    short = [k for k, v in want.items() if free.get(k, 0.0) < v]
    held = "another server or Ray job holds them (`ray status`, `ray list actors` show which)"
    if not short:
        # free in all but not on one node, or the actor's worker still starting (a runtime_env being set up)
        return ("the cluster has them free, but not on one node, or Ray is still starting the server's worker "
                "(a runtime_env being set up); `ray status` shows which")
    advice = []
    if "GPU" in short:
        advice.append("free those GPUs, lower the server's GPUs (tensor parallel size, placement=)")
    if "CPU" in short:
        advice.append("free CPUs or lower placement num_cpus")
    custom = [k for k in short if k not in ("GPU", "CPU")]
    if custom:
        advice.append(f"free {', '.join(custom)} or give placement= another resource")
    todo = "; ".join(advice)
    return f"{held} ({', '.join(short)} short). {todo[0].upper()}{todo[1:]}, add a node"


def check_placement(backend: ProcessBackend) -> None:
    """Fail at once when no node could ever hold the server, instead of waiting forever for one."""
    want = _wanted_resources(backend)
    if not want:
        return
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(res.get(k, 0.0) >= v for k, v in want.items()) for res in nodes):
        return
    offered = "; ".join(
        ", ".join(f"{k}={v:g}" for k, v in sorted(res.items()) if k in ("GPU", "CPU") or not k.startswith(("node:", "memory", "object_store")))
        for res in nodes
    )
    raise BackendError(f"{backend.name} needs {want} on one node, and no node of this cluster has that "
                       f"(nodes offer: {offered or 'nothing'}); change placement= or add a node")
