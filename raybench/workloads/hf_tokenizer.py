"""Hugging Face tokenizers: ``tokenizer.json`` with the ``tokenizers`` library, from a local
directory or the hub (``huggingface_hub``), and ``transformers`` for models without one.

Loaded through :func:`raybench.workloads.tokenizer.load_tokenizer`, which caches them per process;
both classes pickle as their name (:func:`~raybench.workloads.tokenizer.by_reference`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raybench.errors import ConfigError
from raybench.workloads.tokenizer import Message, Tokenizer, by_reference, chat_overhead_tokens

_TOKENIZER_FILE = "tokenizer.json"
_CONFIG_FILE = "tokenizer_config.json"
_TEMPLATE_FILE = "chat_template.jinja"
_HASH_CHARS = 16
# tokenizer_config.json names its special tokens under these keys (each a string or an
# AddedToken-like {"content": ...}); they are excluded from random prompts like the added ones
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class HFTokenizer:
    """A Hugging Face fast tokenizer (``tokenizer.json``) with its ``tokenizer_config.json``."""

    def __init__(self, *, name: str, revision: str | None, backend: Any, config: Mapping[str, Any],
                 chat_template: str | None, content_sha256: str, source: str) -> None:
        self._name, self._revision, self._backend = name, revision, backend
        self._config = dict(config)
        self._template_text = chat_template
        self._sha256, self._source = content_sha256, source
        self._special = self._find_special_ids()
        self._sample: np.ndarray | None = None
        self._template: Any = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special

    @property
    def has_chat_template(self) -> bool:
        return self._template_text is not None

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self._backend.decode_batch([[int(i) for i in one] for one in ids], skip_special_tokens=False)

    def count_chat(self, messages: Sequence[Message]) -> int:
        if self._template_text is None:
            return sum(len(self.encode(str(m.get("content") or ""))) for m in messages)
        # the server renders the template as text and encodes it without adding specials (the
        # template writes its own BOS), which is what vLLM's chat endpoint does
        return len(self.encode(self.render_chat(messages)))

    def render_chat(self, messages: Sequence[Message]) -> str:
        """The prompt text a chat server makes of ``messages`` (generation prompt added)."""
        if self._template_text is None:
            raise ConfigError(f"tokenizer {self._name!r} has no chat template")
        if self._template is None:
            self._template = _compile_template(self._template_text, self._name)
        specials = {key: _token_text(self._config.get(key)) for key in _SPECIAL_KEYS}
        try:
            return self._template.render(messages=[dict(m) for m in messages], add_generation_prompt=True,
                                         **{k: v for k, v in specials.items() if v is not None})
        except Exception as err:  # a template's own raise_exception() or an undefined name
            raise ConfigError(f"chat template of tokenizer {self._name!r} failed: {err}") from err

    def sample_ids(self) -> np.ndarray:
        if self._sample is None:
            ids = sorted(set(self._backend.get_vocab(with_added_tokens=True).values()) - self._special)
            # batched in Rust: a 150k vocabulary takes well under a second, once per process
            texts = self._backend.decode_batch([[i] for i in ids], skip_special_tokens=False)
            encoded = self._backend.encode_batch(texts, add_special_tokens=False)
            whole = [i for i, enc in zip(ids, encoded) if enc.ids == [i]]
            self._sample = np.array(whole, dtype=np.int32)
            if self._sample.size == 0:
                raise ConfigError(f"tokenizer {self._name!r} has no ordinary (non-special) tokens to draw from")
        return self._sample

    def describe(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": self._name, "revision": self._revision, "kind": "huggingface", "source": self._source,
            "tokenizer_json_sha256": self._sha256, "vocab_size": self.vocab_size,
            "num_special_ids": len(self._special), "chat_template": None,
        }
        if self._template_text is not None:
            digest = hashlib.sha256(self._template_text.encode()).hexdigest()[:_HASH_CHARS]
            record["chat_template"] = {"sha256": digest,
                                       "overhead_tokens": chat_overhead_tokens(self, "hello world")}
        return record

    def __reduce__(self) -> tuple[Any, ...]:
        # by reference: the other process loads (once) from the same name or path
        return (by_reference, (self._name, self._revision))

    def _find_special_ids(self) -> frozenset[int]:
        special = {i for i, token in self._backend.get_added_tokens_decoder().items() if token.special}
        for key in _SPECIAL_KEYS:
            text = _token_text(self._config.get(key))
            token_id = self._backend.token_to_id(text) if text else None
            if token_id is not None:
                special.add(int(token_id))
        return frozenset(special)


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _compile_template(text: str, name: str) -> Any:
    """A sandboxed Jinja template, with the options and helpers Hugging Face chat templates expect."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def strftime_now(fmt: str) -> str:
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent, ensure_ascii=False)
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    try:
        return env.from_string(text)
    except jinja2.TemplateError as err:
        raise ConfigError(f"chat template of tokenizer {name!r} does not parse: {err}") from err


def load_local(name: str, path: Path) -> Tokenizer:
    file = path / _TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        return _load_transformers(name, None, why=f"{path} holds no {_TOKENIZER_FILE}")
    folder = file.parent
    config_file, template_file = folder / _CONFIG_FILE, folder / _TEMPLATE_FILE
    return _build(name, None, file, config_file if config_file.is_file() else None,
                  template_file if template_file.is_file() else None, source="local")


def load_hub(name: str, revision: str | None) -> Tokenizer:
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError as err:  # pragma: no cover - tokenizers depends on huggingface_hub
        raise ConfigError(f"tokenizer {name!r}: huggingface_hub is not installed ({err})") from err
    offline = _env_flag("HF_HUB_OFFLINE") or not _reachable(constants.ENDPOINT)

    def fetch(filename: str) -> Path | None:
        """The file's local path; None when the repository has no such file."""
        try:
            return Path(hf_hub_download(name, filename, revision=revision, local_files_only=offline))
        except Exception as err:  # the hub's errors share no base class worth naming here
            kind = type(err).__name__
            if kind in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                return None
            if kind == "LocalEntryNotFoundError":
                why = "it is not in the local Hugging Face cache and the hub is offline or unreachable"
            else:
                why = f"{kind}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no message'}"
            raise ConfigError(f"tokenizer {name!r} could not be loaded ({why}); "
                              "give a local directory holding tokenizer.json") from err

    file = fetch(_TOKENIZER_FILE)
    if file is None:
        return _load_transformers(name, revision, why=f"the model ships no {_TOKENIZER_FILE}")
    return _build(name, revision, file, fetch(_CONFIG_FILE), fetch(_TEMPLATE_FILE), source="hub")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    """Whether the hub answers a TCP connect; the hub client itself retries for ~25 s when it does not.

    Behind a proxy the direct connect says nothing, so the client is left to try.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _build(name: str, revision: str | None, file: Path, config_file: Path | None, template_file: Path | None,
           *, source: str) -> HFTokenizer:
    from tokenizers import Tokenizer as _FastTokenizer

    data = file.read_bytes()
    try:
        backend = _FastTokenizer.from_str(data.decode())
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        raise ConfigError(f"tokenizer {name!r}: {file} is not a tokenizer.json the tokenizers library reads: {err}") from err
    config: dict[str, Any] = {}
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"tokenizer {name!r}: {config_file} is not JSON: {err}") from err
    template = template_file.read_text() if template_file is not None else _config_template(config)
    return HFTokenizer(name=name, revision=revision, backend=backend, config=config, chat_template=template,
                       content_sha256=hashlib.sha256(data).hexdigest()[:_HASH_CHARS], source=source)


def _config_template(config: Mapping[str, Any]) -> str | None:
    """tokenizer_config.json's chat_template: a string, or a list of named ones ("default" first)."""
    template = config.get("chat_template")
    if isinstance(template, str):
        return template
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) else None
    return None


def _load_transformers(name: str, revision: str | None, *, why: str) -> Tokenizer:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError(f"tokenizer {name!r}: {why}, and transformers (which could read its other "
                          "formats) is not installed; pip install transformers, or give a directory with tokenizer.json") from None
    try:
        inner = AutoTokenizer.from_pretrained(name, revision=revision)
    except Exception as err:  # transformers raises OSError, ValueError and more
        raise ConfigError(f"tokenizer {name!r} could not be loaded by transformers: {err}") from err
    return TransformersTokenizer(name=name, revision=revision, inner=inner)


class TransformersTokenizer:
    """A ``transformers`` tokenizer (slow or fast), for models that ship no ``tokenizer.json``."""

    def __init__(self, *, name: str, revision: str | None, inner: Any) -> None:
        self._name, self._revision, self._inner = name, revision, inner
        self._special = frozenset(int(i) for i in inner.all_special_ids)
        self._sample: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        return len(self._inner)

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._inner, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        return list(self._inner.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._inner.decode([int(i) for i in ids])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(one) for one in ids]

    def count_chat(self, messages: Sequence[Message]) -> int:
        if not self.has_chat_template:
            return sum(len(self.encode(str(m.get("content") or ""))) for m in messages)
        text = self._inner.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
        return len(self.encode(text))

    def sample_ids(self) -> np.ndarray:
        if self._sample is None:
            ids = sorted(set(self._inner.get_vocab().values()) - self._special)
            self._sample = np.array([i for i in ids if self.encode(self.decode([i])) == [i]], dtype=np.int32)
        return self._sample

    def describe(self) -> dict[str, Any]:
        return {"name": self._name, "revision": self._revision, "kind": "transformers",
                "class": type(self._inner).__name__, "vocab_size": self.vocab_size,
                "num_special_ids": len(self._special), "chat_template": self.has_chat_template}

    def __reduce__(self) -> tuple[Any, ...]:
        return (by_reference, (self._name, self._revision))
