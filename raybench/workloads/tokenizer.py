"""Tokenizers: the model's own (Hugging Face ``tokenizers``), or the simulator's word counter.

A prompt of "exactly N tokens" means N tokens *of the model's tokenizer*; ids drawn from a
fixed range are only safe for a model whose vocabulary covers that range. So workloads count
and draw with the model's tokenizer where one is given.

:func:`load_tokenizer` is cached per process, so each load-generator actor reads a tokenizer
once; a tokenizer pickles as its name (``load_tokenizer`` again on the other side), so sending a
workload to an actor never ships a vocabulary through Ray's object store.

Sources, in order: :data:`WORD_TOKENIZER` (the simulator's count: one token per
whitespace-separated word); a local directory holding ``tokenizer.json`` (or that file itself);
a Hugging Face model name, fetched with ``huggingface_hub`` (its cache first, the network only
where ``HF_HUB_OFFLINE`` is unset). ``transformers``' ``AutoTokenizer`` is used only for a model
that ships no ``tokenizer.json`` and only where ``transformers`` is installed.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from raybench.errors import ConfigError

#: The simulator's own tokenizer: one token per whitespace-separated word.
WORD_TOKENIZER = "raybench:words"

Message = Mapping[str, Any]


@runtime_checkable
class Tokenizer(Protocol):
    """What workloads need of a tokenizer; :class:`HFTokenizer` and :class:`WordTokenizer` meet it."""

    @property
    def name(self) -> str:
        """The name or path it was loaded from (what :func:`load_tokenizer` takes back)."""
        ...

    @property
    def vocab_size(self) -> int:
        """Ids are in ``[0, vocab_size)``; added tokens included."""
        ...

    @property
    def special_ids(self) -> frozenset[int]:
        """Control tokens (BOS/EOS, chat markers): never drawn into a random prompt."""
        ...

    @property
    def has_chat_template(self) -> bool: ...

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``, with no special tokens added (no BOS)."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` of each text (in parallel where the library can)."""
        ...

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]: ...

    def count_chat(self, messages: Sequence[Message]) -> int:
        """Prompt tokens a chat server sees for ``messages``: the chat template applied
        (with the generation prompt) where there is one, else the messages' own tokens."""
        ...

    def sample_ids(self) -> np.ndarray:
        """Sorted int32 ids a random prompt draws from: the vocabulary minus the special ids and
        minus the ids that are no text on their own (a byte of a multi-byte character, which
        decodes to U+FFFD): those can never survive a decode -> encode round trip."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-safe identity for env.json: name, revision or content hash, vocabulary size."""
        ...


def chat_overhead_tokens(tokenizer: Tokenizer, content: str) -> int:
    """Tokens the chat template adds around one user message holding ``content``."""
    return tokenizer.count_chat([{"role": "user", "content": content}]) - len(tokenizer.encode(content))


class WordTokenizer:
    """The simulator's count: one token per whitespace-separated word (see ``raybench/sim/api.py``).

    Token id ``i`` is the word ``w<i>``, so a prompt of N ids is a text of N words and prompts
    that share prefix ids share a text prefix. Other words get a stable id (a CRC of the word).
    """

    def __init__(self, *, vocab_low: int = 1000, vocab_high: int = 100_000) -> None:
        if not 0 <= vocab_low < vocab_high:
            raise ConfigError.invalid("word tokenizer range", (vocab_low, vocab_high), "0 <= low < high")
        self._low, self._high = vocab_low, vocab_high

    name = WORD_TOKENIZER
    has_chat_template = False
    special_ids: frozenset[int] = frozenset()

    @property
    def vocab_size(self) -> int:
        return self._high

    def encode(self, text: str) -> list[int]:
        return [self._word_id(word) for word in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(f"w{int(i)}" for i in ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(one) for one in ids]

    def count_chat(self, messages: Sequence[Message]) -> int:
        # as the simulator counts a chat request: the words of every message, at least 1
        words = 0
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                words += len(content.split())
        return max(words, 1)

    def sample_ids(self) -> np.ndarray:
        return np.arange(self._low, self._high, dtype=np.int32)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "words", "vocab_size": self.vocab_size,
                "sample_range": [self._low, self._high],
                "note": "the simulator's count: one token per whitespace-separated word"}

    def _word_id(self, word: str) -> int:
        if word[:1] == "w" and word[1:].isdigit():
            return int(word[1:])
        return zlib.crc32(word.encode()) % self._high

    def __reduce__(self) -> tuple[Any, ...]:
        return (WordTokenizer, (), {"_low": self._low, "_high": self._high})


def load_tokenizer(name_or_path: str, *, revision: str | None = None) -> Tokenizer:
    """The tokenizer called ``name_or_path``: loaded once per process, then shared.

    A local path is made absolute (its ``name``), so actors started elsewhere load the same
    files; on a multi-node cluster the path must exist on the client nodes too. Raises
    :class:`ConfigError` (one line: what was tried and how to fix it) when it cannot be loaded.
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError.invalid("tokenizer", name_or_path, "a local directory with tokenizer.json or a Hugging Face model name")
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ConfigError.invalid("tokenizer_revision", revision, "a branch, tag or commit of the model repository, or None")
    path = Path(name_or_path).expanduser()
    if name_or_path != WORD_TOKENIZER and path.exists():
        name_or_path = str(path.resolve())
    return _load_cached(name_or_path, revision)


def by_reference(name: str, revision: str | None) -> Tokenizer:
    """How a tokenizer unpickles: loaded again (once per process) from its name."""
    return load_tokenizer(name, revision=revision)


@functools.lru_cache(maxsize=16)
def _load_cached(name_or_path: str, revision: str | None) -> Tokenizer:
    # one vocabulary per process, however many workloads and cells use it
    if name_or_path == WORD_TOKENIZER:
        return WordTokenizer()
    from raybench.workloads import hf_tokenizer  # tokenizers, jinja2, huggingface_hub: only when needed

    path = Path(name_or_path)
    if path.exists():
        return hf_tokenizer.load_local(name_or_path, path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ConfigError(f"tokenizer {name_or_path!r}: no such file or directory")
    return hf_tokenizer.load_hub(name_or_path, revision)
