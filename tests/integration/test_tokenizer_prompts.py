"""Prompts from a tokenizer, end to end: the simulator, and a small-vocabulary server that rejects
out-of-vocabulary ids the way vLLM does (on local Ray; no network)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from raybench.cli import main
from raybench.experiment import Experiment, ExternalBackend, Online
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir
from raybench.workloads.tokenizer import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from tiny_tokenizer import make_tokenizer  # noqa: E402
from vocab_server import VocabServer  # noqa: E402

FALLBACK_LINE = "; prompts use token ids 1000..99999 instead"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok"), kind="bpe")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the default tokenizer (the model's name) cannot load


@pytest.fixture
def server(tok_dir: Path):
    with VocabServer(load_tokenizer(str(tok_dir))) as running:
        yield running


def bench(tmp_path: Path, *args: str):
    result = CliRunner().invoke(main, ["bench", "--num-prompts", "6", "--concurrency", "3", "--input-len", "40",
                                       "--output-len", "3", "--out", str(tmp_path), "--no-min-tokens", "--no-report", *args])
    assert "Traceback" not in result.output, result.output
    return result


def run_dir(result) -> Path:
    return Path(result.output.strip().splitlines()[-1])


def cell(result) -> tuple[dict, pl.DataFrame]:
    cell_dir = next((run_dir(result) / "cells").iterdir())
    return json.loads((cell_dir / "summary.json").read_text()), pl.read_parquet(cell_dir / "requests.parquet")


def test_sim_bench_with_a_tokenizer_dir_sends_its_ids(ray_local, tmp_path: Path, tok_dir: Path) -> None:
    result = bench(tmp_path, "--backend", "sim", "--sim-timing", "zero", "--tokenizer", str(tok_dir),
                   "--top-p", "0.9", "--extra-body", '{"seed": 7}')
    assert result.exit_code == 0, result.output
    env = json.loads((run_dir(result) / "env.json").read_text())
    described = load_tokenizer(str(tok_dir)).describe()
    assert env["prompts"]["sim"]["tokenizer"] == described
    assert env["sampling"] == {"temperature": 0.0, "top_p": 0.9, "top_k": None, "extra_body": {"seed": 7}}
    summary, requests = cell(result)
    assert summary["sampling"]["top_p"] == 0.9 and summary["sampling"]["seed"] == 7
    assert summary["prompts"]["sent_as"] == "token ids"
    # the simulator counts ids: what it saw is what raybench recorded, exactly the asked length
    assert requests["prompt_tokens"].to_list() == [40] * 6
    assert requests["server_prompt_tokens"].to_list() == [40] * 6
    assert f"Prompts:                                 {described['name']} (vocab {described['vocab_size']})" in result.output
    assert "Sampling sent:                           temperature=0.0 top_p=0.9 extra=seed=7" in result.output


def test_out_of_vocabulary_ids_stop_the_warm_up_with_one_line(ray_local, tmp_path: Path, server: VocabServer) -> None:
    # a cell id of its own: a cell stopped at the warm-up leaves its server-metrics actor to Ray's
    # garbage collection, and a later cell of the same id could meet it under the same name
    result = bench(tmp_path, "--url", server.url, "--input-len", "41")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "Token id" in errors[0] and "is out of vocabulary" in errors[0]
    assert "token-id range 1000..99999" in errors[0]
    assert "--tokenizer NAME_OR_PATH" in errors[0] and "--token-id-range LOW:HIGH" in errors[0]
    assert result.output.count(FALLBACK_LINE) == 1


def test_a_token_id_range_inside_the_vocabulary_works(ray_local, tmp_path: Path, server: VocabServer) -> None:
    result = bench(tmp_path, "--url", server.url, "--token-id-range", "6:500")
    assert result.exit_code == 0, result.output
    summary, requests = cell(result)
    assert summary["completed"] == 6 and FALLBACK_LINE not in result.output
    assert summary["prompts"]["token_id_range"] == [6, 500]
    assert all(6 <= i < 500 for body in server.bodies for i in body["prompt"])


def test_the_tokenizer_makes_the_server_accept_every_prompt(ray_local, tmp_path: Path, server: VocabServer,
                                                            tok_dir: Path) -> None:
    result = bench(tmp_path, "--url", server.url, "--tokenizer", str(tok_dir))
    assert result.exit_code == 0, result.output
    summary, requests = cell(result)
    assert summary["completed"] == 6 and summary["failed"] == 0
    assert requests["server_prompt_tokens"].to_list() == requests["prompt_tokens"].to_list() == [40] * 6
    special = load_tokenizer(str(tok_dir)).special_ids
    assert not {i for body in server.bodies for i in body["prompt"]} & special


def test_chat_gets_real_text_of_exact_length_and_the_template_overhead(ray_local, tmp_path: Path,
                                                                      server: VocabServer, tok_dir: Path) -> None:
    result = bench(tmp_path, "--url", server.url, "--tokenizer", str(tok_dir), "--endpoint", "/v1/chat/completions")
    assert result.exit_code == 0, result.output
    summary, requests = cell(result)
    tok = load_tokenizer(str(tok_dir))
    contents = [body["messages"][0]["content"] for body in server.bodies]
    assert all(len(tok.encode(text)) == 40 for text in contents)
    assert not any(re.fullmatch(r"(w\d+ ?)+", text) for text in contents)
    overhead = summary["prompts"]["chat_template_overhead_tokens"]
    assert overhead == tok.count_chat([{"role": "user", "content": contents[0]}]) - 40 > 0
    # the server's own count (template applied) is raybench's count plus the reported overhead
    ok = requests.filter(pl.col("status") == "ok")
    assert (ok["server_prompt_tokens"] - ok["prompt_tokens"]).to_list() == [overhead] * 6
    assert f"chat template +{overhead} tok" in result.output


def test_chat_without_a_tokenizer_is_refused_on_a_real_server(ray_local, tmp_path: Path, server: VocabServer) -> None:
    result = bench(tmp_path, "--url", server.url, "--endpoint", "/v1/chat/completions")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "chat prompts need the model's tokenizer" in errors[0]
    assert server.bodies == []
    # refused before anything was made or said: no run directory, no fallback that does not happen
    assert not (tmp_path / "bench").exists() and "run directory:" not in result.output
    assert FALLBACK_LINE not in result.output


def test_out_of_vocabulary_request_rows_get_one_hint(ray_local, tmp_path: Path, server: VocabServer) -> None:
    experiment = Experiment(name="oov", model="tiny-model", backends=(ExternalBackend(name="small", url=server.url),),
                            online=(Online(concurrency=(2,), input_len=20, output_len=2, num_prompts=4),),
                            warmup_requests=0)
    lines: list[str] = []
    rd = RunDir.create(tmp_path, "oov")
    (summary,) = Runner(experiment, rd, RunOptions(), report=lines.append).run()
    assert summary["failed"] == 4
    hinted = [line for text in lines for line in text.splitlines() if "the server rejected prompt ids" in line]
    assert len(hinted) == 1 and "1000..99999" in hinted[0] and "--token-id-range" in hinted[0]
    assert hinted[0] == f"Hint: {summary['hint']}"
    env = json.loads(rd.env_json.read_text())
    assert env["prompts"]["small"]["fallback"] == "token_id_range"
    assert env["prompts"]["small"]["tried"] == "tiny-model"
