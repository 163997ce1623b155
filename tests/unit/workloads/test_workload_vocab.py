"""Trace and multi-turn prompts under a model's tokenizer: ids from its vocabulary, exact lengths,
shared prefixes kept, the same on any actor (on a tiny byte-level BPE trained here, no network)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.loadgen.arrivals import split_workload
from raybench.prompting import oov_hint
from raybench.workloads import MultiTurnWorkload, RequestSpec, TraceWorkload
from raybench.workloads.tokenizer import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
from tiny_tokenizer import make_tokenizer

OOV = "Token id 99723 is out of vocabulary"


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> str:
    # 543 ids: far below the default id range 1000..99999 that these workloads used to draw from
    return str(make_tokenizer(tmp_path_factory.mktemp("bpe"), kind="bpe"))


def write_trace(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# block 0 opens five requests; request 3 is longer than its blocks (padded); 5 repeats 2
TRACE = [{"timestamp": 0, "input_length": 700, "output_length": 4, "hash_ids": [0, 1]},
         {"timestamp": 1, "input_length": 1024, "output_length": 4, "hash_ids": [0, 1]},
         {"timestamp": 2, "input_length": 900, "output_length": 4, "hash_ids": [0, 2]},
         {"timestamp": 3, "input_length": 1300, "output_length": 4, "hash_ids": [0, 2]},
         {"timestamp": 4, "input_length": 300, "output_length": 4, "hash_ids": [5]},
         {"timestamp": 5, "input_length": 900, "output_length": 4, "hash_ids": [0, 2]}]


def assert_exact(spec: RequestSpec, length: int, bpe: str) -> None:
    tok = load_tokenizer(bpe)
    ids = spec.prompt_token_ids.tolist()
    assert spec.prompt_tokens == len(ids) == length
    assert set(ids) <= set(tok.sample_ids().tolist())  # in the vocabulary, no control tokens
    assert tok.encode(tok.decode(ids)) == ids


@pytest.mark.parametrize("text", [False, True])
def test_trace_prompts_come_from_the_vocabulary_at_the_planned_length(tmp_path: Path, bpe: str, text: bool) -> None:
    workload = TraceWorkload.from_file(write_trace(tmp_path / "t.jsonl", TRACE), tokenizer=bpe, text=text)
    specs = workload.build(range(len(TRACE)))
    for record, spec in zip(TRACE, specs):
        assert_exact(spec, record["input_length"], bpe)
        assert (spec.prompt_text is not None) == text
        if text:
            assert load_tokenizer(bpe).encode(spec.prompt_text) == spec.prompt_token_ids.tolist()
    # sent as ids or as text, the server gets the same prompt
    other = TraceWorkload.from_file(tmp_path / "t.jsonl", tokenizer=bpe, text=not text).build(range(len(TRACE)))
    assert all(np.array_equal(a.prompt_token_ids, b.prompt_token_ids) for a, b in zip(specs, other))


def test_trace_requests_that_share_hash_ids_share_those_blocks_ids_and_text(tmp_path: Path, bpe: str) -> None:
    workload = TraceWorkload.from_file(write_trace(tmp_path / "t.jsonl", TRACE), tokenizer=bpe, text=True)
    a, b, c, d, e, f = workload.build(range(len(TRACE)))
    block0 = a.prompt_token_ids[:512]
    for spec in (b, c, d, f):
        assert np.array_equal(spec.prompt_token_ids[:512], block0)
        assert spec.prompt_text.startswith(load_tokenizer(bpe).decode(block0.tolist()))
    assert c == dataclasses.replace(f, request_id=2)  # the same hash ids and length: the same prompt
    assert not np.array_equal(b.prompt_token_ids[512:], d.prompt_token_ids[512:1024])  # block 1 is not block 2
    assert not np.array_equal(e.prompt_token_ids[:300], block0[:300])


def test_trace_prompts_are_the_same_whichever_actor_builds_them(tmp_path: Path, bpe: str) -> None:
    rng = np.random.default_rng(0)
    records = [{"timestamp": i, "input_length": int(rng.integers(1, 1600)), "output_length": 2,
                "hash_ids": [int(rng.integers(0, 3)), int(rng.integers(10, 12)), 100 + i]} for i in range(40)]
    workload = TraceWorkload.from_file(write_trace(tmp_path / "t.jsonl", records), tokenizer=bpe, text=True, seed=4)
    whole = {s.request_id: s for s in workload.build(range(40))}
    for actors in (3, 7):
        for ids in split_workload(workload, actors):
            assert workload.shard(ids).build(ids) == [whole[i] for i in ids]
    assert [whole[i] for i in (39, 2, 17)] == workload.build([39, 2, 17])
    assert all(whole[i].prompt_tokens == records[i]["input_length"] for i in range(40))


@pytest.mark.parametrize("text", [False, True])
def test_multiturn_prompts_come_from_the_vocabulary_and_keep_each_earlier_turn(bpe: str, text: bool) -> None:
    workload = MultiTurnWorkload(num_sessions=4, num_turns=3, input_len=40, output_len=15, turn_input_len=9,
                                 tokenizer=bpe, text=text)
    specs = workload.build(range(12))
    for spec in specs:
        assert_exact(spec, workload.prompt_len(spec.turn), bpe)
        if spec.turn:
            previous = specs[spec.request_id - 1]
            assert np.array_equal(spec.prompt_token_ids[: previous.prompt_tokens], previous.prompt_token_ids)
            if text:
                assert spec.prompt_text.startswith(previous.prompt_text)
    assert not np.array_equal(specs[0].prompt_token_ids, specs[3].prompt_token_ids)
    # a turn built alone, or sessions split over actors, give the same prompts
    assert [workload.build([i])[0] for i in (11, 4, 0)] == [specs[11], specs[4], specs[0]]
    for ids in split_workload(workload, 3):
        assert workload.build(ids) == [specs[i] for i in ids]


def test_an_empty_prompt_is_refused_with_one_line() -> None:
    with pytest.raises(ConfigError, match=r"request 3: its prompt has no tokens") as caught:
        RequestSpec(request_id=3, prompt_token_ids=np.zeros(0, np.int32), prompt_tokens=0, max_tokens=4)
    assert "\n" not in str(caught.value)


def test_the_oov_hint_says_where_trace_and_multiturn_ids_came_from(tmp_path: Path, bpe: str) -> None:
    path = write_trace(tmp_path / "t.jsonl", TRACE)
    with_tokenizer = oov_hint(OOV, TraceWorkload.from_file(path, tokenizer=bpe))
    assert f"trace prompts were ids drawn from the vocabulary of tokenizer {bpe}" in with_tokenizer
    ranged = oov_hint(OOV, TraceWorkload.from_file(path, token_id_low=5, token_id_high=60_000))
    assert "trace prompt ids were drawn from the token-id range 5..59999" in ranged and "--tokenizer" in ranged
    multiturn = oov_hint(OOV, MultiTurnWorkload(num_sessions=1, num_turns=1, input_len=3, output_len=1))
    assert "multiturn prompt ids were drawn from the token-id range 1000..99999" in multiturn
