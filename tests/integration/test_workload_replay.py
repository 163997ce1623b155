"""Trace replay and multi-turn sessions end to end: `raybench bench`, an experiment file, the simulator."""

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from raybench.analysis.lateness import send_lateness_fields
from raybench.cli import main

MODEL = "deepseek-ai/DeepSeek-R1"


def write_trace(path, n, gap_ms, *, output_length=4, blocks=2):
    """``n`` requests ``gap_ms`` apart; request i names hash ids [i % 5, 100 + i % 3, ...own]."""
    lines = []
    for i in range(n):
        hash_ids = [i % 5, 100 + i % 3][:blocks] + [1000 + i]
        lines.append(json.dumps({"timestamp": round(i * gap_ms, 3), "input_length": 512 * len(hash_ids) - 100,
                                 "output_length": output_length, "hash_ids": hash_ids}))
    path.write_text("\n".join(lines) + "\n")
    return path


def invoke(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


def only_cell(run_dir):
    [cell] = [d for d in (run_dir / "cells").iterdir()]
    summary = json.loads((cell / "summary.json").read_text())
    return cell, summary, pl.read_parquet(cell / "requests.parquet")


def bench(tmp_path, *args):
    result = invoke(["bench", "--backend", "sim", "--no-report", "--out", str(tmp_path / "runs"), *args])
    assert result.exit_code == 0, result.output
    return only_cell(tmp_path / "runs" / "bench" / next(iter(sorted((tmp_path / "runs" / "bench").iterdir()))).name)


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_a_trace_replays_every_record_with_exact_token_counts(ray_local, tmp_path, endpoint):
    trace = write_trace(tmp_path / "mooncake.jsonl", 300, 3.0, output_length=5)
    cell, summary, requests = bench(tmp_path, "--dataset", "trace", "--dataset-path", str(trace), "--endpoint", endpoint,
                                    "--sim-timing", "fixed", "--sim-ttft-ms", "5", "--sim-itl-ms", "1", "--actors", "2")
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert requests.height == 300 == summary["completed"]
    by_id = requests.sort("request_id")
    assert by_id["prompt_tokens"].to_list() == [r["input_length"] for r in records]
    # the simulator counted what it was sent (ids, or words of the chat text) and streamed that many tokens
    assert by_id["server_prompt_tokens"].to_list() == by_id["prompt_tokens"].to_list()
    assert by_id["output_tokens"].to_list() == [r["output_length"] for r in records]
    server = pl.read_parquet(cell / "server_requests.parquet")
    assert server.height == 300 and server["prompt_tokens"].sum() == sum(r["input_length"] for r in records)
    # sent at the trace's times: the schedule is the timestamps, whichever actor sent a request
    scheduled_ms = (by_id["t_scheduled_ns"] - by_id["t_scheduled_ns"].min()).to_numpy() / 1e6
    np.testing.assert_allclose(scheduled_ms, [r["timestamp"] for r in records], atol=0.01)
    assert summary["workload"]["name"] == "trace" and summary["workload"]["distinct_blocks"] == 5 + 3 + 300
    # the flag says whether the p99 send passed the threshold (timing itself: the 500/s test below)
    assert summary["sends_late"] is (summary["p99_send_lateness_ms"] > summary["late_send_threshold_ms"])


def test_a_trace_at_500_per_s_is_sent_on_time(ray_local, tmp_path):
    """(t_sent - trace time) at 500 requests/s from one actor: 95 % of requests within the 5 ms a
    cell is flagged beyond, the best of three runs. Not the p99 the flag reads: this machine
    stalls a bare sleep loop for 20-40 ms a few times in 10 s (benchmarks/trace_send_timing.py
    measures it beside the client's figures), which makes 1-2 % of one run's sends late
    whatever the client does. A schedule that drifts, or sends in batches, is late for far more."""
    trace = write_trace(tmp_path / "fast.jsonl", 1000, 2.0, output_length=2, blocks=1)
    runs = []
    for attempt in range(3):
        # a cell id of its own per attempt (the trace's first 1000 - attempt records): a named actor
        # of the previous attempt's cell may not be gone yet
        _, summary, requests = bench(tmp_path / f"a{attempt}", "--dataset", "trace", "--dataset-path", str(trace),
                                     "--num-prompts", str(1000 - attempt),
                                     "--sim-timing", "fixed", "--sim-ttft-ms", "1", "--sim-itl-ms", "1", "--actors", "1")
        late_ms = (requests["t_sent_ns"] - requests["t_scheduled_ns"]).to_numpy() / 1e6
        p95, p99 = np.percentile(late_ms, [95, 99])
        runs.append((float(p95), float(p99), summary["p99_send_lateness_ms"]))
        print(f"\ntrace at 500/s, run {attempt + 1}: lateness p95 {p95:.2f} ms, p99 {p99:.2f} ms, "
              f"max {late_ms.max():.2f} ms")
        assert requests.height == 1000 - attempt
        if p95 < 5.0:
            break
    best = min(runs)
    assert best[0] < 5.0, runs
    assert best[2] == pytest.approx(best[1], abs=0.05)  # no slot wait here: lateness is t_sent - t_scheduled


def test_a_concurrency_cap_that_holds_sends_back_is_queue_time_not_lateness(ray_local, tmp_path):
    trace = write_trace(tmp_path / "capped.jsonl", 40, 2.0, output_length=10, blocks=1)
    _, summary, requests = bench(tmp_path, "--dataset", "trace", "--dataset-path", str(trace), "--concurrency", "1",
                                 "--sim-timing", "fixed", "--sim-ttft-ms", "10", "--sim-itl-ms", "2")
    assert requests.height == 40 and summary["max_concurrency"] == 1
    # the cap the user set holds requests back: that wait is queue time (reported), while the
    # client sent each request as soon as its slot was free (not late)
    assert summary["p99_queue_time_ms"] > 500
    assert summary["sends_late"] is (summary["p99_send_lateness_ms"] > summary["late_send_threshold_ms"])
    # were the slot wait counted, p99 lateness would be the queue time's ~1 s: past a threshold
    # of 200 ms, which this machine's stalls (20-40 ms, benchmarks/trace_send_timing.py) stay under
    assert send_lateness_fields(requests, threshold_ms=200.0)["sends_late"] is False


EXPERIMENT = """
from raybench.experiment import Experiment, Online, SimBackend
experiment = Experiment(
    name="chat", model="deepseek-ai/DeepSeek-R1",
    backends=(SimBackend(timing="fixed", ttft_ms=5, itl_ms=1),),
    online=(Online(dataset="multiturn", num_prompts=64, num_turns=4, think_time_s=0.01, concurrency=(16,),
                   input_len=40, output_len=6),),
)
"""


def run_sessions(tmp_path, actors):
    path = tmp_path / "chat.py"
    path.write_text(EXPERIMENT)
    out = tmp_path / f"runs-{actors}"
    result = invoke(["run", str(path), "--out", str(out), "--actors", str(actors), "--no-report"])
    assert result.exit_code == 0, result.output
    return only_cell(next((out / "chat").iterdir()))


def test_multi_turn_sessions_are_the_same_for_any_actor_count(ray_local, tmp_path):
    runs = {actors: run_sessions(tmp_path, actors) for actors in (1, 4)}
    identity = {}
    for actors, (cell, summary, requests) in runs.items():
        assert requests.height == 256 == summary["completed"]
        assert summary["num_sessions"] == 64
        # each turn re-sends the conversation: 40 + turn * (6 + 40) tokens, counted by the simulator too
        assert (requests["prompt_tokens"] == 40 + requests["turn"].cast(pl.Int32) * 46).all()
        assert (requests["server_prompt_tokens"] == requests["prompt_tokens"]).all()
        turns = {row["turn"]: row for row in summary["ttft_by_turn"]}
        assert sorted(turns) == [0, 1, 2, 3] and all(t["count_ttft"] == 64 for t in turns.values())
        # a turn leaves after the previous answer ended plus the think time, on the same actor
        by_turn = requests.sort("session", "turn")
        for (_, session) in by_turn.group_by("session", maintain_order=True):
            assert session["actor"].n_unique() == 1
            sent, done = session["t_sent_ns"].to_numpy(), session["t_done_ns"].to_numpy()
            assert (sent[1:] - done[:-1] >= 10_000_000).all()
        # concurrency counts sessions: never more than 16 requests in flight
        events = sorted([(t, 1) for t in requests["t_sent_ns"]] + [(t, -1) for t in requests["t_done_ns"]],
                        key=lambda e: (e[0], e[1]))
        assert max(np.cumsum([d for _, d in events])) <= 16
        identity[actors] = requests.select("request_id", "session", "turn", "prompt_tokens").sort("request_id")
        if actors == 4:
            assert requests["actor"].n_unique() == 4
    assert identity[1].equals(identity[4])
