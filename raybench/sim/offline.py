"""The in-process offline engine: one batched ``generate`` call in virtual time.

This is what an offline vLLM ``LLM.generate`` / ``sglang.Engine.generate`` run meets in the
simulator: all prompts are submitted at once, the engine core runs step after step, and the
elapsed time is the sum of the simulated step times (no sleeping; engine start-up excluded,
as benchmark_throughput.py times only the generate call).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

from raybench.sim import costmodel
from raybench.sim.config import SimConfig, SimConfigError
from raybench.sim.engine import EngineCore


@dataclass(frozen=True, kw_only=True)
class OfflineRequestResult:
    """One prompt's outcome; times are simulated seconds from the start of generate()."""

    prompt_tokens: int
    output_tokens: int
    first_token_s: float
    finish_s: float


@dataclass(frozen=True, kw_only=True)
class OfflineResult:
    """The outcome of one generate() call, in input order."""

    elapsed_s: float  # simulated wall time of the call
    num_steps: int
    requests: tuple[OfflineRequestResult, ...]

    @property
    def prompt_tokens(self) -> list[int]:
        return [r.prompt_tokens for r in self.requests]

    @property
    def output_tokens(self) -> list[int]:
        return [r.output_tokens for r in self.requests]

    @property
    def total_prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.requests)

    @property
    def total_output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.requests)


class OfflineEngine:
    """Runs the engine core of ``config`` in virtual time (the timing mode is ignored)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.cost = costmodel.resolve(config)

    def generate(
        self,
        prompts: Sequence[int] | Sequence[Sequence[int]],
        max_tokens: int | Sequence[int],
    ) -> OfflineResult:
        """Generate for every prompt (a length, or a list of token ids) exactly max_tokens tokens.

        Output length is forced, as offline throughput benchmarks force it (ignore_eos).
        """
        lengths, outs = _normalize(prompts, max_tokens)
        core = EngineCore(self.cost, self.config.tokens_per_chunk)
        for i, (p, m) in enumerate(zip(lengths, outs)):
            try:
                core.add_request(i, p, m)
            except ValueError as err:
                raise SimConfigError(f"prompts[{i}]", p, str(err)) from err
        first = [0.0] * len(lengths)
        finish = [0.0] * len(lengths)
        now_s = 0.0
        steps = 0
        while core.has_work():
            span = core.fast_forward_decode(emissions=False)
            if span is not None:
                now_s += span[0]
                steps += span[1]
                continue
            result = core.step()
            if result is None:  # cannot happen: add_request rejected what never fits
                raise RuntimeError("offline engine stalled with work left")
            now_s += result.duration_s
            steps += 1
            for e in result.emissions:
                if e.total_tokens == e.new_tokens:
                    first[e.req_id] = now_s
                if e.finished:
                    finish[e.req_id] = now_s
        return OfflineResult(
            elapsed_s=now_s,
            num_steps=steps,
            requests=tuple(
                OfflineRequestResult(prompt_tokens=p, output_tokens=m, first_token_s=f, finish_s=d)
                for p, m, f, d in zip(lengths, outs, first, finish)
            ),
        )


def _normalize(prompts, max_tokens) -> tuple[list[int], list[int]]:
    """Prompt lengths and output lengths, one each per prompt; SimConfigError when impossible."""
    lengths = [_length(p) for p in prompts]
    if isinstance(max_tokens, Sequence) or hasattr(max_tokens, "__len__"):
        outs = [operator.index(m) for m in max_tokens]
    else:
        outs = [operator.index(max_tokens)] * len(lengths)
    if len(outs) != len(lengths):
        raise SimConfigError("max_tokens", f"{len(outs)} values", f"one per prompt ({len(lengths)})")
    for i, (p, m) in enumerate(zip(lengths, outs)):
        if p < 1:
            raise SimConfigError(f"prompts[{i}]", p, "a prompt of at least 1 token")
        if m < 1:
            raise SimConfigError(f"max_tokens[{i}]", m, "an integer >= 1")
    return lengths, outs


def _length(prompt: int | Sequence[int]) -> int:
    """A prompt given as its length (any integer type) or as its token ids."""
    try:
        return operator.index(prompt)
    except TypeError:
        return len(prompt)
