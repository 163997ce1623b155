"""Multi-turn conversations: sessions of N turns, each turn's prompt the whole conversation so far.

Turn ``t`` of a session sends the session's user messages and answers of turns ``0 .. t-1``
followed by its own new user message, so a server's prefix cache can reuse everything but the
newest exchange. The answers in the history are stand-ins of the requested output length,
drawn from the seed (not the text the server produced): every prompt is then known before the
clock starts, the same on any server, for any number of actors, and exactly as long as planned.
Without a tokenizer (or with the simulator's word count) ids come from ``[token_id_low,
token_id_high)``; with a model's tokenizer from its vocabulary, each message fitted behind the
conversation before it (:func:`raybench.workloads.prompts.fit_chained`), so a turn's text encodes
back to exactly its ids and starts with the previous turn's ids and text.

Request ``session * num_turns + turn`` is one turn. A session goes to one actor whole, and its
turns are sent one after another: the next after the previous answer ended plus
``think_time_s`` (:meth:`MultiTurnWorkload.sessions` tells the pool which requests belong
together). Concurrency counts sessions in progress.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from raybench.errors import ConfigError
from raybench.workloads.base import (
    DEFAULT_TOKEN_ID_HIGH,
    DEFAULT_TOKEN_ID_LOW,
    RequestSpec,
    check_request_ids,
    check_tokenizer,
    require_int,
    require_vocab,
)
from raybench.workloads.prompts import ChainLink, fit_chained
from raybench.workloads.tokenizer import Tokenizer, WordTokenizer, load_tokenizer

_USER_STREAM = 1
_ANSWER_STREAM = 2


@dataclass(frozen=True, kw_only=True)
class MultiTurnWorkload:
    """``num_sessions`` conversations of ``num_turns`` turns each.

    The first user message has ``input_len`` tokens, later ones ``turn_input_len`` (default:
    ``input_len``); each answer is ``output_len`` tokens. Turn ``t``'s prompt therefore has
    ``input_len + t * (output_len + turn_input_len)`` tokens.
    """

    num_sessions: int
    num_turns: int
    input_len: int
    output_len: int
    turn_input_len: int | None = None
    think_time_s: float = 0.0
    seed: int = 0
    token_id_low: int = DEFAULT_TOKEN_ID_LOW
    token_id_high: int = DEFAULT_TOKEN_ID_HIGH
    tokenizer: str | None = None  # a name or path for load_tokenizer; None: the id range
    tokenizer_revision: str | None = None
    text: bool = False

    def __post_init__(self) -> None:
        check_tokenizer("multiturn", self.tokenizer, self.tokenizer_revision, self.text)
        for name, minimum in (("num_sessions", 1), ("num_turns", 1), ("input_len", 1), ("output_len", 1), ("seed", 0)):
            object.__setattr__(self, name, require_int(f"multiturn.{name}", getattr(self, name), minimum=minimum))
        turn_len = self.input_len if self.turn_input_len is None else self.turn_input_len
        object.__setattr__(self, "turn_input_len", require_int("multiturn.turn_input_len", turn_len, minimum=1))
        think = self.think_time_s
        if isinstance(think, bool) or not isinstance(think, numbers.Real) or not (math.isfinite(think) and think >= 0):
            raise ConfigError.invalid("multiturn.think_time_s", think, "a finite number of seconds >= 0")
        object.__setattr__(self, "think_time_s", float(think))
        low, high = require_vocab("multiturn", self.token_id_low, self.token_id_high)
        object.__setattr__(self, "token_id_low", low)
        object.__setattr__(self, "token_id_high", high)

    @property
    def num_requests(self) -> int:
        return self.num_sessions * self.num_turns

    def sessions(self) -> list[tuple[int, ...]]:
        """Request ids of each session, in turn order: the pool keeps each on one actor."""
        turns = self.num_turns
        return [tuple(range(s * turns, (s + 1) * turns)) for s in range(self.num_sessions)]

    def prompt_len(self, turn: int) -> int:
        return self.input_len + turn * (self.output_len + self.turn_input_len)

    def build(self, request_ids: Sequence[int]) -> list[RequestSpec]:
        check_request_ids(request_ids, self.num_requests)
        turns = [divmod(int(request_id), self.num_turns) for request_id in request_ids]
        tokenizer = None if self.tokenizer is None else load_tokenizer(self.tokenizer, revision=self.tokenizer_revision)
        if tokenizer is not None and not isinstance(tokenizer, WordTokenizer):
            prompts = self._fitted(tokenizer, turns)
        else:
            prompts = self._drawn(tokenizer, turns)
        return [RequestSpec(request_id=int(request_id), prompt_token_ids=ids, prompt_tokens=int(ids.size),
                            max_tokens=self.output_len, group=session, session=session, turn=turn,
                            think_time_s=self.think_time_s if turn else 0.0, prompt_text=text if self.text else None)
                for request_id, (session, turn), (ids, text) in zip(request_ids, turns, prompts)]

    def _drawn(self, tokenizer: Tokenizer | None, turns: list[tuple[int, int]]) -> list[tuple[np.ndarray, str | None]]:
        """Ids from the id range, each message drawn once a session; text in the word tokenizer's form."""
        histories: dict[int, list[np.ndarray]] = {}
        out = []
        for session, turn in turns:
            parts = histories.setdefault(session, [])
            while len(parts) < 2 * turn + 1:  # user 0, answer 0, user 1, ... up to this turn's user message
                parts.append(self._message_ids(session, len(parts)))
            ids = np.concatenate(parts[: 2 * turn + 1])
            # the word form is only built when it is sent; the word tokenizer reads it back id for id
            out.append((ids, tokenizer.decode(ids.tolist()) if self.text and tokenizer is not None else None))
        return out

    def _fitted(self, tokenizer: Tokenizer, turns: list[tuple[int, int]]) -> list[tuple[np.ndarray, str]]:
        """Prompts from the tokenizer's vocabulary, each message fitted behind the conversation
        before it (:func:`fit_chained`): a turn's prompt starts with the previous turn's ids and
        text exactly, and its text encodes back to exactly :meth:`prompt_len` ids."""
        links: dict[Hashable, ChainLink] = {}
        for session, turn in turns:
            for k in range(2 * turn + 1):
                if (session, k) not in links:
                    links[(session, k)] = ChainLink(parent=(session, k - 1) if k else None,
                                                    seed=self._message_seed(session, k), length=self._message_len(k))
        fitted = fit_chained(tokenizer, links)
        return [(fitted[(session, 2 * turn)].ids, fitted[(session, 2 * turn)].text) for session, turn in turns]

    def segments(self, request_id: int) -> tuple[tuple[int, int], ...]:
        """The turn's prompt as ((key, tokens), ...) runs, one a message, keyed by what draws its ids
        and every message before it: a later turn shares its session's earlier prompt, as a
        server's prefix cache sees it. The simulator's engine model caches by these keys
        (``raybench predict``)."""
        check_request_ids([request_id], self.num_requests)
        session, turn = divmod(int(request_id), self.num_turns)
        key = hash(("multiturn", self.seed, self.token_id_low, self.token_id_high, session))
        out = []
        for k in range(2 * turn + 1):  # user 0, answer 0, user 1, ... as build() joins them
            length = self._message_len(k)
            key = hash((key, k % 2, length))
            out.append((key, length))
        return tuple(out)

    def describe(self) -> dict[str, Any]:
        return {"name": "multiturn", **asdict(self), "num_requests": self.num_requests,
                "prompt_len_by_turn": [self.prompt_len(t) for t in range(self.num_turns)],
                "history_answers": "stand-ins of output_len tokens drawn from the seed"}

    def _message_len(self, k: int) -> int:
        """Tokens of message ``k`` of a session (user 0, answer 0, user 1, ...)."""
        message, is_answer = divmod(k, 2)
        return self.output_len if is_answer else (self.input_len if message == 0 else self.turn_input_len)

    def _message_seed(self, session: int, k: int) -> tuple[int, ...]:
        message, is_answer = divmod(k, 2)
        return (self.seed, _ANSWER_STREAM if is_answer else _USER_STREAM, session, message)

    def _message_ids(self, session: int, k: int) -> np.ndarray:
        rng = np.random.default_rng(list(self._message_seed(session, k)))
        return rng.integers(self.token_id_low, self.token_id_high, size=self._message_len(k), dtype=np.int32)
