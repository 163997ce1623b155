"""Run metadata: secrets never reach a run directory; sources are recorded with their git state."""

from __future__ import annotations

import subprocess

import pytest

from raybench.store.metadata import (
    REDACTED,
    git_state,
    is_secret_name,
    redact_argv,
    redact_env,
    redact_options,
    source_record,
)


@pytest.mark.parametrize("name", ["--api-key", "--hf-token", "HF_TOKEN", "OPENAI_API_KEY", "HUGGING_FACE_HUB_TOKEN",
                                  "X-Api-Key", "XApiKey", "aws_secret_access_key", "DB_PASSWORD", "Authorization"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["--tokenizer", "--max-num-batched-tokens", "TOKENIZERS_PARALLELISM", "--ssl-keyfile",
                                  "--kv-cache-dtype", "--tokenizer-mode", "CUDA_VISIBLE_DEVICES", "--port",
                                  "--token-id-range", "token_id_range"])
def test_names_that_only_look_secret(name):
    assert not is_secret_name(name)


def test_argv_keeps_everything_but_the_secrets():
    argv = ["vllm", "serve", "deepseek-ai/DeepSeek-R1", "--api-key", "sk-1", "--tokenizer", "tok/path",
            "--hf-token", "--port", "8000", "--api-key=sk-2", "--max-num-batched-tokens", "8192"]
    assert redact_argv(argv) == ["vllm", "serve", "deepseek-ai/DeepSeek-R1", "--api-key", REDACTED, "--tokenizer",
                                 "tok/path", "--hf-token", "--port", "8000", f"--api-key={REDACTED}",
                                 "--max-num-batched-tokens", "8192"]


def test_container_and_env_assignments_and_url_passwords():
    argv = ["docker", "run", "-e", "HF_TOKEN=hf_abc", "--env=OPENAI_API_KEY=sk", "-e", "NCCL_DEBUG=INFO",
            "--env", "PATH=/usr/bin", "env", "AWS_SECRET_ACCESS_KEY=x", "python3", "-m", "sglang.launch_server",
            "--model-path", "https://user:pw@hub.example/model"]
    assert redact_argv(argv) == ["docker", "run", "-e", f"HF_TOKEN={REDACTED}", f"--env=OPENAI_API_KEY={REDACTED}",
                                 "-e", "NCCL_DEBUG=INFO", "--env", "PATH=/usr/bin", "env",
                                 f"AWS_SECRET_ACCESS_KEY={REDACTED}", "python3", "-m", "sglang.launch_server",
                                 "--model-path", f"https://{REDACTED}@hub.example/model"]
    assert redact_env({"HF_TOKEN": "hf_abc", "VLLM_USE_V1": "1", "PROXY": "http://u:p@proxy:3128"}) == {
        "HF_TOKEN": REDACTED, "VLLM_USE_V1": "1", "PROXY": f"http://{REDACTED}@proxy:3128"}


def test_parsed_options_keep_their_types():
    options = {"url": "http://user:pw@10.0.0.1:8000", "api_key": "sk-1", "hf_token": None, "num_prompts": 40,
               "simulate": True, "only": "backend=vllm"}
    assert redact_options(options) == {"url": f"http://{REDACTED}@10.0.0.1:8000", "api_key": REDACTED,
                                       "hf_token": None, "num_prompts": 40, "simulate": True, "only": "backend=vllm"}


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_source_record_has_the_text_digest_and_commit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    exp = repo / "exp.py"
    exp.write_text("experiment = None\n")
    assert source_record(exp)["git"] is None  # not in a work tree yet
    _git(repo, "init", "-q")
    _git(repo, "add", "exp.py")
    _git(repo, "commit", "-q", "-m", "x")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    record = source_record(exp)
    assert record["text"] == "experiment = None\n"
    assert record["sha256"] == "e9a5fb0700d5999d48edd8c4ffaf7b66cdf99e0f3e04786018a2fc98b40fb3b3"  # sha256sum of the text
    assert record["git"] == {"commit": commit, "root": str(repo.resolve()), "dirty": False}
    exp.write_text("experiment = 1\n")
    assert git_state(exp)["dirty"] is True
    other = repo / "untracked.py"
    other.write_text("")
    assert git_state(other) is None  # in the work tree, but not git's: no commit to claim
