"""ServerActor lifecycle on a two-node cluster: a GPU node (8 H200s as Ray sees them) and a client node.

The servers are fakes under the real names (``vllm``, ``trtllm-serve``, ``sglang.launch_server``,
tests/fakes) that parse the real flags and serve the simulator, misbehaving on request.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from raybench import cluster as rb_cluster
from raybench.backends import Placement, SGLangBackend, TRTLLMBackend, VLLMBackend
from raybench.backends.engine_actor import run_offline_engine
from raybench.backends.server_actor import ServerHandle
from raybench.errors import BackendError
from raybench.experiment import Experiment, Hardware, Online
from raybench.plan import check_hardware
from raybench.priority import RAY_WORKER_NICENESS_ENV
from raybench.runner import Runner, RunOptions
from raybench.store.rundir import RunDir
from raybench.workloads import RandomWorkload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from fakebin import MARK_VAR, install, marked_pids  # noqa: E402
from upstream_servers import install as install_upstream  # noqa: E402

MODEL = "deepseek-ai/DeepSeek-R1"
H200 = Placement(resources={"H200": 8})
_SERVER_WORDS = ("fake_servers", "raybench sim", "raybench.backends.watchdog", "sglang.launch_server")


@pytest.fixture(scope="module")
def nodes():
    rb_cluster.disconnect()  # one Ray connection per process: this module brings its own cluster
    os.environ.pop(RAY_WORKER_NICENESS_ENV, None)  # workers at Ray's default niceness, as on a cluster started by hand
    cluster = Cluster(initialize_head=True,
                      # Ray itself adds accelerator_type:H200 on a node with H200s; "H200" is a custom resource
                      head_node_args={"num_cpus": 2, "num_gpus": 8,
                                      "resources": {"H200": 8, "accelerator_type:H200": 1}})
    client = cluster.add_node(num_cpus=2, resources={"client": 1})
    ray.init(address=cluster.address, namespace="raybench")
    cluster.wait_for_nodes()
    yield {"gpu": cluster.head_node.node_id, "client": client.node_id, "address": cluster.address}
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def fake_env(nodes, tmp_path):
    """The fakes on PATH for the server only, marked so that leftovers can be found after the test."""
    mark = uuid.uuid4().hex
    env = install(tmp_path / "bin", mark)
    yield env
    deadline = time.monotonic() + 5  # a killed group can take a moment to be reaped
    while (left := marked_pids(mark) + _server_descendants()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"server processes left behind: {left}"


def _server_descendants() -> list[int]:
    """Descendants of this test process that are servers or watchdogs (Ray's own processes are fine)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(word in cmdline for word in _SERVER_WORDS):
            found.append(pid)
    return found


def _experiment(backend, *, output_len=8, num_prompts=8, concurrency=(4,), hardware=None):
    return Experiment(name="lifecycle", model=MODEL, backends=(backend,), hardware=hardware or {},
                      online=(Online(concurrency=concurrency, input_len=16, output_len=output_len, num_prompts=num_prompts),))


def _run(tmp_path, backend, **kwargs):
    rd = RunDir.create(tmp_path, "lifecycle")
    experiment = _experiment(backend, **kwargs)
    check_hardware(experiment, ray.cluster_resources())  # as `raybench run` does first
    summaries = Runner(experiment, rd, RunOptions(actors=2), report=lambda _: None).run()
    return rd, summaries


def test_cell_runs_with_the_server_on_the_gpu_node_and_load_on_the_client_node(nodes, fake_env, tmp_path):
    backend = VLLMBackend(tp=8, trust_remote_code=True, max_model_len=32768, env=fake_env,
                          reset_cache=True, attention_backend="FLASHMLA")
    # placed as experiments/deepseek_r1.py places its servers: by the GPU model Ray detected
    rd, summaries = _run(tmp_path, backend, concurrency=(2, 4), hardware={"vllm": Hardware(name="H200")})
    assert [s["completed"] for s in summaries] == [8, 8]
    assert [s["cell"]["hardware"] for s in summaries] == ["H200", "H200"]
    for summary in summaries:
        assert {a["node"] for a in summary["actors"]} == {nodes["client"]}
    record = json.loads(rd.server_log("vllm").with_suffix(".json").read_text())
    assert record["node_id"] == nodes["gpu"] and record["kind"] == "vllm" and record["version"] == "0.0.fake"
    assert record["gpu_ids"] == [str(i) for i in range(8)]
    assert record["visible_devices"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    log = rd.server_log("vllm").read_text()
    assert "vllm serve deepseek-ai/DeepSeek-R1 --tensor-parallel-size 8 --trust-remote-code --max-model-len 32768" in log
    assert "'CUDA_VISIBLE_DEVICES': '0,1,2,3,4,5,6,7'" in log  # what the server process itself saw
    assert "'OMP_NUM_THREADS': None" in log  # as when started by hand: Ray's worker default is not passed on
    # one server for both cells, its prefix cache reset after each cell's warm-up (VLLM_SERVER_DEV_MODE=1)
    assert log.count("FAKE vllm pid=") == 1
    assert log.count("FAKE cache reset via /reset_prefix_cache") == 2
    # this cluster's workers start at Ray's niceness 15: the actors lower it, so neither the server
    # nor the load generators wait behind the node's other processes
    if os.geteuid() == 0:
        assert record["niceness"] == 0 and "runs at niceness" not in log
        assert {a["niceness"] for s in summaries for a in s["actors"]} == {0}


def test_what_the_servers_really_run_reaches_requests_records_and_the_report(nodes, fake_env, tmp_path):
    """trtllm-serve lists a local checkpoint by its directory's name; vLLM 0.7.3 runs Triton MLA when asked for FLASHMLA."""
    checkpoint = tmp_path / "models" / "DeepSeek-R1"  # on the GPU node: this cluster's nodes share the disk
    checkpoint.mkdir(parents=True)
    env = {**fake_env, **install_upstream(tmp_path / "upstream-bin"), "RAYBENCH_FAKE_ATTENTION": "Triton MLA"}
    trtllm = TRTLLMBackend(model_path=str(checkpoint), placement=H200, env=env, ready_timeout_s=60)
    vllm = VLLMBackend(attention_backend="FLASHMLA", placement=H200, env=env, ready_timeout_s=60)
    experiment = Experiment(name="upstream", model=MODEL, backends=(trtllm, vllm),
                            online=(Online(concurrency=(2,), input_len=16, output_len=8, num_prompts=4),))
    rd = RunDir.create(tmp_path, "upstream")
    reports: list[str] = []
    summaries = Runner(experiment, rd, RunOptions(actors=1), report=reports.append).run()
    assert [s["completed"] for s in summaries] == [4, 4]  # the simulator answers 404 to a name it does not serve
    assert json.loads(rd.server_log("trtllm").with_suffix(".json").read_text())["model"] == "DeepSeek-R1"
    record = json.loads(rd.server_log("vllm").with_suffix(".json").read_text())
    assert record["from_log"] == {"attention_backend": "Triton MLA"} and len(record["warnings"]) == 1
    assert [r for r in reports if r.startswith("WARNING vllm: VLLM_ATTENTION_BACKEND=FLASHMLA was set")]


def test_a_server_that_takes_8_s_to_start_is_waited_for(nodes, fake_env, tmp_path):
    # 8 s: many health probes (their back-off tops out at 0.5 s), each refused, before the first 200
    backend = SGLangBackend(tp=8, placement=H200, env={**fake_env, "RAYBENCH_FAKE_MODE": "slow_start",
                                                          "RAYBENCH_FAKE_DELAY_S": "8"}, ready_timeout_s=60)
    handle = ServerHandle(backend, model=MODEL, log_path=tmp_path / "sglang.log")
    t0 = time.monotonic()
    try:
        info = handle.start()
        waited_s = time.monotonic() - t0
    finally:
        handle.stop()
    assert 8 <= waited_s < 18
    assert info.node_id == nodes["gpu"]
    assert "FAKE loading weights for 8 s" in (tmp_path / "sglang.log").read_text()


def test_a_crash_at_start_fails_the_cell_in_seconds_with_the_log_tail(nodes, fake_env, tmp_path):
    backend = TRTLLMBackend(tp=8, ep=4, placement=H200, env={**fake_env, "RAYBENCH_FAKE_MODE": "crash_at_start"})
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        _run(tmp_path, backend)
    assert time.monotonic() - t0 < 15  # seconds, not the 1800 s ready timeout (a busy machine starts processes slowly)
    message = str(err.value)
    assert "trtllm exited with code 1 while starting" in message
    assert "RuntimeError: FAKE CUDA out of memory while loading weights" in message
    assert "trtllm-serve deepseek-ai/DeepSeek-R1 --backend pytorch --tp_size 8 --pp_size 1 --ep_size 4" in message


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(nodes, fake_env, tmp_path):
    backend = VLLMBackend(tp=8, placement=H200, stop_grace_s=2, env={**fake_env, "RAYBENCH_FAKE_MODE": "ignore_sigterm"})
    handle = ServerHandle(backend, model=MODEL, log_path=tmp_path / "vllm.log")
    handle.start()
    t0 = time.monotonic()
    handle.stop()
    stop_s = time.monotonic() - t0
    assert 2 <= stop_s < 6  # the 2 s grace, then SIGKILL: not the default 30 s (slack for a busy machine)
    assert "FAKE ignoring SIGTERM" in (tmp_path / "vllm.log").read_text()


def test_a_crash_mid_run_stops_the_run_and_leaves_the_cell_incomplete(nodes, fake_env, tmp_path):
    backend = SGLangBackend(tp=8, placement=H200, env={**fake_env, "RAYBENCH_FAKE_MODE": "crash_mid_run",
                                                          "RAYBENCH_FAKE_DELAY_S": "3"})
    with pytest.raises(BackendError, match=r"sglang exited with code 3 during cell sglang-online-c4") as err:
        _run(tmp_path, backend, output_len=2000, num_prompts=4)  # each request streams for about 4 s
    assert "FAKE segmentation fault in the decode loop" in str(err.value)
    rd = RunDir(next((tmp_path / "lifecycle").iterdir()))
    assert rd.cell_ids() == []  # not complete: a resume runs the cell again
    # the cell says why: a failed outcome with the server's death as the reason
    [(outcome, _)] = rd.cell_outcomes().values()
    assert outcome.kind.value == "failed" and "sglang exited with code 3" in outcome.reason
    assert 0 < outcome.recorded_requests <= 4 == outcome.planned_requests  # the rows it got are kept


def test_a_loud_server_log_reaches_the_driver_whole(nodes, fake_env, tmp_path):
    env = {**fake_env, "RAYBENCH_FAKE_MODE": "loud", "RAYBENCH_FAKE_LOG_LINES": "100000"}  # 7.5 MB: two pulls
    handle = ServerHandle(TRTLLMBackend(tp=8, placement=H200, env=env), model=MODEL, log_path=tmp_path / "trtllm.log")
    try:
        handle.start()
    finally:
        handle.stop()
    lines = (tmp_path / "trtllm.log").read_text().splitlines()
    numbered = [line for line in lines if line.startswith("FAKE log line ")]
    assert len(numbered) == 100000 and numbered[-1].startswith("FAKE log line 0099999")
    assert any(line.startswith("raybench sim listening on") for line in lines[-5:])  # served after the flood


def test_a_killed_server_actor_takes_its_server_with_it(nodes, fake_env, tmp_path):
    mark = fake_env["RAYBENCH_TEST_MARK"]
    handle = ServerHandle(VLLMBackend(tp=8, placement=H200, stop_grace_s=1, env=fake_env), model=MODEL,
                          log_path=tmp_path / "vllm.log")
    handle.start()
    assert marked_pids(mark)
    ray.kill(handle._actor, no_restart=True)  # the worker dies without stopping anything: the watchdog acts
    deadline = time.monotonic() + 10
    while marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not marked_pids(mark)
    handle.stop()  # the actor is gone: stopping is still safe


def test_a_placement_no_node_offers_fails_at_once(nodes):
    backend = VLLMBackend(tp=8, placement=Placement(resources={"MI300X": 8}))
    with pytest.raises(BackendError, match=r"needs \{'GPU': 8.0, 'MI300X': 8.0\} on one node.*H200=8") :
        ServerHandle(backend, model=MODEL, log_path=Path("/nonexistent/never.log")).start()
    # the CPUs it asks for count too: an actor no node can hold would wait for ever, without a word
    backend = VLLMBackend(tp=8, placement=Placement(resources={"H200": 8}, num_cpus=64))
    with pytest.raises(BackendError, match=r"needs \{'GPU': 8.0, 'CPU': 64.0, 'H200': 8.0\} on one node.*CPU=2"):
        ServerHandle(backend, model=MODEL, log_path=Path("/nonexistent/never.log")).start()


def test_the_log_copy_waits_while_the_server_waits_for_its_gpus(nodes, fake_env, tmp_path, monkeypatch):
    from raybench.backends import server_actor

    # each pull of the log waits this long for an answer; a pending actor gives none
    monkeypatch.setattr(server_actor, "_CALL_TIMEOUT_S", 1.0)

    @ray.remote(num_gpus=8, num_cpus=0)
    class GpuHolder:  # another job's actor holding the node's GPUs for a while
        def ping(self) -> int:
            return 1

    holder = GpuHolder.remote()
    ray.get(holder.ping.remote())
    release = threading.Timer(4.0, lambda: ray.kill(holder, no_restart=True))
    release.start()
    log = tmp_path / "vllm.log"
    handle = ServerHandle(VLLMBackend(tp=8, placement=H200, env=fake_env), model=MODEL, log_path=log)
    try:
        handle.start()  # pending for ~4 s: four pulls time out meanwhile
        deadline = time.monotonic() + 15
        while (not log.exists() or log.stat().st_size == 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        # copied while the server runs, not only when it stops
        assert log.stat().st_size > 0 and handle._pump._thread.is_alive()
    finally:
        release.join()
        handle.stop()


@ray.remote(num_gpus=8, num_cpus=0)
class _GpuHolder:  # another job's actor holding the GPU node's 8 GPUs
    def ping(self) -> int:
        return 1


def _hold_the_gpus(timeout_s: float = 15.0):
    holder = _GpuHolder.remote()
    ray.get(holder.ping.remote(), timeout=timeout_s)
    return holder


def test_a_server_with_no_room_says_so_and_gives_up_after_its_place_timeout(nodes, fake_env, tmp_path):
    lines = []
    holder = _hold_the_gpus()
    try:
        handle = ServerHandle(VLLMBackend(tp=8, placement=H200, env=fake_env, place_timeout_s=3), model=MODEL,
                              log_path=tmp_path / "vllm.log", on_wait=lines.append, wait_report_s=1)
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"vllm: Ray found no room for its server in \d+ s: it needs "
                                               r"\{'GPU': 8.0, 'H200': 8.0\} on one node, and free/total in the "
                                               r"cluster is GPU=0/8, H200=8/8; another server or Ray job holds them"
                                               r".*\(GPU short\)\. Free those GPUs, lower the server's GPUs "
                                               r"\(tensor parallel size, placement=\), add a node, or raise "
                                               r"place_timeout_s"):
            handle.start()
        # at the bound, and at once: an actor that never ran is killed, not asked to stop and waited for
        assert 3 <= time.monotonic() - t0 < 8
        assert len(lines) >= 2, lines
        assert all(line.startswith("  vllm: waiting") and "{'GPU': 8.0, 'H200': 8.0}" in line
                   and "GPU=0/8, H200=8/8" in line and "giving up after 3 s" in line for line in lines), lines
    finally:
        ray.kill(holder, no_restart=True)
    # the actor given up on is gone: the freed GPUs go to the next job, not to a server nobody waits for
    ray.kill(_hold_the_gpus(), no_restart=True)


def test_the_place_timeout_counts_the_wait_for_room_not_the_start_up(nodes, fake_env, tmp_path):
    lines = []
    holder = _hold_the_gpus()
    release = threading.Timer(3.0, lambda: ray.kill(holder, no_restart=True))
    env = {**fake_env, "RAYBENCH_FAKE_MODE": "slow_start", "RAYBENCH_FAKE_DELAY_S": "6"}
    handle = ServerHandle(VLLMBackend(tp=8, placement=H200, env=env, place_timeout_s=5, ready_timeout_s=60),
                          model=MODEL, log_path=tmp_path / "vllm.log", on_wait=lines.append, wait_report_s=1)
    release.start()
    try:
        t0 = time.monotonic()
        info = handle.start()  # ~3 s without room, then 6 s loading: 9 s in all, more than place_timeout_s
        assert time.monotonic() - t0 > 3 + 6 and info.url.startswith("http://")
        assert lines and re.match(r"  vllm: waiting \d+ s for a node with \{'GPU': 8.0, 'H200': 8.0\}", lines[0]), lines
    finally:
        release.join()
        handle.stop()


def test_engine_mode_without_the_package_names_it_and_the_node(nodes):
    specs = RandomWorkload(num_prompts=2, input_len=8, output_len=4, seed=0).build(range(2))
    with pytest.raises(BackendError, match=r"needs the Python package 'vllm' on node 127.0.0.1"):
        run_offline_engine(VLLMBackend(tp=8, placement=H200), model=MODEL, specs=specs)


INTERRUPTED_EXPERIMENT = """
from raybench.experiment import Experiment, Online, SimBackend

experiment = Experiment(
    name="interrupt",
    model="deepseek-ai/DeepSeek-R1",
    backends=(SimBackend(timing="fixed", ttft_ms=5, itl_ms=5, env={{"{var}": "{mark}"}}),),
    online=(
        Online(concurrency=(2,), input_len=16, output_len=8, num_prompts=4),
        Online(concurrency=(4,), input_len=16, output_len=4000, num_prompts=8),  # 20 s per request
    ),
)
"""


def test_sigint_to_raybench_run_during_a_cell_stops_the_server_and_keeps_finished_cells(nodes, tmp_path):
    mark = uuid.uuid4().hex
    path = tmp_path / "interrupt.py"
    path.write_text(textwrap.dedent(INTERRUPTED_EXPERIMENT.format(var=MARK_VAR, mark=mark)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "raybench", "run", str(path), "--out", str(tmp_path / "runs"), "--address", nodes["address"]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("cell sim-online-c4-"):
                break
        time.sleep(2)  # well inside the long cell
        assert marked_pids(mark), "".join(lines)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        lines.append(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert proc.returncode == 130, output
    assert "interrupted: completed cells are kept in the run directory" in output
    run_dir = RunDir(next((tmp_path / "runs" / "interrupt").iterdir()))
    assert run_dir.cell_ids() == ["sim-online-c2-i16-o8"]
    assert (run_dir.cell_dir("sim-online-c2-i16-o8") / "requests.parquet").is_file()
    assert "raybench sim listening" in run_dir.server_log("sim").read_text()
    deadline = time.monotonic() + 5
    while marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not marked_pids(mark), "a server outlived raybench run"
    assert not _server_descendants()
