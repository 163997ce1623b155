"""Mooncake trace replay: file checks, arrival times, prompts built from shared hash-id blocks."""

import json

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.loadgen.arrivals import ArrivalProcess, cell_schedule, split_workload
from raybench.workloads import ScheduledWorkload, ShardableWorkload, TraceWorkload, prompt_text
from raybench.workloads.trace import read_mooncake


def write_trace(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def mooncake_records(n=300, seed=0):
    """A trace shaped like Mooncake's: 512-token blocks, a few hot prefixes shared by many requests."""
    rng = np.random.default_rng(seed)
    records, t, fresh = [], 0, 1000
    for i in range(n):
        t += int(rng.integers(0, 6))
        shared = [int(rng.integers(0, 4)), 10 + int(rng.integers(0, 3))]
        own = list(range(fresh, fresh + int(rng.integers(0, 3))))
        fresh += len(own)
        blocks = shared + own
        records.append({"timestamp": t, "input_length": 512 * len(blocks) - int(rng.integers(0, 300)),
                        "output_length": int(rng.integers(1, 40)), "hash_ids": blocks})
    return records


def test_arrivals_are_the_trace_timestamps_scaled(tmp_path):
    path = write_trace(tmp_path / "t.jsonl", mooncake_records(50))
    stamps = np.array([r["timestamp"] for r in mooncake_records(50)], dtype=float)
    for scale in (1.0, 2.0, 0.25):
        workload = TraceWorkload.from_file(path, time_scale=scale)
        assert isinstance(workload, ScheduledWorkload)
        expected = (stamps - stamps[0]) / 1000 * scale
        np.testing.assert_allclose(workload.arrivals_s(), expected)
        np.testing.assert_allclose(cell_schedule(workload, ArrivalProcess(rate_per_s=5.0)), expected)


def test_lengths_and_shared_blocks_are_byte_for_byte(tmp_path):
    records = mooncake_records(300)
    workload = TraceWorkload.from_file(write_trace(tmp_path / "t.jsonl", records))
    specs = workload.build(range(workload.num_requests))
    assert workload.num_requests == len(specs) == 300
    blocks = {}
    for record, spec in zip(records, specs):
        assert spec.prompt_tokens == record["input_length"] == spec.prompt_token_ids.size
        assert spec.max_tokens == record["output_length"]
        for k, h in enumerate(record["hash_ids"]):
            block = spec.prompt_token_ids[512 * k: 512 * (k + 1)]
            if h in blocks and block.size == 512:
                assert np.array_equal(blocks[h], block)
            elif block.size == 512:
                blocks[h] = block
    # two requests that share their first two hash ids share that prefix as text too
    pairs = [(a, b) for a in range(50) for b in range(a + 1, 50) if records[a]["hash_ids"][:2] == records[b]["hash_ids"][:2]]
    assert pairs
    a, b = pairs[0]
    text_a, text_b = prompt_text(specs[a]), prompt_text(specs[b])
    shared = " ".join(prompt_text(specs[a]).split()[:1024])
    assert text_a.startswith(shared) and text_b.startswith(shared)
    # blocks with different hash ids are different ids
    distinct = [blocks[h].tobytes() for h in sorted(blocks)]
    assert len(set(distinct)) == len(distinct) > 10


def test_a_prompt_longer_than_its_blocks_is_padded_with_its_own_ids(tmp_path):
    path = write_trace(tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [7]},
                                              {"timestamp": 1, "input_length": 600, "output_length": 3, "hash_ids": [7]}])
    a, b = TraceWorkload.from_file(path, block_size=512).build([0, 1])
    assert a.prompt_tokens == b.prompt_tokens == 600
    assert np.array_equal(a.prompt_token_ids[:512], b.prompt_token_ids[:512])
    assert not np.array_equal(a.prompt_token_ids[512:], b.prompt_token_ids[512:])


def test_each_actor_gets_only_its_rows_and_builds_the_same_prompts(tmp_path):
    workload = TraceWorkload.from_file(write_trace(tmp_path / "t.jsonl", mooncake_records(120)))
    whole = {s.request_id: s for s in workload.build(range(120))}
    for actors in (1, 3, 7):
        shards = split_workload(workload, actors)
        assert sorted(i for shard in shards for i in shard) == list(range(120))
        for ids in shards:
            assert isinstance(workload, ShardableWorkload)
            part = workload.shard(ids)
            assert len(part.rows) == len(ids)
            assert part.build(ids) == [whole[i] for i in ids]
            if len(ids) < 120:
                outside = next(i for i in range(120) if i not in ids)
                with pytest.raises(ConfigError, match="request_id"):
                    part.build([outside])


def test_num_prompts_takes_the_first_records(tmp_path):
    workload = TraceWorkload.from_file(write_trace(tmp_path / "t.jsonl", mooncake_records(40)), num_prompts=10)
    assert workload.num_requests == 10 and workload.arrivals_s().size == 10


@pytest.mark.parametrize("content, message", [
    ('{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [0]}\nnot json\n', r"t.jsonl:2: not JSON"),
    ('{"timestamp": 0, "input_length": 5, "hash_ids": [0]}\n', r"t.jsonl:1: missing output_length"),
    ('{"timestamp": 0, "input_length": 0, "output_length": 2, "hash_ids": [0]}\n', r"t.jsonl:1: input_length=0"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": "ab"}\n', r"t.jsonl:1: hash_ids="),
    # sizes that would overflow the ids' integers or exhaust memory building the prompt
    ('{"timestamp": 0, "input_length": 3000000000, "output_length": 2, "hash_ids": [0]}\n',
     r"t.jsonl:1: input_length=3000000000 is not an integer from 1 to 10,000,000"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 10000001, "hash_ids": [0]}\n',
     r"t.jsonl:1: output_length=10000001 is not an integer from 1 to 10,000,000"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [9223372036854775808]}\n',
     r"t.jsonl:1: hash_ids=\[9223372036854775808\] is not a list of integers from 0 to 2\*\*63 - 1"),
    ('{"timestamp": 9, "input_length": 5, "output_length": 2, "hash_ids": [0]}\n'
     '{"timestamp": 3, "input_length": 5, "output_length": 2, "hash_ids": [0]}\n',
     r"t.jsonl:2: timestamp 3 is earlier than the line before \(9\).*sort it by timestamp"),
    ("\n\n", r"holds no records"),
])
def test_bad_traces_name_the_first_bad_line(tmp_path, content, message):
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        read_mooncake(path)
    assert "\n" not in str(caught.value)


def test_a_missing_trace_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"trace file .*nope.jsonl does not exist"):
        TraceWorkload.from_file(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match=r"trace file .* is a directory: give the file itself"):
        TraceWorkload.from_file(tmp_path)


def test_time_scale_must_be_positive(tmp_path):
    path = write_trace(tmp_path / "t.jsonl", mooncake_records(3))
    with pytest.raises(ConfigError, match="time_scale"):
        TraceWorkload.from_file(path, time_scale=0)


def test_segments_share_keys_exactly_where_the_prompts_share_ids(tmp_path):
    records = [{"timestamp": 0, "input_length": 1200, "output_length": 4, "hash_ids": [7, 8, 9]},
               {"timestamp": 1, "input_length": 1500, "output_length": 4, "hash_ids": [7, 8, 5]},
               {"timestamp": 2, "input_length": 1700, "output_length": 4, "hash_ids": [8, 9]}]
    workload = TraceWorkload.from_file(write_trace(tmp_path / "t.jsonl", records))
    specs = workload.build(range(3))
    segs = [workload.segments(i) for i in range(3)]
    assert [sum(t for _, t in s) for s in segs] == [s.prompt_tokens for s in specs] == [1200, 1500, 1700]
    assert [t for _, t in segs[0]] == [512, 512, 176] and [t for _, t in segs[2]] == [512, 512, 676]
    for a, b in ((0, 1), (0, 2), (1, 2)):  # keys agree up to the first block whose ids differ
        ids_a, ids_b = specs[a].prompt_token_ids, specs[b].prompt_token_ids
        same_ids = next(k for k in range(0, 1536, 512) if not np.array_equal(ids_a[k:k + 512], ids_b[k:k + 512]))
        same_keys = next(k for k in range(3) if segs[a][k][0] != segs[b][k][0])
        assert same_keys * 512 == same_ids
    assert TraceWorkload.from_file(tmp_path / "t.jsonl", seed=1).segments(0)[0][0] != segs[0][0][0]


def test_a_forced_output_length_replaces_the_traces_from_an_experiment(tmp_path):
    from raybench.experiment import Experiment, Online, SimBackend
    from raybench.plan import resolve, workload_for

    path = write_trace(tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 20, "output_length": 300, "hash_ids": [0]}])
    def sweep(force):
        return Online(concurrency=(1,), dataset="trace", dataset_path=str(path), num_prompts=1, input_len=8, output_len=64,
                      force_output_len=force)
    for force, sent in ((True, 64), (False, 300)):
        _, cells = resolve(Experiment(name="t", model="meta-llama/Llama-3.1-8B-Instruct", backends=(SimBackend(name="sim"),), online=(sweep(force),)))
        workload = workload_for(cells[0], tokenizer="raybench:words", text=False)
        assert workload.output_len == (64 if force else None) and workload.build([0])[0].max_tokens == sent
        # two sweeps of one trace that differ in the forced length are two cells, not one id run twice
        assert cells[0].id.endswith("-x1-o64" if force else "-x1")


@pytest.mark.parametrize("flags, forced", [(["--output-len", "64"], True), ([], False)])
def test_the_cli_output_len_applies_to_a_trace(tmp_path, monkeypatch, flags, forced):
    from click.testing import CliRunner

    from raybench import cli

    path = write_trace(tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 20, "output_length": 300, "hash_ids": [0]}])
    seen = []
    monkeypatch.setattr(cli, "_run", lambda experiment, **_: seen.append(experiment))
    result = CliRunner().invoke(cli.main, ["bench", "--backend", "sim", "--dataset", "trace", "--dataset-path", str(path),
                                           "--num-prompts", "1", *flags])
    assert result.exit_code == 0, result.output
    sweep = seen[0].online[0]
    assert sweep.force_output_len is forced and sweep.output_len == (64 if forced else 128)
    assert "trace: each line's output_length" in " ".join(CliRunner().invoke(cli.main, ["bench", "--help"]).output.split())
