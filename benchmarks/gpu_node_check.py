"""Checks raybench's server lifecycle on a real GPU machine (one GPU, no network, no vLLM/SGLang).

    python benchmarks/gpu_node_check.py            # about a minute; prints PASS/FAIL lines
    python benchmarks/gpu_node_check.py --fake-gpus 1   # dry run on a machine without a GPU

What it checks, with the built-in simulator standing in for the inference server:
1. Ray on this machine detects the GPU(s) and their accelerator type.
2. A ServerActor asking for ``num_gpus=1`` gets GPU id(s) from Ray, its server process inherits
   ``CUDA_VISIBLE_DEVICES`` (or ``HIP_VISIBLE_DEVICES``) set to those ids, and it runs on this node.
3. A tiny experiment runs end to end: one online cell against that server, then one offline
   engine cell whose EngineActor takes the same GPU once the server has given it back.
   An experiment's ``Hardware(name="H200")`` (Ray's own ``accelerator_type`` resource) passes the
   pre-run hardware check and places a server on this node; a GPU this node lacks is refused.
4. Offline engine mode for vLLM fails with a message naming the missing package and the node.
5. Nothing is left: no simulator server and no watchdog survives the run.
Exit status 0 when every check passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MARK_VAR = "RAYBENCH_GPU_CHECK_MARK"
MODEL = "deepseek-ai/DeepSeek-R1"
results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def marked_pids(mark: str) -> list[int]:
    needle = f"{MARK_VAR}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def process_env(pid: int) -> dict[str, str]:
    raw = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def smi_gpu_count() -> int | None:
    for tool, args in (("nvidia-smi", ["-L"]), ("rocm-smi", ["--showid"])):
        if shutil.which(tool):
            out = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU") or "GPU[" in line) or None
    return None


def connect(fake_gpus: int | None) -> None:
    from raybench import cluster

    if fake_gpus is None:
        cluster.connect(None)
        return
    os.environ[cluster.LOOPBACK_ENV] = "0"
    import ray

    ray.init(address="local", namespace=cluster.NAMESPACE, num_gpus=fake_gpus,
             resources={"accelerator_type:FAKE": 1}, logging_level="WARNING")


def main(argv: list[str]) -> int:
    t_start = time.monotonic()
    os.environ.pop("RAY_ADDRESS", None)
    fake_gpus = int(argv[argv.index("--fake-gpus") + 1]) if "--fake-gpus" in argv else None
    from raybench import cluster

    connect(fake_gpus)
    import ray

    mark = uuid.uuid4().hex
    try:
        # 1. what Ray detected
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        types = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
        print(f"INFO ray resources: GPU={gpus:g} accelerator_type={types or 'none'} CPU={resources.get('CPU', 0):g}")
        smi = smi_gpu_count()
        check("ray detects the GPU", gpus >= 1, f"{gpus:g} GPU(s), smi reports {smi}")
        if smi is not None:
            check("ray's GPU count matches nvidia-smi/rocm-smi", int(gpus) == smi, f"{gpus:g} vs {smi}")
        check("ray reports an accelerator type", bool(types), ", ".join(types) or "none")

        # 2. a ServerActor with num_gpus=1
        try:
            check_server_actor(mark)
        except Exception as err:  # noqa: BLE001 (a check script reports, it does not crash)
            check("ServerActor with num_gpus=1", False, repr(err)[:300])
        # 3. a tiny experiment: one online cell on the server, one engine cell on the same GPU after it
        try:
            check_experiment(mark)
        except Exception as err:  # noqa: BLE001
            check("tiny experiment", False, repr(err)[:300])
        try:
            check_hardware_placement(mark, types)
        except Exception as err:  # noqa: BLE001
            check("Hardware placement by accelerator type", False, repr(err)[:300])
        # 4. engine mode without vLLM installed
        try:
            check_engine_without_vllm()
        except Exception as err:  # noqa: BLE001
            check("missing vLLM is reported", False, repr(err)[:300])
    finally:
        cluster.disconnect()

    # 5. nothing left behind
    deadline = time.monotonic() + 10
    while marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    check("no server or watchdog left after teardown", not marked_pids(mark), f"left: {marked_pids(mark)}")
    failed = [name for name, ok, _ in results if not ok]
    print(f"{'PASS' if not failed else 'FAIL'} gpu_node_check: {len(results) - len(failed)}/{len(results)} checks "
          f"in {time.monotonic() - t_start:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def sim_backend(mark: str):
    from raybench.backends import Placement, SimBackend

    return SimBackend(name="sim-gpu", timing="fixed", ttft_ms=20, itl_ms=5, placement=Placement(num_gpus=1),
                      env={MARK_VAR: mark})


def check_server_actor(mark: str) -> None:
    import ray

    from raybench.backends.server_actor import ServerHandle

    backend = sim_backend(mark)
    log_dir = Path(tempfile.mkdtemp(prefix="raybench-gpu-check-"))
    handle = ServerHandle(backend, model=MODEL, log_path=log_dir / "sim-gpu.log")
    t0 = time.monotonic()
    try:
        info = handle.start()
        check("ServerActor started the server", True, f"{info.url} in {time.monotonic() - t0:.1f} s, pid {info.pid}")
        check("ServerActor runs on this node", info.node_id == ray.get_runtime_context().get_node_id(), info.node_ip)
        check("ServerActor got one GPU id from Ray", len(info.gpu_ids) == 1, f"gpu_ids={info.gpu_ids}")
        var = "HIP_VISIBLE_DEVICES" if "HIP_VISIBLE_DEVICES" in info.visible_devices else "CUDA_VISIBLE_DEVICES"
        actor_visible = info.visible_devices.get(var)
        check(f"actor's {var} is its GPU id", actor_visible == ",".join(info.gpu_ids), f"{var}={actor_visible}")
        server_visible = process_env(info.pid).get(var)
        check(f"server process inherits {var}", server_visible == actor_visible, f"{var}={server_visible}")
    finally:
        handle.stop()
    check("server stopped with its ServerActor", not marked_pids(mark), f"left: {marked_pids(mark)}")


def check_experiment(mark: str) -> None:
    """One online cell on the GPU-placed server, then one engine cell on the GPU it gave back."""
    from raybench.experiment import Experiment, Offline, Online
    from raybench.runner import Runner, RunOptions
    from raybench.store.rundir import RunDir

    experiment = Experiment(
        name="gpu-node-check", model=MODEL, backends=(sim_backend(mark),),
        online=(Online(concurrency=(4,), input_len=64, output_len=16, num_prompts=8),),
        offline=(Offline(batch_sizes=(8,), input_len=64, output_len=16),),
    )
    run_dir = RunDir.create(Path(tempfile.mkdtemp(prefix="raybench-gpu-check-")), "runs")
    t0 = time.monotonic()
    summaries = Runner(experiment, run_dir, RunOptions(), report=lambda line: None).run()
    online = next(s for s in summaries if "completed" in s)
    offline = next(s for s in summaries if "elapsed_s" in s)
    check("online cell against the GPU-placed server", online["completed"] == 8 and online["failed"] == 0,
          f"{online['completed']} ok, {online['failed']} failed, wall {time.monotonic() - t0:.1f} s")
    check("offline engine cell after the server gave the GPU back",
          offline["num_requests"] == 8 and offline["total_output_tokens"] == 8 * 16,
          f"{offline['num_requests']} requests, {offline['total_output_tokens']} output tokens")
    log = run_dir.server_log("sim-gpu")
    check("server log in the run dir", log.is_file() and "listening" in log.read_text(), str(log))


def check_hardware_placement(mark: str, types: list[str]) -> None:
    """Hardware(name=...) as an experiment file writes it: checked against the cluster, then placed."""
    import dataclasses

    import ray

    from raybench.backends import Placement, VLLMBackend
    from raybench.backends.server_actor import ServerHandle
    from raybench.errors import ConfigError
    from raybench.experiment import RAY_ACCELERATOR_TYPES, Experiment, Hardware, Online
    from raybench.plan import check_hardware

    if not types:
        check("Hardware placement by accelerator type", False, "Ray reports no accelerator type")
        return
    names = {ray_type: name for name, ray_type in RAY_ACCELERATOR_TYPES.items()}
    hardware = Hardware(name=names.get(types[0], types[0]), count=1)
    sweep = Online(concurrency=(1,), input_len=8, output_len=4, num_prompts=1)
    experiment = Experiment(name="hw", model=MODEL, backends=(VLLMBackend(name="vllm", tp=1),),
                            hardware={"vllm": hardware}, online=(sweep,))
    check_hardware(experiment, ray.cluster_resources())
    check("hardware check passes for this node's GPU", True,
          f"{hardware.name} -> {experiment.backends[0].actor_options()}")
    absent = Experiment(name="hw", model=MODEL, backends=(VLLMBackend(name="vllm", tp=1),),
                        hardware={"vllm": Hardware(name="B300", count=1)}, online=(sweep,))
    try:
        check_hardware(absent, ray.cluster_resources())
        check("a GPU this node lacks is refused", False, "B300 passed the check")
    except ConfigError as err:
        check("a GPU this node lacks is refused", "Ray detects as 'B300'" in str(err), str(err)[:160])
    backend = dataclasses.replace(sim_backend(mark), name="sim-hw",
                                  placement=Placement(num_gpus=1, resources=hardware.ray_resources))
    handle = ServerHandle(backend, model=MODEL, log_path=Path(tempfile.mkdtemp(prefix="raybench-gpu-check-")) / "hw.log")
    try:
        info = handle.start()
        check("server placed by accelerator type runs on this node",
              info.node_id == ray.get_runtime_context().get_node_id() and len(info.gpu_ids) == 1,
              f"resources {backend.placement.resources}, gpu_ids={info.gpu_ids}")
    finally:
        handle.stop()


def check_engine_without_vllm() -> None:
    from raybench.backends import VLLMBackend
    from raybench.backends.engine_actor import run_offline_engine
    from raybench.errors import BackendError
    from raybench.workloads import RandomWorkload

    specs = RandomWorkload(num_prompts=1, input_len=8, output_len=4, seed=0).build(range(1))
    try:
        run_offline_engine(VLLMBackend(tp=1), model=MODEL, specs=specs)
    except BackendError as err:
        message = str(err)
        check("missing vLLM is reported with package and node", "'vllm'" in message and "on node" in message,
              message[:160])
    else:
        check("missing vLLM is reported", False, "vllm is installed here: nothing to check")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
