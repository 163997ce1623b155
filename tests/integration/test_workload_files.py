"""ShareGPT and custom JSONL files end to end on the simulator: `raybench bench` and an experiment file."""

import json

import numpy as np
import polars as pl
from click.testing import CliRunner

from raybench.cli import main

WORDS = "the a GPU serves tokens fast and well under load".split()


def text(rng, n):
    return " ".join(rng.choice(WORDS, size=n))


def write_sharegpt(path, n=300):
    rng = np.random.default_rng(1)
    records = []
    for i in range(n):
        prompt_len = 2 if i % 9 == 0 else int(rng.integers(4, 120))  # every 9th too short to pass
        records.append({"conversations": [{"from": "human", "value": text(rng, prompt_len)},
                                          {"from": "gpt", "value": text(rng, int(rng.integers(4, 40)))}]})
    path.write_text(json.dumps(records))
    return path


def write_custom(path, n=200):
    rng = np.random.default_rng(2)
    lines = []
    for i in range(n):
        if i % 2:
            lines.append({"prompt": text(rng, int(rng.integers(1, 80))), "output_tokens": int(rng.integers(1, 30))})
        else:
            lines.append({"messages": [{"role": "system", "content": text(rng, 5)},
                                       {"role": "user", "content": text(rng, int(rng.integers(1, 60)))}]})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def only_cell(out, name):
    [run_dir] = list((out / name).iterdir())
    [cell] = list((run_dir / "cells").iterdir())
    return cell, json.loads((cell / "summary.json").read_text()), pl.read_parquet(cell / "requests.parquet")


def invoke(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    return result


def check_counts(cell, requests):
    """What the client recorded is what the simulator counted (its words or ids) and streamed."""
    assert (requests["server_prompt_tokens"] == requests["prompt_tokens"]).all()
    assert (requests["output_tokens"] == requests["max_tokens"]).all()
    server = pl.read_parquet(cell / "server_requests.parquet")
    assert server["prompt_tokens"].sum() == requests["prompt_tokens"].sum()


def test_sharegpt_through_bench_sends_the_sampled_pairs(ray_local, tmp_path):
    path = write_sharegpt(tmp_path / "sharegpt.json")
    invoke(["bench", "--backend", "sim", "--sim-timing", "zero", "--dataset", "sharegpt", "--dataset-path", str(path),
            "--num-prompts", "120", "--actors", "2", "--no-report", "--out", str(tmp_path / "runs")])
    cell, summary, requests = only_cell(tmp_path / "runs", "bench")
    assert requests.height == 120 == summary["completed"] == summary["workload"]["num_requests"]
    assert not (cell.parents[1] / "report.html").exists() and not (cell.parents[1] / "charts").exists()
    check_counts(cell, requests)
    records = json.loads(path.read_text())
    valid_lengths = {(len(r["conversations"][0]["value"].split()), len(r["conversations"][1]["value"].split()))
                     for r in records if len(r["conversations"][0]["value"].split()) >= 4}
    pairs = set(zip(requests["prompt_tokens"].to_list(), requests["output_tokens"].to_list()))
    assert pairs <= valid_lengths  # every request is a passing pair: its prompt's words, its reply's length
    assert summary["prompts"]["tokenizer"]["name"] == "raybench:words"


def test_custom_jsonl_over_chat_with_text_counted_by_the_simulator(ray_local, tmp_path):
    path = write_custom(tmp_path / "custom.jsonl")
    invoke(["bench", "--backend", "sim", "--sim-timing", "zero", "--dataset", "custom", "--dataset-path", str(path),
            "--endpoint", "/v1/chat/completions", "--no-report", "--out", str(tmp_path / "runs")])
    cell, summary, requests = only_cell(tmp_path / "runs", "bench")
    assert requests.height == 200 == summary["completed"]
    check_counts(cell, requests)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    expected = sorted(len(x["prompt"].split()) if "prompt" in x else sum(len(m["content"].split()) for m in x["messages"])
                      for x in lines)
    assert sorted(requests["prompt_tokens"].to_list()) == expected
    assert sorted(requests["max_tokens"].to_list()) == sorted(x.get("output_tokens", 128) for x in lines)


EXPERIMENT = """
from raybench.experiment import Experiment, Online, SimBackend
experiment = Experiment(
    name="files", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(timing="zero"),),
    online=(Online(dataset="sharegpt", dataset_path={path!r}, num_prompts=50, concurrency=(8,),
                   input_len=1, output_len=16, force_output_len=True),),
)
"""


def test_sharegpt_from_an_experiment_file_with_a_forced_output(ray_local, tmp_path):
    data = write_sharegpt(tmp_path / "sharegpt.json")
    path = tmp_path / "files.py"
    path.write_text(EXPERIMENT.format(path=str(data)))
    invoke(["run", str(path), "--out", str(tmp_path / "runs"), "--no-report"])
    cell, summary, requests = only_cell(tmp_path / "runs", "files")
    assert cell.name == "sim-online-c8-sharegpt-sharegpt-n50-o16"
    assert requests.height == 50 and set(requests["output_tokens"].to_list()) == {16}
    check_counts(cell, requests)


def test_bad_files_stop_with_one_line_before_anything_runs(ray_local, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    trace = tmp_path / "unsorted.jsonl"
    trace.write_text('{"timestamp": 5, "input_length": 5, "output_length": 2, "hash_ids": [0]}\n'
                     '{"timestamp": 1, "input_length": 5, "output_length": 2, "hash_ids": [0]}\n')
    nothing = tmp_path / "short.json"
    nothing.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]))
    cases = [("custom", tmp_path / "missing.jsonl", "does not exist"), ("custom", bad, "bad.jsonl:2: \"prompt\" must be"),
             ("trace", trace, "unsorted.jsonl:2: timestamp 1 is earlier"), ("sharegpt", nothing, "passes the filters")]
    for dataset, file, message in cases:
        result = CliRunner().invoke(main, ["bench", "--backend", "sim", "--dataset", dataset, "--dataset-path", str(file),
                                           "--out", str(tmp_path / "runs")])
        assert result.exit_code != 0 and "Traceback" not in result.output
        [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
        assert message in line, result.output
    assert not (tmp_path / "runs").exists()  # nothing ran, no run directory was made
