"""Offline engine mode for a vLLM installed in a Python environment of its own: the engine runs
under that environment's interpreter (found from the executable's shebang), not in this one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from raybench.backends import VLLMBackend
from raybench.backends.engine_actor import generate_vllm
from raybench.backends.engine_process import engine_python
from raybench.errors import BackendError

FAKE_VLLM = '''
import json, os, types
__version__ = "0.0-fake"
class SamplingParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)
class LLM:
    def __init__(self, **kw):
        with open(os.environ["FAKE_VLLM_LOG"], "w") as f:
            json.dump({"init": kw}, f)
    def generate(self, inputs, sampling_params, use_tqdm):
        return [types.SimpleNamespace(prompt_token_ids=i["prompt_token_ids"],
                                      outputs=[types.SimpleNamespace(token_ids=[0] * p.max_tokens)])
                for i, p in zip(inputs, sampling_params)]
'''


def make_env(tmp_path: Path, *, with_vllm: bool = True) -> Path:
    """A stand-in for a vLLM virtualenv: bin/python (another interpreter path) and bin/vllm."""
    bin_dir, lib = tmp_path / "venv" / "bin", tmp_path / "venv" / "lib"
    bin_dir.mkdir(parents=True)
    lib.mkdir()
    if with_vllm:
        (lib / "vllm.py").write_text(FAKE_VLLM)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{lib}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    vllm = bin_dir / "vllm"
    vllm.write_text(f"#!{python}\nimport vllm\n")
    vllm.chmod(0o755)
    return vllm


def test_the_engine_python_is_the_executables_interpreter(tmp_path):
    vllm = make_env(tmp_path)
    assert engine_python(str(vllm)) == str(vllm.parent / "python")
    assert engine_python("no-such-executable-anywhere") is None
    sh = tmp_path / "server.sh"
    sh.write_text("#!/bin/sh\nexit 0\n")
    sh.chmod(0o755)
    assert engine_python(str(sh)) is None  # not a Python script: import in this process


def test_vllm_in_another_environment_runs_there_with_the_servers_settings(tmp_path, monkeypatch):
    vllm = make_env(tmp_path)
    monkeypatch.setenv("FAKE_VLLM_LOG", str(tmp_path / "log.json"))
    backend = VLLMBackend(executable=str(vllm), model_path="/models/tiny", max_model_len=512)
    elapsed, prompt_tokens, output_tokens = generate_vllm(backend, "tiny", [[1, 2, 3], [4, 5]], [4, 6], "node-1")
    assert (prompt_tokens, output_tokens) == ([3, 2], [4, 6]) and elapsed >= 0
    init = json.loads((tmp_path / "log.json").read_text())["init"]
    assert init == {"model": "/models/tiny", "tensor_parallel_size": 1, "max_model_len": 512}


def test_an_environment_without_the_engine_is_one_error_naming_it(tmp_path):
    vllm = make_env(tmp_path, with_vllm=False)
    with pytest.raises(BackendError, match=r"node-1: cannot import the engine in .*: No module named 'vllm'"):
        generate_vllm(VLLMBackend(executable=str(vllm)), "tiny", [[1]], [2], "node-1")
