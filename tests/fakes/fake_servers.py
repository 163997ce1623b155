"""Stand-ins for ``vllm serve``, ``trtllm-serve`` and ``python -m sglang.launch_server``.

Each parses the flags its real server declares (the ones raybench emits, with the real names
and types: vLLM ``vllm/engine/arg_utils.py`` + ``entrypoints/openai/cli_args.py``, SGLang
``srt/server_args.py``, TensorRT-LLM ``commands/serve.py``) and exits 2 on anything else, as
argparse/click do; then it serves the raybench simulator on the requested host and port under
the name the real server would list. ``RAYBENCH_FAKE_MODE`` picks a misbehaviour:

    ok              serve at once
    slow_start      serve after RAYBENCH_FAKE_DELAY_S seconds (a model that takes time to load)
    crash_at_start  print a traceback-like message and exit 1
    crash_mid_run   serve, then die (exit 3) after RAYBENCH_FAKE_DELAY_S seconds
    ignore_sigterm  serve, with SIGTERM ignored by the whole process group
    loud            print RAYBENCH_FAKE_LOG_LINES lines, then serve

    python fake_servers.py vllm|sglang|trtllm ARGS...
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def vllm_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    serve.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    serve.add_argument("--trust-remote-code", action="store_true")
    serve.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    serve.add_argument("--enable-chunked-prefill", action="store_true")
    serve.add_argument("--max-model-len", type=int)
    serve.add_argument("--max-num-seqs", type=int)
    serve.add_argument("--max-num-batched-tokens", type=int)
    serve.add_argument("--gpu-memory-utilization", type=float)
    serve.add_argument("--served-model-name")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=8000)
    return parser


def sglang_parser() -> argparse.ArgumentParser:
    # allow_abbrev stays on, as in SGLang: the seed's `--tp 8` is `--tp-size 8`
    parser = argparse.ArgumentParser(prog="python -m sglang.launch_server")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--tensor-parallel-size", "--tp-size", dest="tp_size", type=int, default=1)
    parser.add_argument("--data-parallel-size", "--dp-size", dest="dp_size", type=int, default=1)
    parser.add_argument("--enable-dp-attention", action="store_true")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--context-length", type=int)
    parser.add_argument("--mem-fraction-static", type=float)
    parser.add_argument("--max-running-requests", type=int)
    parser.add_argument("--chunked-prefill-size", type=int)
    parser.add_argument("--disable-radix-cache", action="store_true")
    parser.add_argument("--enable-cache-report", action="store_true")
    parser.add_argument("--served-model-name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    return parser


def trtllm_parser() -> argparse.ArgumentParser:
    # click options of trtllm-serve (underscored names); `serve` is implied when omitted
    parser = argparse.ArgumentParser(prog="trtllm-serve", allow_abbrev=False)
    parser.add_argument("model")
    parser.add_argument("--backend", choices=["pytorch", "tensorrt", "trt", "_autodeploy"], default="pytorch")
    parser.add_argument("--tensor_parallel_size", "--tp_size", dest="tp_size", type=int, default=1)
    parser.add_argument("--pipeline_parallel_size", "--pp_size", dest="pp_size", type=int, default=1)
    parser.add_argument("--moe_expert_parallel_size", "--ep_size", dest="ep_size", type=int)
    parser.add_argument("--max_batch_size", type=int)
    parser.add_argument("--max_num_tokens", type=int)
    parser.add_argument("--max_seq_len", type=int)
    parser.add_argument("--free_gpu_memory_fraction", "--kv_cache_free_gpu_memory_fraction", type=float)
    parser.add_argument("--trust_remote_code", action="store_true")
    parser.add_argument("--config", "--extra_llm_api_options", dest="extra_llm_api_options")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8000)
    return parser


def parse(kind: str, argv: list[str]) -> tuple[argparse.Namespace, str]:
    """The parsed flags and the model name /v1/models would list."""
    if kind == "vllm":
        args = vllm_parser().parse_args(argv)
        return args, args.served_model_name or args.model
    if kind == "sglang":
        args = sglang_parser().parse_args(argv)
        return args, args.served_model_name or args.model_path
    if kind == "trtllm":
        if argv and argv[0] == "serve":
            argv = argv[1:]
        args = trtllm_parser().parse_args(argv)
        return args, args.model
    raise SystemExit(f"unknown fake kind {kind!r}")


def serve(kind: str, sim_argv: list[str]) -> None:
    """Serve the simulator in this process, plus the admin endpoints of the real ``kind``.

    vLLM answers ``POST /reset_prefix_cache`` only with VLLM_SERVER_DEV_MODE=1, as vLLM does;
    SGLang answers ``/flush_cache`` and ``/get_server_info``; both answer their version paths.
    """
    from raybench.sim import app as sim_app
    from raybench.sim.command import sim_command

    routes = {"vllm": {"/version"}, "sglang": {"/get_server_info", "/server_info"}, "trtllm": {"/version"}}[kind]
    resets = {"vllm": "/reset_prefix_cache", "sglang": "/flush_cache"}
    dev_mode = os.environ.get("VLLM_SERVER_DEV_MODE") == "1"
    handle = sim_app.SimApp.handle

    def handle_with_admin(self, conn, request):
        if request.path == resets.get(kind) and request.method == "POST" and (kind != "vllm" or dev_mode):
            print(f"FAKE cache reset via {request.path}", flush=True)
            conn.respond(200, b"")
        elif request.path in routes and request.method == "GET":
            conn.respond(200, b'{"version": "0.0.fake"}')
        else:
            handle(self, conn, request)

    sim_app.SimApp.handle = handle_with_admin
    sim_command.main(args=sim_argv, prog_name="raybench sim")


def main(kind: str, argv: list[str]) -> None:
    args, served = parse(kind, argv)
    mode = os.environ.get("RAYBENCH_FAKE_MODE", "ok")
    delay_s = float(os.environ.get("RAYBENCH_FAKE_DELAY_S", "20"))
    visible = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
    print(f"FAKE {kind} pid={os.getpid()} mode={mode} served={served} visible={visible} argv={argv}", flush=True)
    sim = ["--host", args.host or "127.0.0.1", "--port", str(args.port), "--model", served,
           "--timing", "fixed", "--ttft-ms", "5", "--itl-ms", "2"]
    child = [sys.executable, __file__, "--serve", kind, *sim]
    if mode == "crash_at_start":
        print("Traceback (most recent call last):\nRuntimeError: FAKE CUDA out of memory while loading weights",
              flush=True)
        sys.exit(1)
    if mode == "slow_start":
        print(f"FAKE loading weights for {delay_s:g} s", flush=True)
        time.sleep(delay_s)
    if mode == "loud":
        lines = int(os.environ.get("RAYBENCH_FAKE_LOG_LINES", "100000"))
        sys.stdout.writelines(f"FAKE log line {i:07d} {'x' * 60}\n" for i in range(lines))
        sys.stdout.flush()
    if mode == "ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the simulator child too
        subprocess.Popen(child)
        print("FAKE ignoring SIGTERM", flush=True)
        while True:
            time.sleep(1)
    if mode == "crash_mid_run":
        server = subprocess.Popen(child)
        time.sleep(delay_s)
        server.kill()
        print("FAKE segmentation fault in the decode loop", flush=True)
        sys.exit(3)
    serve(kind, sim)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1], sys.argv[2:])
