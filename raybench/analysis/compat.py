"""Which events the metrics read, per reference client.

SGLang's ``bench_serving.py`` and vLLM's ``vllm bench serve`` disagree on five choices: which
streamed event starts the clock for TTFT, which one ends E2E latency, which gaps make the ITL
list, how many output tokens a request had when the server sent no usage, and whose count of
prompt tokens the input totals sum (the workload's, or the server's usage). raybench stores
every event, so it can answer under either tool's rules (or its own) from the same raw rows.
The choices are data here (:class:`CompatRules`); ``metrics.py`` turns them into Polars filters.

Upstream files followed (the versions read for ``reference-clients.md``):

- sglang: dstackai/benchmarks @b9c6659 ``Deepseek-R1/bench_serving.py`` (the seed's client), OpenAI
  completions path, which agrees with sgl-project/sglang ``python/sglang/bench_serving.py`` @0033168.
- vllm: vllm-project/vllm ``vllm/benchmarks/lib/endpoint_request_func.py`` @02cfb53 (per-request
  capture) and ``vllm/benchmarks/serve.py`` @009e6d4 (aggregates).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import polars as pl

from raybench.errors import ConfigError
from raybench.store.schema import ChunkKind


class CompatMode(str, enum.Enum):
    """Whose definitions a summary follows."""

    RAYBENCH = "raybench"  # METRICS.md: token-bearing chunks only, server usage or chunk sum
    SGLANG = "sglang"  # bench_serving.py, OpenAI completions path
    VLLM = "vllm"  # vllm bench serve


class ChunkSelector(str, enum.Enum):
    """A set of streamed events, named by what a client checks before it takes a timestamp."""

    TOKEN_BEARING = "n_tokens>=1"  # the event added at least one output token
    TOKEN_TEXT = "kind=token"  # non-empty text (SGLang's ``if text:``)
    CHOICES = "kind in (token, empty)"  # a non-empty ``choices`` list, text or not (vLLM)
    ANY_EVENT = "any event"  # every SSE line, ``[DONE]`` included (SGLang's ``latency``)

    def predicate(self) -> pl.Expr:
        """A boolean expression over a chunks frame (``kind`` as a string column)."""
        if self is ChunkSelector.TOKEN_BEARING:
            return pl.col("n_tokens") >= 1
        if self is ChunkSelector.TOKEN_TEXT:
            return pl.col("kind") == ChunkKind.TOKEN.value
        if self is ChunkSelector.CHOICES:
            return pl.col("kind").is_in([ChunkKind.TOKEN.value, ChunkKind.EMPTY.value])
        return pl.lit(True)


class TokenFallback(str, enum.Enum):
    """Where a request's output-token count comes from when the server sent no usage."""

    SUM_N_TOKENS = "sum_n_tokens"  # the tokens the chunks carried (raybench; vllm's re-encode stand-in)
    MAX_TOKENS = "max_tokens"  # the requested max_tokens (SGLang's initial output_len)


class PromptTokenSource(str, enum.Enum):
    """Whose count of a request's prompt tokens the input totals sum.

    The two differ for chat, where the server counts the chat template's tokens and the workload
    counts the message content only.
    """

    WORKLOAD = "workload"  # what the workload built (SGLang's dataset prompt_len)
    # usage.prompt_tokens where the server sent it, else the workload's (vLLM's endpoint_request_func
    # overwrites prompt_len with it: ``if (pt := usage.get("prompt_tokens")) is not None``)
    SERVER_USAGE = "server_usage"


@dataclass(frozen=True, kw_only=True)
class CompatRules:
    """The five choices one compat mode makes, plus the upstream file it follows.

    ``fallback_on_zero`` is vLLM's ``if not output_len``: a usage count of 0 is treated like a
    missing one. ``reference`` is printed in summaries so a reader can check the source.
    """

    mode: CompatMode
    ttft_trigger: ChunkSelector
    e2e_end: ChunkSelector
    itl_chunks: ChunkSelector
    token_fallback: TokenFallback
    fallback_on_zero: bool
    prompt_tokens: PromptTokenSource
    reference: str


def parse_compat(value: CompatMode | str) -> CompatMode:
    """Accept a mode or its name; an unknown name raises with the choices and a suggestion."""
    if isinstance(value, CompatMode):
        return value
    try:
        return CompatMode(value)
    except ValueError:
        raise ConfigError.unknown("compat mode", str(value), (m.value for m in CompatMode)) from None


def compat_rules(mode: CompatMode | str) -> CompatRules:
    """The rules of ``mode``; built on demand so no table of rules lives at module level."""
    mode = parse_compat(mode)
    if mode is CompatMode.SGLANG:
        return CompatRules(
            mode=mode,
            ttft_trigger=ChunkSelector.TOKEN_TEXT,
            e2e_end=ChunkSelector.ANY_EVENT,
            itl_chunks=ChunkSelector.TOKEN_TEXT,
            token_fallback=TokenFallback.MAX_TOKENS,
            fallback_on_zero=False,
            prompt_tokens=PromptTokenSource.WORKLOAD,
            reference=(
                "dstackai/benchmarks@b9c6659 Deepseek-R1/bench_serving.py "
                "(async_request_openai_completions; = sglang@0033168 python/sglang/bench_serving.py)"
            ),
        )
    if mode is CompatMode.VLLM:
        return CompatRules(
            mode=mode,
            ttft_trigger=ChunkSelector.CHOICES,
            e2e_end=ChunkSelector.CHOICES,
            itl_chunks=ChunkSelector.CHOICES,
            token_fallback=TokenFallback.SUM_N_TOKENS,
            fallback_on_zero=True,
            prompt_tokens=PromptTokenSource.SERVER_USAGE,
            reference=(
                "vllm@02cfb53 vllm/benchmarks/lib/endpoint_request_func.py + "
                "vllm@009e6d4 vllm/benchmarks/serve.py"
            ),
        )
    return CompatRules(
        mode=mode,
        ttft_trigger=ChunkSelector.TOKEN_BEARING,
        e2e_end=ChunkSelector.TOKEN_BEARING,
        itl_chunks=ChunkSelector.TOKEN_BEARING,
        token_fallback=TokenFallback.SUM_N_TOKENS,
        fallback_on_zero=False,
        prompt_tokens=PromptTokenSource.WORKLOAD,
        reference="raybench METRICS.md",
    )
