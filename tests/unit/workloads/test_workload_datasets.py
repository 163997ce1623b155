"""ShareGPT and custom JSONL files: seeded streaming selection, vLLM's filters, token counts, bad files."""

import json
import pickle
import tracemalloc

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.loadgen.arrivals import split_workload
from raybench.workloads.datasets import load_dataset
from raybench.workloads.files import iter_json_array
from raybench.workloads.tokenizer import WORD_TOKENIZER, WordTokenizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


def words(rng, n):
    return " ".join(rng.choice(WORDS, size=n))


def sharegpt_records(n=300, seed=0):
    """Conversations like ShareGPT's; every 10th one too short and every 15th too long to pass."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        prompt_len = 2 if i % 10 == 0 else (1500 if i % 15 == 0 else int(rng.integers(4, 200)))
        turns = [{"from": "human", "value": words(rng, prompt_len)},
                 {"from": "gpt", "value": words(rng, int(rng.integers(4, 300)))}]
        if i % 7 == 0:
            turns = turns[:1]  # a conversation without a reply
        records.append({"id": f"c{i}", "conversations": turns})
    return records


def passing(records):
    out = []
    for r in records:
        turns = r["conversations"]
        if len(turns) < 2:
            continue
        p, o = len(turns[0]["value"].split()), len(turns[1]["value"].split())
        if 4 <= p <= 1024 and o >= 4 and p + o <= 2048:
            out.append((turns[0]["value"], o))
    return out


def sharegpt(path, *, num_prompts, seed=0, output_len=None, text=False):
    return load_dataset("sharegpt", path, num_prompts=num_prompts, output_len=output_len, default_output_len=128,
                        seed=seed, tokenizer=WORD_TOKENIZER, text=text)


@pytest.fixture
def sharegpt_file(tmp_path):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(sharegpt_records(), indent=1))
    return path


def test_sharegpt_applies_vllms_filters_and_counts_with_the_tokenizer(sharegpt_file):
    records = sharegpt_records()
    valid = dict(passing(records))
    workload = sharegpt(sharegpt_file, num_prompts=100)
    specs = workload.build(range(workload.num_requests))
    assert workload.num_requests == len(specs) == 100
    assert all(spec.prompt_text is None for spec in specs)  # ids are sent unless text is asked for
    prompts = [r.text for r in workload.records]
    assert all(p in valid for p in prompts)
    counter = WordTokenizer()
    for spec, record in zip(specs, workload.records):
        assert spec.prompt_tokens == len(counter.encode(record.text)) == len(record.text.split())
        assert spec.max_tokens == valid[record.text]
    # asking for more than pass: every passing pair, once
    everything = sharegpt(sharegpt_file, num_prompts=10_000)
    assert sorted(r.text for r in everything.records) == sorted(valid)
    assert everything.describe()["records_read"] == 300


def test_sampling_is_seeded(sharegpt_file):
    a = [r.text for r in sharegpt(sharegpt_file, num_prompts=50, seed=1).records]
    b = [r.text for r in sharegpt(sharegpt_file, num_prompts=50, seed=1).records]
    c = [r.text for r in sharegpt(sharegpt_file, num_prompts=50, seed=2).records]
    assert a == b and a != c
    # a smaller sample is the start of a larger one (one seeded order, the first that pass)
    assert [r.text for r in sharegpt(sharegpt_file, num_prompts=20, seed=1).records] == a[:20]


def test_a_forced_output_length_replaces_the_replies(sharegpt_file):
    workload = sharegpt(sharegpt_file, num_prompts=30, output_len=17)
    assert {s.max_tokens for s in workload.build(range(30))} == {17}


def test_text_is_sent_when_asked_and_counts_as_the_simulator_counts(sharegpt_file):
    workload = sharegpt(sharegpt_file, num_prompts=10, text=True)
    for spec in workload.build(range(10)):
        assert spec.prompt_text is not None and spec.prompt_tokens == len(spec.prompt_text.split())


@pytest.mark.parametrize("actors", [1, 3, 8])
def test_actors_get_only_their_records_and_build_the_same_prompts(sharegpt_file, actors):
    workload = sharegpt(sharegpt_file, num_prompts=120)
    whole = {s.request_id: s for s in workload.build(range(120))}
    for ids in split_workload(workload, actors):
        part = workload.shard(ids)
        assert len(part.records) == len(ids)
        assert part.build(ids) == [whole[i] for i in ids]


def test_a_large_file_streams_and_actors_get_kilobytes(tmp_path):
    """~12 MB of conversations: the driver's peak memory stays a fraction of the file, and what
    one actor is sent is its share of the selection, not the file."""
    rng = np.random.default_rng(0)
    path = tmp_path / "big.json"
    prompt, reply = words(rng, 80) + " " + "x" * 2500, words(rng, 60)
    with path.open("w") as f:
        f.write("[\n")
        for i in range(4000):
            turns = [{"from": "human", "value": f"{i} {prompt}"}, {"from": "gpt", "value": reply}]
            f.write(("," if i else "") + json.dumps({"conversations": turns}) + "\n")
        f.write("]\n")
    size = path.stat().st_size
    assert size > 10e6
    tracemalloc.start()
    workload = sharegpt(path, num_prompts=200)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert workload.num_requests == 200 and workload.describe()["records_read"] == 4000
    assert peak < size / 4, (peak, size)
    shards = split_workload(workload, 4)
    for ids in shards:
        part = workload.shard(ids)
        text_bytes = sum(len(r.text.encode()) for r in part.records)
        assert len(pickle.dumps(part)) < 1.1 * text_bytes + 10_000 < size / 50


def custom(path, **kw):
    params = {"num_prompts": 1000, "output_len": None, "default_output_len": 32, "tokenizer": WORD_TOKENIZER, **kw}
    return load_dataset("custom", path, **params)


def test_custom_jsonl_takes_prompt_or_messages_and_optional_output_tokens(tmp_path):
    path = tmp_path / "custom.jsonl"
    lines = [{"prompt": "write a poem about the sea", "output_tokens": 40},
             {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]},
             {"prompt": "one two three"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    workload = custom(path)
    by_text = {r.text: r.output_len for r in workload.records}
    assert by_text == {"write a poem about the sea": 40, "be brief\nhi there": 32, "one two three": 32}
    specs = workload.build(range(3))
    assert sorted(s.prompt_tokens for s in specs) == [3, 4, 6]
    assert {s.max_tokens for s in custom(path, output_len=9).build(range(3))} == {9}


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a"}\n{"prompt": \n', r"custom.jsonl:2: not JSON"),
    ('{"prompt": "a"}\n{"text": "b"}\n', r"custom.jsonl:2: a record needs exactly one of \"prompt\" or \"messages\""),
    ('{"prompt": "a", "output_tokens": 0}\n', r"custom.jsonl:1: output_tokens=0"),
    ('{"prompt": "a", "output_tokens": 100000000000}\n',
     r"custom.jsonl:1: output_tokens=100000000000 is not an integer from 1 to 10,000,000"),
    ('{"messages": [{"role": "user"}]}\n', r"custom.jsonl:1: \"messages\" must be"),
])
def test_bad_custom_files_name_the_first_bad_line(tmp_path, content, message):
    path = tmp_path / "custom.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        custom(path)
    assert "\n" not in str(caught.value).replace("\\n", "")


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a"}\n', r"sharegpt.json:1: expected a JSON array"),
    ('[\n {"conversations": []},\n {"conversations": [}\n]', r"sharegpt.json:3: not JSON"),
    ('[{"conversations": []} {"conversations": []}]', r"sharegpt.json:1: expected ',' or ']'"),
])
def test_bad_sharegpt_files_name_the_first_bad_line(tmp_path, content, message):
    path = tmp_path / "sharegpt.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        sharegpt(path, num_prompts=5)


def test_a_sharegpt_file_where_nothing_passes_says_so(tmp_path):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}] * 5))
    with pytest.raises(ConfigError, match=r"none of its 5 records passes the filters \(.*prompt 4\.\.1024 tokens"):
        sharegpt(path, num_prompts=5)


def test_missing_files_and_missing_tokenizers_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"sharegpt dataset file .*nope.json does not exist"):
        sharegpt(tmp_path / "nope.json", num_prompts=1)
    with pytest.raises(ConfigError, match=r"sharegpt dataset file .* is a directory: give the file itself"):
        sharegpt(tmp_path, num_prompts=1)
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "a b c d"}\n')
    with pytest.raises(ConfigError, match="give --tokenizer"):
        custom(path, tokenizer=None)


def test_the_array_reader_handles_elements_across_its_buffer(tmp_path, monkeypatch):
    from raybench.workloads import files

    monkeypatch.setattr(files, "_CHUNK_BYTES", 7)
    path = tmp_path / "a.json"
    values = [{"k": "v" * 20, "n": 12345}, 678, "text\nwith newline", [1, [2, 3]], 9.5]
    path.write_text("[\n" + ",\n".join(json.dumps(v) for v in values) + "\n]")
    got = list(iter_json_array(path, "[...]"))
    assert [v for _, v in got] == values
    assert [line for line, _ in got] == [2, 3, 4, 5, 6]


CONV = {"conversations": [{"from": "human", "value": "alpha beta gamma delta"}, {"from": "gpt", "value": "eta theta iota kappa"}]}


def test_sharegpt_records_without_a_conversation_are_skipped_as_vllm_does(tmp_path):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([{"id": "x"}, {"conversations": []}, 7, CONV, {"conversations": [CONV["conversations"][0]]}]))
    workload = sharegpt(path, num_prompts=5)
    assert [r.text for r in workload.records] == ["alpha beta gamma delta"] and workload.num_read == 5
    path.write_text(json.dumps([{"id": "x"}, {"conversations": []}]))
    with pytest.raises(ConfigError, match=r"none of its 2 records passes the filters \(a \"conversations\" list") as caught:
        sharegpt(path, num_prompts=5)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("chunk", [7, 1 << 18])
def test_sharegpt_bytes_that_are_not_utf8_stop_with_their_place(tmp_path, monkeypatch, chunk):
    from raybench.workloads import files

    monkeypatch.setattr(files, "_CHUNK_BYTES", chunk)
    path = tmp_path / "sharegpt.json"
    data = ("[\n" + json.dumps(CONV) + ",\n" + json.dumps(CONV).replace("kappa", "k\u00e9ppa") + "\n]").encode()
    bad = data.index("\u00e9".encode()) + 1  # the é as latin-1: its second byte, 0xa9, cut from its first
    path.write_bytes(data.replace("\u00e9".encode(), b"\xe9"))
    with pytest.raises(ConfigError) as caught:
        sharegpt(path, num_prompts=5)
    assert str(caught.value).startswith(f"{path}:3: byte {bad - 1} (0xe9) is not UTF-8")
    assert "\n" not in str(caught.value)


def test_a_sharegpt_file_may_start_with_a_byte_order_mark(tmp_path, monkeypatch):
    from raybench.workloads import files

    monkeypatch.setattr(files, "_CHUNK_BYTES", 2)  # the mark split over two reads
    path = tmp_path / "sharegpt.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([CONV]).encode())
    assert [r.text for r in sharegpt(path, num_prompts=5).records] == ["alpha beta gamma delta"]


def test_a_syntax_error_early_in_a_large_file_stops_without_reading_the_rest(tmp_path, monkeypatch):
    from raybench.workloads import files

    reads = []
    real_fill = files._ArrayReader._fill
    monkeypatch.setattr(files._ArrayReader, "_fill", lambda self: (reads.append(1), real_fill(self)))
    monkeypatch.setattr(files, "_CHUNK_BYTES", 4096)
    element = json.dumps(CONV)
    path = tmp_path / "a.json"
    path.write_text("[\n" + element + ",\n" + element[:-1] + ",,\n" + (element + ",\n") * 20_000 + element + "\n]")
    with pytest.raises(ConfigError, match=r"a.json:3: not JSON \(Expecting property name"):
        list(iter_json_array(path, "[...]"))
    assert len(reads) <= 2  # not one read per 4 KB of a 2 MB file


def test_a_long_element_is_read_in_growing_pieces(tmp_path, monkeypatch):
    from raybench.workloads import files

    reads = []
    real_fill = files._ArrayReader._fill
    monkeypatch.setattr(files._ArrayReader, "_fill", lambda self: (reads.append(1), real_fill(self)))
    monkeypatch.setattr(files, "_CHUNK_BYTES", 1024)
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"value": "x" * 4_000_000}, 5]))
    assert [v for _, v in iter_json_array(path, "[...]")] == [{"value": "x" * 4_000_000}, 5]
    assert len(reads) < 30  # doubling: ~log2(4 MB / 1 KB) reads, not 4,000
