"""What the real servers do that their settings do not say, met through the fakes of tests/fakes/upstream_servers.py.

trtllm-serve lists a local checkpoint directory by its last component; vLLM logs which attention
backend it picked, which need not be the one VLLM_ATTENTION_BACKEND named. Each server runs on
loopback under ServerHost, the ServerActor's logic without Ray.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from raybench.backends import TRTLLMBackend, VLLMBackend
from raybench.backends.server_actor import ServerHost
from raybench.backends.vllm import logged_attention_backend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
from upstream_servers import install

MODEL = "deepseek-ai/DeepSeek-R1"


def _started(backend):
    host = ServerHost(backend, model=MODEL, node_id="node-0", node_ip="127.0.0.1", log_label="servers/x.log")
    try:
        return host, host.start()
    except BaseException:
        host.stop()
        raise


def _complete(url, model):
    body = json.dumps({"model": model, "prompt": [1, 2, 3], "max_tokens": 2}).encode()
    request = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def test_trtllm_serving_a_local_directory_is_ready_and_requested_under_the_directorys_name(tmp_path):
    checkpoint = tmp_path / "models" / "DeepSeek-R1"
    checkpoint.mkdir(parents=True)
    backend = TRTLLMBackend(model_path=str(checkpoint), env=install(tmp_path / "bin"), ready_timeout_s=30)
    host, info = _started(backend)
    try:
        assert info.model == "DeepSeek-R1"
        requested = backend.with_listed_model(info.model).served_model(MODEL)  # what the runner's client sends
        assert requested == "DeepSeek-R1" and _complete(info.url, requested) == 200
        assert _complete(info.url, str(checkpoint)) == 404  # the load path is not a name this server knows
    finally:
        host.stop()
        host.cleanup()


def test_vllm_that_ignored_the_attention_backend_is_a_warning_and_a_recorded_fact(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYBENCH_FAKE_ATTENTION", "Triton MLA")  # what vLLM 0.7.3 does with FLASHMLA
    backend = VLLMBackend(attention_backend="FLASHMLA", env=install(tmp_path / "bin"), ready_timeout_s=30)
    host, info = _started(backend)
    try:
        assert info.from_log == {"attention_backend": "Triton MLA"}
        [warning] = info.warnings
        assert "VLLM_ATTENTION_BACKEND=FLASHMLA was set, but vLLM's log says it uses Triton MLA" in warning
        assert "\n" not in warning
    finally:
        host.stop()
        host.cleanup()


# Lines as vLLM prints them, from 0.7.3 (vllm/platforms/cuda.py, a worker's copy with its prefix)
# through the releases that say "on V1 engine" to those that print the enum or pick from a list.
@pytest.mark.parametrize(
    "line, logged",
    [
        ("INFO 03-18 10:00:01 cuda.py:160] Using Triton MLA backend.", "Triton MLA"),
        ("(VllmWorkerProcess pid=77) INFO 03-18 10:00:01 cuda.py:229] Using Flash Attention backend.",
         "Flash Attention"),
        ("(VllmWorker rank=3 pid=9) INFO 04-01 [cuda.py:187] Using FlashMLA backend on V1 engine.", "FlashMLA"),
        ("INFO 11-02 [cuda.py:402] Using AttentionBackendEnum.FLASHMLA backend.", "FLASHMLA"),
        (("INFO 11-02 [cuda.py:420] Using FLASHMLA attention backend out of potential backends: "
          "['FLASHMLA', 'TRITON_MLA']."), "FLASHMLA"),
        ("INFO 03-18 rocm.py:131] Using ROCmFlashAttention backend.", "ROCmFlashAttention"),
        ("INFO transformers.py:129] Using Transformers backend.\nINFO x] Using XFormers backend.", "XFormers"),
        ("INFO 03-18 Using backend AttentionBackendEnum.FLASH_ATTN for vit attention", None),
        ("INFO 03-18 api_server.py:912] vLLM API server version 0.7.3", None),
    ],
)
def test_the_attention_line_is_read_from_every_release(line, logged):
    assert logged_attention_backend("INFO starting\n" + line + "\nINFO Started server process\n") == logged


@pytest.mark.parametrize(
    "wanted, line, warns",
    [
        ("FLASHMLA", "Using Triton MLA backend.", True),
        ("FLASHMLA", "Using FlashMLA backend on V1 engine.", False),
        ("FLASH_ATTN", "Using Flash Attention backend.", False),
        ("TRITON_MLA", "Using Triton MLA backend.", False),
        ("ROCM_FLASH", "Using ROCmFlashAttention backend.", False),
        (None, "Using Triton MLA backend.", False),  # nothing asked, nothing contradicted
        ("FLASHMLA", "no attention line at all", False),
    ],
)
def test_a_warning_only_when_the_log_names_another_backend(wanted, line, warns):
    findings = VLLMBackend(attention_backend=wanted).read_startup_log(line + "\n")
    assert bool(findings.warnings) is warns
    assert findings.facts == {"attention_backend": logged_attention_backend(line)}
