"""What a workload hands the load generator: one :class:`RequestSpec` per request index.

A workload is a pure, seeded function from a request index to a prompt and an output length.
Every request is rebuilt from its own index (never from "the next draw" of a shared stream),
so a cell split over any number of load-generator actors sends exactly the same prompts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from raybench.errors import ConfigError

# Ids below ~1000 hold the special and control tokens of common tokenizers (BOS/EOS, chat
# markers, reserved slots); random prompts stay clear of them so no request ends early or
# changes meaning. 100000 fits inside the vocabularies of Llama 3 (128k) and DeepSeek (129k).
DEFAULT_TOKEN_ID_LOW = 1000
DEFAULT_TOKEN_ID_HIGH = 100_000
#: longest prompt or output a workload builds: ten times the longest context any model serves
#: today; beyond it a cell would exhaust memory building prompts long before a server refused them
MAX_TOKENS = 10_000_000
_INT32_LIMIT = 2**31


@dataclass(frozen=True, kw_only=True, eq=False)
class RequestSpec:
    """One request as the load generator sends it.

    ``prompt_tokens`` is the exact prompt length in tokens (the tokenizer's count of what is
    sent). ``prompt_text``, when set, is sent instead of the ids (as the completion prompt or the
    chat message); it is the tokenizer's decoding of ``prompt_token_ids``, which encode back to
    exactly those ids. When it is ``None`` the ids are sent as a list (and a chat endpoint gets
    the simulator's word form, :func:`prompt_text`). ``max_tokens`` is the forced output length
    (the client sends ``ignore_eos``). ``group`` is the shared-prefix group, ``None`` when the
    workload has no prefixes. The id array is read-only, as the record is frozen.
    ``session`` and ``turn`` place a request in a multi-turn conversation (None outside one);
    a turn after the first is sent ``think_time_s`` after the previous turn's answer ended.
    """

    request_id: int
    prompt_token_ids: np.ndarray
    prompt_tokens: int
    max_tokens: int
    group: int | None = None
    prompt_text: str | None = None
    session: int | None = None
    turn: int | None = None
    think_time_s: float = 0.0

    def __post_init__(self) -> None:
        ids = np.asarray(self.prompt_token_ids)
        if ids.ndim != 1 or ids.dtype != np.int32:
            raise ConfigError.invalid(
                "prompt_token_ids",
                f"array(dtype={ids.dtype}, shape={ids.shape})",
                "a 1-D int32 array",
            )
        if ids.size < 1:
            raise ConfigError(f"request {self.request_id}: its prompt has no tokens, and no server takes an empty "
                              "prompt; give prompts at least 1 token long (check the workload's lengths or the file)")
        if self.prompt_tokens != ids.size:
            raise ConfigError.invalid(
                "prompt_tokens", self.prompt_tokens, f"the number of prompt ids ({ids.size})"
            )
        if self.request_id < 0:
            raise ConfigError.invalid("request_id", self.request_id, "an integer >= 0")
        if self.max_tokens < 1:
            raise ConfigError.invalid("max_tokens", self.max_tokens, "an integer >= 1")
        if self.prompt_text is not None and not isinstance(self.prompt_text, str):
            raise ConfigError.invalid("prompt_text", type(self.prompt_text).__name__, "a string or None")
        if (self.session is None) != (self.turn is None):
            raise ConfigError.invalid("turn", self.turn, "set together with session, or both None")
        if not self.think_time_s >= 0:
            raise ConfigError.invalid("think_time_s", self.think_time_s, "a number of seconds >= 0")
        # A read-only view, so the caller's array keeps its own flags.
        frozen_ids = ids.view()
        frozen_ids.flags.writeable = False
        object.__setattr__(self, "prompt_token_ids", frozen_ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestSpec):
            return NotImplemented
        return (
            self.request_id == other.request_id
            and self.prompt_tokens == other.prompt_tokens
            and self.max_tokens == other.max_tokens
            and self.group == other.group
            and self.prompt_text == other.prompt_text
            and self.session == other.session
            and self.turn == other.turn
            and np.array_equal(self.prompt_token_ids, other.prompt_token_ids)
        )

    def __hash__(self) -> int:
        return hash((self.request_id, self.max_tokens, self.group, self.prompt_text, self.prompt_token_ids.tobytes()))


@runtime_checkable
class Workload(Protocol):
    """A seeded prompt source; the loadgen owns this seam, workloads implement it."""

    @property
    def num_requests(self) -> int:
        """How many requests one cell sends (valid indices are ``0 .. num_requests - 1``)."""
        ...

    def build(self, request_ids: Sequence[int]) -> list[RequestSpec]:
        """The specs of these indices, in the order given; the same index gives the same spec."""
        ...

    def describe(self) -> dict[str, Any]:
        """The resolved parameters, JSON-safe, for the run metadata."""
        ...


@runtime_checkable
class ScheduledWorkload(Protocol):
    """A workload that owns its arrival times (a trace replay): the runner uses them as they are."""

    def arrivals_s(self) -> np.ndarray:
        """Seconds from the cell start of requests ``0 .. num_requests - 1``."""
        ...


@runtime_checkable
class SessionWorkload(Protocol):
    """A workload whose requests come in sessions sent one turn after another, on one actor."""

    def sessions(self) -> list[tuple[int, ...]]:
        """Request ids of every session, each in turn order; together every request once."""
        ...


@runtime_checkable
class ShardableWorkload(Protocol):
    """A workload that holds data (a file's records): an actor is sent only its requests' share."""

    def shard(self, request_ids: Sequence[int]) -> Workload:
        """A workload that builds these requests exactly as this one does, holding nothing else."""
        ...


def prompt_text(spec: RequestSpec) -> str:
    """The prompt as text for chat endpoints: ``spec.prompt_text``, else one word ``w<id>`` per id.

    The simulator's tokenizer counts one token per whitespace-separated word, so the text form
    has exactly ``spec.prompt_tokens`` tokens there, and prompts that share prefix ids share a
    text prefix too (so prefix caching behaves the same for ids and text).
    """
    if spec.prompt_text is not None:
        return spec.prompt_text
    return " ".join(f"w{token_id}" for token_id in spec.prompt_token_ids.tolist())


def check_request_ids(request_ids: Sequence[int], num_requests: int) -> None:
    """Reject indices outside ``[0, num_requests)`` before any prompt is built."""
    for request_id in request_ids:
        if not 0 <= request_id < num_requests:
            raise ConfigError.invalid(
                "request_id", request_id, f"an index in [0, {num_requests}) for this workload"
            )


def require_int(field: str, value: object, *, minimum: int) -> int:
    """``value`` as a plain int >= ``minimum``; bools and floats are refused (one shape a field)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError.invalid(field, value, f"an integer >= {minimum}")
    if value < minimum:
        raise ConfigError.invalid(field, value, f"an integer >= {minimum}")
    return int(value)


def require_ratio(field: str, value: object) -> float:
    """``value`` as a float in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError.invalid(field, value, "a number with 0 <= value < 1")
    as_float = float(value)
    if not (math.isfinite(as_float) and 0.0 <= as_float < 1.0):
        raise ConfigError.invalid(field, value, "a number with 0 <= value < 1")
    return as_float


def check_tokenizer(prefix: str, tokenizer: object, revision: object, text: object) -> None:
    """The tokenizer fields every workload shares: a name or path, a revision, the text switch."""
    if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer.strip()):
        raise ConfigError.invalid(f"{prefix}.tokenizer", tokenizer, "a local directory or Hugging Face model name, or None")
    if revision is not None and (tokenizer is None or not isinstance(revision, str) or not revision):
        raise ConfigError.invalid(f"{prefix}.tokenizer_revision", revision, "a revision string, given only with a tokenizer")
    if not isinstance(text, bool):
        raise ConfigError.invalid(f"{prefix}.text", text, "True or False")
    if text and tokenizer is None:
        raise ConfigError.invalid(f"{prefix}.text", text, "False without a tokenizer (text prompts are the tokenizer's "
                                  "decoding; the simulator's word tokenizer is 'raybench:words')")


def require_vocab(prefix: str, low: object, high: object) -> tuple[int, int]:
    """A token-id range ``[low, high)`` that int32 holds and that is not empty."""
    low_int = require_int(f"{prefix}.token_id_low", low, minimum=0)
    high_int = require_int(f"{prefix}.token_id_high", high, minimum=1)
    if not low_int < high_int <= _INT32_LIMIT:
        raise ConfigError.invalid(
            f"{prefix}.token_id_high",
            high,
            f"an integer above token_id_low ({low_int}) and at most {_INT32_LIMIT} (int32 ids)",
        )
    return low_int, high_int
