"""Which tokenizer makes a run's prompts, per backend, and what to say when a server rejects them.

The rules (docs/workloads.md, "Tokenizers"):

- an experiment's ``tokenizer`` (``--tokenizer``) is loaded or the run stops with one line;
- else a ``token_id_range`` (``--token-id-range``) means ids from that range, no tokenizer;
- else the simulator counts words (:data:`WORD_TOKENIZER`), so it needs no model;
- else the model's own tokenizer (its name) is tried; when it cannot be loaded (offline, no
  tokenizer.json) prompts sent as ids fall back to the default id range, said once in the
  output and recorded in env.json. A chat endpoint cannot fall back: its text must be the model's.

With a tokenizer, every synthetic workload (random, prefix, trace, multiturn) draws its ids from
the tokenizer's vocabulary; the id range is used only where there is none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from raybench.backends.base import BackendKind
from raybench.errors import ConfigError
from raybench.experiment import Backend, Experiment
from raybench.workloads.base import DEFAULT_TOKEN_ID_HIGH, DEFAULT_TOKEN_ID_LOW, Workload
from raybench.workloads.tokenizer import WORD_TOKENIZER, Tokenizer, WordTokenizer, load_tokenizer

Report = Callable[[str], None]

# what engines say about an id beyond the vocabulary (vLLM: "Token id 99723 is out of
# vocabulary"; SGLang and TensorRT-LLM word it differently), lower-cased
_OOV_MARKERS = ("out of vocabulary", "out of vocab", "vocab_size", "token id out of range", "invalid token id")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PromptSource:
    """How one backend's prompts are made: a tokenizer, or ids from a range."""

    tokenizer: str | None  # load_tokenizer name; None: ids from [token_id_low, token_id_high)
    revision: str | None
    token_id_low: int
    token_id_high: int
    text: bool  # prompts carry their text and send it (chat, or a dialect without id prompts)
    record: dict[str, Any]  # env.json / summary.json: which tokenizer, or the fallback and why

    def workload_params(self) -> dict[str, Any]:
        """Keyword arguments every workload takes (see RandomWorkload, SharedPrefixWorkload)."""
        return {"tokenizer": self.tokenizer, "tokenizer_revision": self.revision, "text": self.text,
                "token_id_low": self.token_id_low, "token_id_high": self.token_id_high}

    def cell_record(self, workload: Workload, *, chat: bool) -> dict[str, Any]:
        """The summary's "prompts": the tokenizer, and for chat the template's extra tokens."""
        record = {**self.record, "sent_as": "chat message" if chat else ("text" if self.text else "token ids")}
        if chat and self.tokenizer is not None:
            spec = workload.build([0])[0]
            messages = [{"role": "user", "content": spec.prompt_text}]
            tokenizer = load_tokenizer(self.tokenizer, revision=self.revision)
            # measured on request 0: a single user message gets the same wrapping every time
            record["chat_template_overhead_tokens"] = tokenizer.count_chat(messages) - spec.prompt_tokens
        return record


class PromptSources:
    """Resolves each backend's :class:`PromptSource` once, and says a fallback once per run."""

    def __init__(self, experiment: Experiment, *, report: Report) -> None:
        self._experiment = experiment
        self._report = report
        self._tried: dict[tuple[str, str | None], Tokenizer | ConfigError] = {}
        self._said: set[tuple[str, str | None]] = set()

    def for_backend(self, backend: Backend, *, chat: bool, text: bool) -> PromptSource:
        e = self._experiment
        text = text or chat
        what = "chat prompts" if chat else f"text prompts ({backend.name}'s dialect takes no token ids)"
        if e.tokenizer is not None:
            named = self._load(e.tokenizer, e.tokenizer_revision, explicit=True)
            assert not isinstance(named, ConfigError)  # a named tokenizer that fails raises instead
            return _with_tokenizer(named, e.tokenizer_revision, text)
        simulator = backend.kind is BackendKind.SIM
        if e.token_id_range is not None:
            low, high = e.token_id_range
            if text and not simulator:
                raise ConfigError(f"{backend.name}: {what} need the model's tokenizer to be text of exact length; "
                                  "give --tokenizer (experiment field tokenizer) instead of --token-id-range")
            return _id_range(low, high, text=text, simulator=simulator, why="token_id_range given")
        if simulator:
            return _with_tokenizer(WordTokenizer(), None, text)
        loaded = self._load(e.model, e.tokenizer_revision, explicit=False)
        if isinstance(loaded, ConfigError):
            if text:
                raise ConfigError(f"{backend.name}: {what} need the model's tokenizer ({loaded}); "
                                  "give --tokenizer NAME_OR_PATH (experiment field tokenizer)")
            if (e.model, e.tokenizer_revision) not in self._said:  # once a run, and only where ids are sent
                self._said.add((e.model, e.tokenizer_revision))
                self._report(f"{loaded}; prompts use token ids {DEFAULT_TOKEN_ID_LOW}..{DEFAULT_TOKEN_ID_HIGH - 1} "
                             "instead (give --tokenizer NAME_OR_PATH to draw from the model's vocabulary, or "
                             "--token-id-range LOW:HIGH)")
            return _id_range(DEFAULT_TOKEN_ID_LOW, DEFAULT_TOKEN_ID_HIGH, text=False, simulator=False,
                             why=str(loaded), tried=e.model)
        return _with_tokenizer(loaded, e.tokenizer_revision, text)

    def _load(self, name: str, revision: str | None, *, explicit: bool) -> Tokenizer | ConfigError:
        key = (name, revision)
        if key not in self._tried:
            try:
                self._tried[key] = load_tokenizer(name, revision=revision)
            except ConfigError as err:
                if explicit:
                    raise
                self._tried[key] = err
        return self._tried[key]


def prompt_sources(experiment: Experiment, backends: Iterable[str], *, chat: bool, report: Report) -> dict[str, PromptSource]:
    """The prompt source of each named backend, before any server starts (a named tokenizer that
    does not load stops the run here)."""
    sources = PromptSources(experiment, report=report)
    names = set(backends)
    return {b.name: sources.for_backend(b, chat=chat, text=not b.dialect.token_id_prompts)
            for b in experiment.backends if b.name in names}


def _with_tokenizer(tokenizer: Tokenizer, revision: str | None, text: bool) -> PromptSource:
    record = {"tokenizer": tokenizer.describe(), "fallback": None}
    low, high = DEFAULT_TOKEN_ID_LOW, DEFAULT_TOKEN_ID_HIGH
    if isinstance(tokenizer, WordTokenizer):
        low, high = tokenizer.sample_ids()[0].item(), tokenizer.sample_ids()[-1].item() + 1
    return PromptSource(tokenizer=tokenizer.name, revision=revision, token_id_low=low, token_id_high=high, text=text, record=record)


def _id_range(low: int, high: int, *, text: bool, simulator: bool, why: str, tried: str | None = None) -> PromptSource:
    record = {"tokenizer": None, "fallback": "token_id_range", "token_id_range": [low, high], "why": why,
              "tried": tried}
    # the simulator counts words, so on it a chat text can be the ids spelled as words
    tokenizer = WORD_TOKENIZER if text and simulator else None
    return PromptSource(tokenizer=tokenizer, revision=None, token_id_low=low, token_id_high=high, text=text,
                        record=record)


def oov_hint(error: str, workload: Workload | None) -> str:
    """One sentence for a server's out-of-vocabulary error: the id range used and the flags that fix it."""
    if not any(marker in error.lower() for marker in _OOV_MARKERS):
        return ""
    params = workload.describe() if workload is not None else {}
    low, high = params.get("token_id_low", DEFAULT_TOKEN_ID_LOW), params.get("token_id_high", DEFAULT_TOKEN_ID_HIGH)
    used = params.get("tokenizer")
    what = params.get("name", "the")
    if used and used != WORD_TOKENIZER:
        # file prompts are the file's text encoded, synthetic ones ids from the vocabulary
        origin = "the file's text encoded with" if what in ("sharegpt", "custom") else "ids drawn from the vocabulary of"
        return f" ({what} prompts were {origin} tokenizer {used}: is it the served model's? check --tokenizer)"
    return (f" ({what} prompt ids were drawn from the token-id range {low}..{high - 1}, beyond this model's "
            "vocabulary: give --tokenizer NAME_OR_PATH to draw from the model's own vocabulary, or "
            "--token-id-range LOW:HIGH within it)")
