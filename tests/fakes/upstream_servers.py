"""The fakes of fake_servers.py plus two upstream behaviours they leave out, for the tests that need them:

    trtllm  lists MODEL by its last component when it is a directory on this node, as
            tensorrt_llm/serve/openai_server.py does (``if model_dir.exists() and
            model_dir.is_dir(): self.model = model_dir.name``)
    vllm    logs the attention backend it picked, as vLLM's platform code does
            (0.7.3 vllm/platforms/cuda.py: ``logger.info("Using Triton MLA backend.")``), once
            per worker: RAYBENCH_FAKE_ATTENTION names it ("Triton MLA"); unset logs nothing

    python upstream_servers.py vllm|trtllm ARGS...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import fake_servers

FAKES = Path(__file__).resolve().parent


def install(bin_dir: Path) -> dict[str, str]:
    """``vllm`` and ``trtllm-serve`` in ``bin_dir`` running these fakes; the PATH that finds them first."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, kind in (("vllm", "vllm"), ("trtllm-serve", "trtllm")):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / "upstream_servers.py"}" {kind} "$@"\n')
        script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _parse_as_upstream(kind: str, argv: list[str]):
    args, served = _plain_parse(kind, argv)
    if kind == "trtllm" and Path(args.model).is_dir():
        served = Path(args.model).name
    return args, served


def _log_attention_backend() -> None:
    name = os.environ.get("RAYBENCH_FAKE_ATTENTION")
    if name:
        print(f"INFO 03-18 10:00:01 cuda.py:160] Using {name} backend.", flush=True)
        print(f"(VllmWorkerProcess pid=4242) INFO 03-18 10:00:01 cuda.py:160] Using {name} backend.", flush=True)


_plain_parse = fake_servers.parse

if __name__ == "__main__":
    fake_servers.parse = _parse_as_upstream  # main() looks it up when called
    if sys.argv[1] == "vllm":
        _log_attention_backend()
    fake_servers.main(sys.argv[1], sys.argv[2:])
