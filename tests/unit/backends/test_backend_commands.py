"""Command lines and environments built from backend options, checked against the real flags.

The parsers in tests/fakes/fake_servers.py declare each server's flags as its own source does
(names, aliases, types); a command raybench builds must parse there to the values it was
built from, and the seed's own command lines must parse to the same values as raybench's.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from raybench.backends import (
    Container,
    ContainerRuntime,
    Dialect,
    ExternalBackend,
    Placement,
    Platform,
    SGLangBackend,
    SimBackend,
    TRTLLMBackend,
    VLLMBackend,
    seed,
)
from raybench.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
from fake_servers import parse  # noqa: E402
from trtllm_serve_releases import flow  # noqa: E402

MODEL = "deepseek-ai/DeepSeek-R1"
HOST, PORT = "10.0.0.5", 8123


def argv(backend, *, python="/usr/bin/python3", model=MODEL):
    return backend.server_argv(model=model, host=HOST, port=PORT, python=python)


def parsed(kind, args):
    """What the real server would parse from ``args`` (the program name and, for vLLM, `serve` dropped)."""
    if kind == "sglang":
        assert args[1:3] == ["-m", "sglang.launch_server"]
        return parse(kind, args[3:])
    return parse(kind, args[1:])


def test_vllm_flags_parse_to_the_options():
    backend = VLLMBackend(tp=8, pp=2, trust_remote_code=True, enable_prefix_caching=False, enable_chunked_prefill=True,
                          max_model_len=32768, max_num_seqs=256, max_num_batched_tokens=8192,
                          gpu_memory_utilization=0.9, extra_args=("--seed", "1"))
    args = argv(backend)
    assert args[:3] == ["vllm", "serve", MODEL] and args[-2:] == ["--seed", "1"]
    ns, served = parsed("vllm", args[:-2])
    assert (ns.tensor_parallel_size, ns.pipeline_parallel_size, ns.trust_remote_code) == (8, 2, True)
    assert (ns.enable_prefix_caching, ns.enable_chunked_prefill, ns.max_model_len) == (False, True, 32768)
    assert (ns.max_num_seqs, ns.max_num_batched_tokens, ns.gpu_memory_utilization) == (256, 8192, 0.9)
    assert (ns.host, ns.port, served) == (HOST, PORT, MODEL)
    assert backend.reserved_gpus == 16


def test_vllm_defaults_leave_the_servers_defaults_alone():
    args = argv(VLLMBackend())
    assert args == ["vllm", "serve", MODEL, "--tensor-parallel-size", "1", "--host", HOST, "--port", str(PORT)]


def test_a_local_checkpoint_is_served_under_the_experiments_model_name():
    ns, served = parsed("vllm", argv(VLLMBackend(model_path="/models/r1")))
    assert (ns.model, served) == ("/models/r1", MODEL)
    ns, served = parsed("sglang", argv(SGLangBackend(model_path="/models/r1")))
    assert (ns.model_path, served) == ("/models/r1", MODEL)
    # trtllm-serve has no rename flag: it lists the path, and raybench requests that name
    backend = TRTLLMBackend(model_path="deepseek")
    assert parsed("trtllm", argv(backend))[1] == "deepseek" == backend.served_model(MODEL)


def test_trtllm_waits_for_a_local_directory_under_its_path_or_its_name():
    """trtllm-serve lists an existing directory by its last component; the driver cannot see that node's disk."""
    assert TRTLLMBackend(model_path="/models/DeepSeek-R1/").served_model_names(MODEL) == (
        "/models/DeepSeek-R1/", "DeepSeek-R1")
    assert TRTLLMBackend().served_model_names(MODEL) == (MODEL, "DeepSeek-R1")  # a local dir of that name, or the hub's
    assert TRTLLMBackend(model_path="deepseek").served_model_names(MODEL) == ("deepseek",)
    assert VLLMBackend(model_path="/models/r1").served_model_names(MODEL) == (MODEL,)
    # once the server has listed one, requests carry it; the options stay what they were
    backend = TRTLLMBackend(model_path="/models/DeepSeek-R1")
    listed = backend.with_listed_model("DeepSeek-R1")
    assert listed.served_model(MODEL) == "DeepSeek-R1" and backend.served_model(MODEL) == "/models/DeepSeek-R1"
    assert listed == backend and listed.server_argv(model=MODEL, host=HOST, port=PORT, python="p") == argv(backend)


def test_vllm_environment():
    backend = VLLMBackend(attention_backend="FLASHMLA", reset_cache=True, env={"NCCL_DEBUG": "INFO"})
    assert backend.server_env() == {"NCCL_DEBUG": "INFO", "VLLM_ATTENTION_BACKEND": "FLASHMLA",
                                    "VLLM_SERVER_DEV_MODE": "1"}  # /reset_prefix_cache is a dev-mode route
    assert VLLMBackend().server_env() == {}
    assert VLLMBackend.endpoints.cache_reset == "/reset_prefix_cache" and VLLMBackend.endpoints.version == ("/version",)


def test_sglang_flags_parse_to_the_options():
    backend = SGLangBackend(tp=8, dp=8, enable_dp_attention=True, trust_remote_code=True, context_length=32768,
                            mem_fraction_static=0.85, max_running_requests=1024, chunked_prefill_size=8192,
                            disable_radix_cache=True, enable_cache_report=True)
    args = argv(backend)
    assert args[0] == "/usr/bin/python3"
    ns, served = parsed("sglang", args)
    assert (ns.model_path, ns.tp_size, ns.dp_size, ns.enable_dp_attention) == (MODEL, 8, 8, True)
    assert (ns.trust_remote_code, ns.context_length, ns.mem_fraction_static) == (True, 32768, 0.85)
    assert (ns.max_running_requests, ns.chunked_prefill_size) == (1024, 8192)
    assert (ns.disable_radix_cache, ns.enable_cache_report, ns.host, ns.port, served) == (True, True, HOST, PORT, MODEL)
    assert backend.reserved_gpus == 8  # dp attention splits the tp group
    assert SGLangBackend(tp=2, dp=4).reserved_gpus == 8  # plain dp replicates it
    assert argv(SGLangBackend(python="/opt/sglang/bin/python"))[0] == "/opt/sglang/bin/python"


def test_trtllm_flags_parse_to_the_options():
    backend = TRTLLMBackend(tp=8, pp=1, ep=4, max_batch_size=512, max_num_tokens=16384, max_seq_len=16384,
                            kv_cache_free_gpu_memory_fraction=0.8, trust_remote_code=True,
                            extra_llm_api_options="/etc/extra.yaml", runtime="tensorrt", engine_flag="trt")
    args = argv(backend)
    assert args[:2] == ["trtllm-serve", MODEL]
    ns, served = parsed("trtllm", args)
    assert (ns.backend, ns.tp_size, ns.pp_size, ns.ep_size) == ("trt", 8, 1, 4)
    assert (ns.max_batch_size, ns.max_num_tokens, ns.max_seq_len) == (512, 16384, 16384)
    assert (ns.free_gpu_memory_fraction, ns.trust_remote_code, ns.extra_llm_api_options) == (0.8, True, "/etc/extra.yaml")
    assert (ns.host, ns.port, served) == (HOST, PORT, MODEL)


@pytest.mark.parametrize(
    "release, engine_flag",
    [("seed", "omit"), ("later", "trt"), ("1.x", "trt")],
)
def test_trtllm_runtime_selects_the_flow_on_each_release(release, engine_flag):
    """--backend tensorrt parses on none of them; the seed's build has no engine spelling but the default."""
    engine = TRTLLMBackend(model_path="/engines/r1", runtime="tensorrt", engine_flag=engine_flag)
    assert flow(release, argv(engine)) == "tensorrt"
    assert flow(release, argv(TRTLLMBackend(engine_flag=engine_flag))) == "pytorch"


def test_trtllm_engine_flag_default_is_the_seeds_build():
    engine = TRTLLMBackend(runtime="tensorrt")
    assert "--backend" not in argv(engine) and flow("seed", argv(engine)) == "tensorrt"
    with pytest.raises(SystemExit):  # click refuses what the seed's build does not declare
        flow("seed", argv(TRTLLMBackend(runtime="tensorrt", engine_flag="trt")))
    assert flow("1.x", argv(engine)) == "pytorch"  # hence engine_flag="trt" on later releases


@pytest.mark.parametrize(
    "preset, kind, seed_command",
    [
        (seed.SEED_SGLANG_H200, "sglang",
         "python3 -m sglang.launch_server --model deepseek-ai/DeepSeek-R1 --tp 8 --trust-remote-code --enable-dp-attention"),
        (seed.SEED_SGLANG_MI300X, "sglang",
         "python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 --tp 8 --trust-remote-code"),
        (seed.SEED_VLLM_H200, "vllm", "vllm serve deepseek-ai/DeepSeek-R1 --trust-remote-code --tensor-parallel-size 8"),
        (seed.SEED_VLLM_H200_PREFIX, "vllm", "vllm serve deepseek-ai/DeepSeek-R1 --enable-prefix-caching "
                                             "--trust-remote-code --tensor-parallel-size 8 --enable-chunked-prefill"),
        (seed.SEED_VLLM_MI300X, "vllm",
         "vllm serve deepseek-ai/DeepSeek-R1 --tensor-parallel-size 8 --trust-remote-code --max-model-len 32768"),
        (seed.SEED_TRTLLM_H200, "trtllm", "trtllm-serve --backend pytorch --max_batch_size 512 --max_num_tokens 16384 "
                                          "--max_seq_len 16384 --tp_size 8 --ep_size 4 --pp_size 1 deepseek"),
    ],
)
def test_seed_presets_start_the_seeds_servers(preset, kind, seed_command):
    """The seed's own command and raybench's parse to the same settings (host and port aside)."""
    ours, ours_served = parsed(kind, argv(preset, python="python3"))
    theirs, theirs_served = parsed(kind, shlex.split(seed_command))
    ours, theirs = vars(ours), vars(theirs)
    for key in ("host", "port"):
        ours.pop(key), theirs.pop(key)
    assert ours == theirs and ours_served == theirs_served
    assert preset.reserved_gpus == 8


def test_seed_presets_environment_and_images():
    assert seed.SEED_VLLM_H200.server_env() == {"VLLM_ATTENTION_BACKEND": "FLASHMLA"}
    assert seed.SEED_VLLM_MI300X.server_env() == {"VLLM_FP8_PADDING": "0", "VLLM_USE_TRITON_FLASH_ATTN": "0"}
    assert seed.SEED_SGLANG_MI300X.server_env() == {"HSA_NO_SCRATCH_RECLAIM": "1"}
    assert seed.SEED_SGLANG_H200.container.image == "lmsysorg/sglang:latest"
    assert seed.SEED_VLLM_MI300X.container.image == "rocm/vllm-dev:vllm-ds3-staging-0217"
    assert seed.SEED_SGLANG_H200.reset_cache and not seed.SEED_VLLM_H200.reset_cache  # as the seed's clients did


def test_nvidia_container_gets_the_reserved_gpus_and_runs_the_server_as_entrypoint():
    backend = VLLMBackend(tp=2, env={"VLLM_ATTENTION_BACKEND": "FLASHMLA"},
                          container=Container(image="vllm/vllm-openai:v0.7.3", model_cache="/data/hf"))
    spec = backend.launch_spec(model=MODEL, host=HOST, port=PORT, python="/venv/bin/python", gpu_ids=("3", "5"))
    args = list(spec.argv)
    assert args[:7] == ["docker", "run", "--rm", "--name", f"raybench-vllm-{PORT}", "--network", "host"]
    assert args[args.index("--gpus") + 1] == '"device=3,5"'  # quoted: docker splits --gpus on commas
    assert args[args.index("--shm-size") + 1] == "32g"
    assert args[args.index("-v") + 1] == "/data/hf:/root/.cache/huggingface"
    assert args[args.index("-e") + 1] == "VLLM_ATTENTION_BACKEND=FLASHMLA"
    image = args.index("vllm/vllm-openai:v0.7.3")
    assert args[image - 2:image] == ["--entrypoint", "vllm"]
    assert args[image + 1:] == argv(backend)[1:]
    assert spec.env == {} and spec.container_name == f"raybench-vllm-{PORT}"


def test_podman_uses_cdi_devices_and_rocm_uses_kfd_and_dri():
    podman = Container(image="img", runtime=ContainerRuntime.PODMAN, shm_size=None)
    args = podman.run_argv(["vllm", "serve", "m"], name="n", env={}, platform="cuda", gpu_ids=("0", "1"))
    assert args[args.index("--device") : args.index("--device") + 4] == [
        "--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1"]
    assert "--shm-size" not in args and args[0] == "podman"
    rocm = SGLangBackend(tp=8, platform=Platform.ROCM, container=Container(image="rocm/sglang", ipc_host=True))
    args = list(rocm.launch_spec(model=MODEL, host=HOST, port=PORT, python="/x", gpu_ids=("0", "1")).argv)
    for flag in ("--device /dev/kfd", "--device /dev/dri", "--group-add video", "--security-opt seccomp=unconfined",
                 "--ipc host", "-e HIP_VISIBLE_DEVICES=0,1", "--entrypoint python3 rocm/sglang -m sglang.launch_server"):
        assert flag in " ".join(args)
    assert "--gpus" not in args


def test_placement_and_actor_options():
    assert VLLMBackend(tp=8).actor_options() == {"num_cpus": 0.0, "num_gpus": 8}
    assert VLLMBackend(tp=8, placement=Placement(resources={"H200": 8})).actor_options() == {
        "num_cpus": 0.0, "num_gpus": 8, "resources": {"H200": 8}}
    assert SimBackend().reserved_gpus == 0 and SimBackend(placement=Placement(num_gpus=1)).reserved_gpus == 1
    assert VLLMBackend(tp=8, placement=Placement(num_gpus=0)).reserved_gpus == 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: VLLMBackend(extra_args=("--port", "9000")), "--port is set by raybench"),
        (lambda: VLLMBackend(extra_args=("--tensor-parallel-size=2",)), "--tensor-parallel-size is set by raybench (use tp=)"),
        (lambda: SGLangBackend(extra_args="--enable-metrics"), "a tuple of strings"),
        (lambda: TRTLLMBackend(reset_cache=True), "trtllm has no cache-reset endpoint"),
        (lambda: VLLMBackend(tp=0), "tp=0 is not allowed"),
        (lambda: VLLMBackend(name="my vllm"), "name='my vllm' is not allowed"),
        (lambda: VLLMBackend(env={"A": 1}), "env="),
        (lambda: SGLangBackend(mem_fraction_static=1.5), "mem_fraction_static=1.5"),
        (lambda: Placement(resources={"H200": 0}), "placement.resources"),
        (lambda: Container(image=""), "container.image"),
        (lambda: TRTLLMBackend(runtime="onnx"), "unknown runtime 'onnx'; available: pytorch, tensorrt"),
        (lambda: TRTLLMBackend(engine_flag="tensorrt"), "unknown engine_flag 'tensorrt'; available: omit, trt"),
        (lambda: VLLMBackend(platform="metal"), "unknown platform 'metal'; available: cuda, rocm"),
        (lambda: Container(image="i", runtime="lxc"), "unknown container.runtime 'lxc'"),
        (lambda: SimBackend(timing="slow"), "unknown sim timing 'slow'"),
        (lambda: VLLMBackend(place_timeout_s=0), "place_timeout_s=0 is not allowed"),
    ],
)
def test_bad_options_fail_when_built_with_the_field_named(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert message in str(err.value)


def test_dialects():
    assert VLLMBackend().dialect.client_settings() == {"ignore_eos": True, "send_min_tokens": True,
                                                       "include_usage": True, "continuous_usage_stats": True}
    assert Dialect(include_usage=False).client_settings()["include_usage"] is False
    # SGLang 0.4's StreamOptions has include_usage only
    assert SGLangBackend().dialect.client_settings()["continuous_usage_stats"] is False
    assert TRTLLMBackend().dialect == Dialect()
    external = ExternalBackend(name="x", url="http://h:8000", dialect=Dialect(min_tokens=False), cache_reset="/flush_cache")
    assert external.reset_cache and external.dialect.client_settings()["send_min_tokens"] is False


def test_sim_argv_is_unchanged_for_existing_callers():
    args = SimBackend(timing="zero", extra_args=("--fault", "http_500")).argv(model=MODEL, port=5, ready_file="/tmp/p")
    assert args[1:8] == ["-m", "raybench", "sim", "--host", "127.0.0.1", "--port", "5"]
    assert args[-4:] == ["--ready-file", "/tmp/p", "--fault", "http_500"]
