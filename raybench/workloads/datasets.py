"""Prompts from files: ShareGPT conversations and custom JSONL, sampled once on the driver.

ShareGPT (the JSON file vLLM and SGLang read) is an array of ``{"conversations": [{"from":
"human", "value": ...}, {"from": "gpt", "value": ...}, ...]}``; a record's prompt is its first
turn and its output length the token count of the second, unless ``output_len`` is forced.
vLLM's filters apply (``is_valid_sequence``): a pair is skipped when the prompt or the reply has
fewer than 4 tokens, the prompt more than 1024, or both together more than 2048 (the reply's
check is skipped when the output length is forced). Custom JSONL has one record a line, with
``prompt`` (text) or ``messages`` (chat messages), and optionally ``output_tokens``.

Sampling is seeded and done once, on the driver, streaming: each record gets a key from
``default_rng([seed, index])`` (its position in the file) and the ``num_prompts`` smallest keys among the records that pass
the filters are kept (a seeded shuffle, then the first that pass, as vLLM does, without holding
the file). Only a record whose key could still make the cut is tokenized. The workload then
holds the selected records' text alone, and each actor is sent only its own requests'.
Lengths are counted with the run's tokenizer (the simulator's word count on the simulator).
"""

from __future__ import annotations

import heapq
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from raybench.errors import ConfigError
from raybench.workloads.base import MAX_TOKENS, RequestSpec, check_tokenizer, require_int
from raybench.workloads.files import iter_json_array, iter_jsonl, require_file
from raybench.workloads.tokenizer import Tokenizer, load_tokenizer

SHAREGPT_EXAMPLE = '[{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}]'
CUSTOM_EXAMPLE = '{"prompt": "Write a haiku about GPUs", "output_tokens": 64}'
# vLLM's is_valid_sequence defaults (vllm/benchmarks/datasets.py)
MIN_TOKENS, MAX_PROMPT_TOKENS, MAX_TOTAL_TOKENS = 4, 1024, 2048


@dataclass(frozen=True, kw_only=True)
class Record:
    """One selected prompt: its text and output length; ``line`` locates it in the file."""

    line: int
    text: str
    output_len: int


@dataclass(frozen=True, kw_only=True, eq=False)
class FileDatasetWorkload:
    """Requests ``0 .. num_requests - 1`` are the selected records, in sampled order."""

    kind: str  # sharegpt | custom
    source: str
    records: tuple[Record, ...] = field(repr=False)
    request_ids: tuple[int, ...] = field(repr=False)
    num_selected: int
    num_read: int
    seed: int = 0
    tokenizer: str | None = None
    tokenizer_revision: str | None = None
    text: bool = False
    token_id_low: int = 0  # unused: prompts are the file's text; accepted like every workload
    token_id_high: int = 1

    def __post_init__(self) -> None:
        check_tokenizer(self.kind, self.tokenizer, self.tokenizer_revision, self.text)

    @property
    def num_requests(self) -> int:
        return self.num_selected

    def shard(self, request_ids: Sequence[int]) -> FileDatasetWorkload:
        positions = self._positions(request_ids)
        return replace(self, records=tuple(self.records[p] for p in positions),
                       request_ids=tuple(self.request_ids[p] for p in positions))

    def build(self, request_ids: Sequence[int]) -> list[RequestSpec]:
        tokenizer = _tokenizer(self.tokenizer, self.tokenizer_revision)
        specs = []
        for request_id, position in zip(request_ids, self._positions(request_ids)):
            record = self.records[position]
            ids = np.asarray(tokenizer.encode(record.text), dtype=np.int32)
            specs.append(RequestSpec(
                request_id=int(request_id), prompt_token_ids=ids, prompt_tokens=int(ids.size),
                max_tokens=record.output_len, prompt_text=record.text if self.text else None,
            ))
        return specs

    def describe(self) -> dict[str, Any]:
        lengths = [r.output_len for r in self.records]
        return {"name": self.kind, "source": self.source, "num_requests": self.num_requests, "records_read": self.num_read,
                "seed": self.seed, "tokenizer": self.tokenizer,
                "sent_as": "text" if self.text else "token ids of the text",
                "mean_output_len": float(np.mean(lengths)) if lengths else 0.0}

    def _positions(self, request_ids: Sequence[int]) -> list[int]:
        index = {rid: p for p, rid in enumerate(self.request_ids)}
        try:
            return [index[int(r)] for r in request_ids]
        except KeyError as err:
            raise ConfigError.invalid("request_id", err.args[0], f"one of the {len(index)} requests this workload holds") from None


def _tokenizer(name: str | None, revision: str | None) -> Tokenizer:
    if name is None:
        raise ConfigError("a dataset file's prompts are text, counted with the model's tokenizer, which could not be "
                          "loaded: give --tokenizer NAME_OR_PATH (experiment field tokenizer)")
    return load_tokenizer(name, revision=revision)


def load_dataset(kind: str, path: str | Path, *, num_prompts: int, output_len: int | None, default_output_len: int,
                 seed: int = 0, tokenizer: str | None = None, tokenizer_revision: str | None = None, text: bool = False,
                 **ignored: Any) -> FileDatasetWorkload:
    """Sample ``num_prompts`` records of a ShareGPT or custom file; ``output_len`` forces every output.

    ``default_output_len`` is for custom records without ``output_tokens``. ``ignored`` takes the
    id-range parameters every workload is given (a file's prompts are its text).
    """
    require_int(f"{kind}.num_prompts", num_prompts, minimum=1)
    require_int(f"{kind}.seed", seed, minimum=0)
    if output_len is not None:
        require_int(f"{kind}.output_len", output_len, minimum=1)
    if kind not in READERS:
        raise ConfigError.unknown("file dataset", kind, READERS)
    path = require_file(path, f"{kind} dataset")
    counter = _tokenizer(tokenizer, tokenizer_revision)
    count = lambda s: len(counter.encode(s))  # noqa: E731
    picked, read = _sample(READERS[kind](path, count, output_len, default_output_len), num_prompts, seed)
    if not picked:
        raise ConfigError(f"{path}: none of its {read} records passes the filters ({FILTERS[kind]}); "
                          "check the file's format, or force --output-len")
    records = tuple(r for _, _, r in sorted(picked, key=lambda item: (-item[0], item[1])))
    return FileDatasetWorkload(kind=kind, source=str(path), records=records, request_ids=tuple(range(len(records))),
                               num_selected=len(records), num_read=read, seed=seed, tokenizer=tokenizer,
                               tokenizer_revision=tokenizer_revision, text=text)


Candidate = Callable[[], "Record | None"]  # builds (and tokenizes) the record; None: filtered out


def _sample(candidates: Iterator[tuple[int, Candidate | None]], k: int, seed: int) -> tuple[list, int]:
    """The ``k`` records with the smallest seeded keys among those that pass (a max-heap of size k)."""
    heap: list[tuple[float, int, Record]] = []  # (-key, index in the file, record)
    read = 0
    for index, (_, make) in enumerate(candidates):
        read += 1
        if make is None:
            continue
        key = float(np.random.default_rng([seed, index]).random())
        if len(heap) == k and key >= -heap[0][0]:
            continue  # could not make the cut: not tokenized at all
        record = make()
        if record is None:
            continue
        item = (-key, index, record)
        if len(heap) < k:
            heapq.heappush(heap, item)
        else:
            heapq.heapreplace(heap, item)
    return heap, read


def _sharegpt(path: Path, count: Callable[[str], int], output_len: int | None,
              default_output_len: int) -> Iterator[tuple[int, Candidate | None]]:
    for line, entry in iter_json_array(path, SHAREGPT_EXAMPLE):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        # read, but skipped as vLLM skips them: no conversation, or one shorter than a prompt and
        # its reply (ShareGPT dumps hold such records; a file of nothing else fails in load_dataset)
        if not isinstance(turns, list) or len(turns) < 2 or not all(
                isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns[:2]):
            yield line, None
            continue
        yield line, (lambda p=turns[0]["value"], r=turns[1]["value"], ln=line: _sharegpt_pair(ln, p, r, count, output_len))


def _sharegpt_pair(line: int, prompt: str, reply: str, count: Callable[[str], int], output_len: int | None) -> Record | None:
    prompt_len = count(prompt)
    reply_len = count(reply) if output_len is None else output_len
    if prompt_len < MIN_TOKENS or (output_len is None and reply_len < MIN_TOKENS):
        return None
    if prompt_len > MAX_PROMPT_TOKENS or prompt_len + reply_len > MAX_TOTAL_TOKENS:
        return None
    return Record(line=line, text=prompt, output_len=reply_len)


def _custom(path: Path, count: Callable[[str], int], output_len: int | None,
            default_output_len: int) -> Iterator[tuple[int, Candidate]]:
    for line, entry in iter_jsonl(path, CUSTOM_EXAMPLE):
        record = _custom_record(path, line, entry, output_len or entry.get("output_tokens", default_output_len)
                                if isinstance(entry, dict) else output_len)
        yield line, (lambda r=record: r if count(r.text) >= 1 else None)


def _custom_record(path: Path, line: int, entry: Any, output_len: Any) -> Record:
    """A custom line as a record; chat ``messages`` become one text, their contents joined by newlines."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}:{line}: {what}; expected e.g. {CUSTOM_EXAMPLE} or "
                           '{"messages": [{"role": "user", "content": "Hi"}]}')

    if not isinstance(entry, dict) or ("prompt" in entry) == ("messages" in entry):
        raise bad("a record needs exactly one of \"prompt\" or \"messages\"")
    if "prompt" in entry:
        if not isinstance(entry["prompt"], str) or not entry["prompt"].strip():
            raise bad("\"prompt\" must be a non-empty string")
        text = entry["prompt"]
    else:
        raw = entry["messages"]
        if not isinstance(raw, list) or not raw or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in raw):
            raise bad("\"messages\" must be a non-empty list of {\"role\": ..., \"content\": ...}")
        text = "\n".join(m["content"] for m in raw)
    if isinstance(output_len, bool) or not isinstance(output_len, numbers.Integral) or not 1 <= output_len <= MAX_TOKENS:
        raise bad(f"output_tokens={output_len!r} is not an integer from 1 to {MAX_TOKENS:,}")
    return Record(line=line, text=text, output_len=int(output_len))


READERS = {"sharegpt": _sharegpt, "custom": _custom}
FILTERS = {
    "sharegpt": "a \"conversations\" list whose first 2 turns have a text \"value\", "
                f"prompt {MIN_TOKENS}..{MAX_PROMPT_TOKENS} tokens, reply >= {MIN_TOKENS}, both <= {MAX_TOTAL_TOKENS}, "
                "as vLLM's ShareGPT sampling",
    "custom": "a non-empty prompt",
}
