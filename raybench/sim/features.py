"""What an engine does, as data: the scheduling and memory features of one server's launch.

The same model on the same GPUs behaves very differently under SGLang, vLLM and TensorRT-LLM,
and under different flags of one of them, because of HOW each schedules, not only how fast its
kernels are. ``EngineFeatures`` holds exactly those choices; ``defaults(engine)`` gives each
engine's documented defaults (early-2025 releases, the seed's), and ``raybench.predict`` maps a
backend's launch settings onto them (``--enable-dp-attention``, ``--chunked-prefill-size``, ...).

Sources: SGLang ``server_args.py`` (chunked_prefill_size 8192: under DP attention each rank takes
it // dp_size, or // 2 with dp = tp in releases before 2025-03-13; mem_fraction_static by TP size,
0.81 at TP 8; radix cache on; prefill batches run before decode; retract on KV exhaustion; the
new-token ratio that reserves part of max_new_tokens at admission decays from 0.7 to 0.1;
``--chunked-prefill-size -1`` turns chunking off, and a step then takes max_prefill_tokens,
16384, of prompts a rank, the first prompt whatever its length);
vLLM 0.7 V0 scheduler (prefills first and whole, within max_num_batched_tokens =
max_model_len when chunked prefill is off; with chunked prefill decodes first, then chunks within
the budget; block-hash prefix cache of 16-token blocks; preemption by recompute, newest first;
CUDA graphs for decode-only steps whose longest sequence is within max_seq_len_to_capture, 8192:
longer ones run eagerly; async output processing, on unless --disable-async-output-proc: the
engine processes a step's outputs while the next step runs and returns them at its end, and a
request that has produced its last token runs in that step once more (``LLMEngine.step``, and
the scheduler's note on that "extra decode run"); the KV pool is the memory a profiling forward
pass over max_num_batched_tokens tokens leaves, ``Worker.determine_num_available_blocks``);
TensorRT-LLM (inflight batching mixes context and generation requests in one step within
max_num_tokens; GUARANTEED_NO_EVICT reserves prompt + max_tokens at admission; the KV cache
takes free_gpu_memory_fraction of the memory left once the weights are loaded).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace
from types import MappingProxyType

from raybench.sim.config import SimConfigError


class Policy(str, enum.Enum):
    """How one step mixes prefill and decode."""

    PREFILL_FIRST = "prefill_first"  # a step with prompt work pauses every decode (SGLang, vLLM V0)
    MIXED = "mixed"  # decodes and prompt chunks share one token budget (vLLM chunked prefill, TRT-LLM)


class Preemption(str, enum.Enum):
    """What happens when a decoding request needs KV that is not there."""

    RECOMPUTE = "recompute"  # vLLM: the newest running request gives its KV back, prefills again later
    RETRACT = "retract"  # SGLang: the request with the fewest output tokens goes back to the queue
    NONE = "none"  # admission reserves prompt + max_tokens, so it never happens (TRT-LLM no-evict)


class PrefixCache(str, enum.Enum):
    NONE = "none"
    BLOCK_HASH = "block_hash"  # vLLM: full blocks of block_tokens hit, chained hashes
    RADIX = "radix"  # SGLang: any matching prefix, token granular


#: what a run may need of the model beyond plain prefill and decode steps; a fit that saw none of
#: a regime's steps has not constrained what they cost, so a prediction relying on them extrapolates
REGIMES = MappingProxyType({
    "mixed_steps": "steps that ran prompt chunks and decodes together: chunked prefill, inflight batching",
    "prefix_hits": "prompts served in part from the prefix cache",
    "preemption": "requests preempted or retracted because the KV pool ran out",
    "eager_decode": "decode steps without their CUDA graph, a sequence being past the graphs' context limit",
    "kv_limited": "the KV pool held requests back or evicted cached prompts, so its fitted size, reserve_gib, "
                  "shaped the run",
})


#: SGLang's --max-prefill-tokens default: a rank's prompt tokens a step when chunked prefill is off
SGLANG_MAX_PREFILL_TOKENS = 16384

#: vLLM's max_seq_len_to_capture default: decode steps with a longer sequence fall back to eager mode
VLLM_GRAPH_MAX_CONTEXT = 8192

ENGINES = ("vllm", "sglang", "trtllm", "trtllm-engine", "generic")


@dataclass(frozen=True, kw_only=True)
class EngineFeatures:
    """Scheduling and memory behaviour of one server launch (see the module docstring)."""

    policy: Policy
    prefill_tokens_per_step: int  # prompt tokens one step may take (chunk size, or the whole budget)
    chunked_prefill: bool  # a prompt may be split over steps; if not, it must fit one step whole
    max_running: int  # cap on running requests (max_num_seqs, max_running_requests, max_batch_size)
    dp_attention: int = 1  # ranks holding disjoint requests' KV (SGLang DP attention); 1: TP, replicated
    prefix_cache: PrefixCache = PrefixCache.NONE
    block_tokens: int = 16  # KV block size; prefix hits of a block-hash cache are whole blocks
    preemption: Preemption = Preemption.RECOMPUTE
    admission_output_reserve: float = 0.0  # fraction of max_tokens reserved at admission (preemption none: 1.0)
    memory_fraction: float = 0.9  # of each GPU's memory the engine takes for weights, KV and reserve
    memory_of_free: bool = False  # memory_fraction is a share of what weights and reserve leave (TensorRT-LLM)
    max_model_len: int | None = None  # longest prompt + output a request may have
    cuda_graphs: bool = False  # pure-decode steps replay captured CUDA graphs (vLLM, SGLang)
    graph_max_context: int | None = None  # a decode step whose longest context exceeds this runs eagerly
    async_output: bool = False  # a step's tokens reach the client with the next step's (vLLM V0)
    profiled_kv_pool: bool = False  # the KV pool is what a pass over a full step's prompt tokens leaves (vLLM)
    # without chunked prefill, a prompt longer than a step's budget runs alone in a step of its own
    # (SGLang's prefill adder takes the first request whatever its length); otherwise it is refused
    oversized_prompt_alone: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", _enum(Policy, self.policy, "policy"))
        object.__setattr__(self, "preemption", _enum(Preemption, self.preemption, "preemption"))
        object.__setattr__(self, "prefix_cache", _enum(PrefixCache, self.prefix_cache, "prefix_cache"))
        for name in ("prefill_tokens_per_step", "max_running", "dp_attention", "block_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SimConfigError(name, value, "an integer >= 1")
        if self.prefill_tokens_per_step < self.dp_attention:  # each rank's budget would be 0 tokens
            raise SimConfigError("prefill_tokens_per_step", self.prefill_tokens_per_step,
                                 f"at least dp_attention ({self.dp_attention}): each DP rank takes that budget "
                                 f"// dp_attention prompt tokens a step")
        if not 0.0 <= self.admission_output_reserve <= 1.0:
            raise SimConfigError("admission_output_reserve", self.admission_output_reserve, "a fraction in 0..1")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise SimConfigError("memory_fraction", self.memory_fraction, "a fraction in (0, 1]")
        for name in ("max_model_len", "graph_max_context"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise SimConfigError(name, value, "None or an integer >= 1")
        for name in ("cuda_graphs", "async_output", "profiled_kv_pool", "memory_of_free", "oversized_prompt_alone"):
            if not isinstance(getattr(self, name), bool):
                raise SimConfigError(name, getattr(self, name), "true or false")

    def eager_decode_steps(self, max_context0: int, k: int, steps: int) -> int:
        """How many of ``steps`` pure-decode steps run without CUDA graphs; the longest context
        is ``max_context0`` at the first and grows by k per step."""
        if not self.cuda_graphs or self.graph_max_context is None:
            return 0
        graphed = max(0, (self.graph_max_context - max_context0) // k + 1)
        return max(0, steps - graphed)

    def with_(self, **changes: object) -> EngineFeatures:
        return replace(self, **changes)

    def to_json(self) -> dict[str, object]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items()}

    @classmethod
    def from_json(cls, record: Mapping[str, object]) -> EngineFeatures:
        """The inverse of ``to_json``; SimConfigError naming the field that is unknown or out of range."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise SimConfigError("engine features", ", ".join(unknown), f"fields among {', '.join(sorted(known))}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in record]
        if missing:
            raise SimConfigError("engine features", record, f"a record with {', '.join(missing)} too")
        return cls(**record)


def _enum(kind: type[enum.Enum], value: object, name: str):
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(k.value for k in kind)
        raise SimConfigError(name, value, f"one of {allowed}") from None


def sglang_memory_fraction(tp: int) -> float:
    """SGLang's ``--mem-fraction-static`` when the launch gives none. It falls as the tensor
    parallel group grows (ServerArgs.__post_init__, the same table through the seed's early-2025
    releases): a TP-8 server keeps 19 % of each GPU outside weights and KV, not 12 %."""
    for at_least, fraction in ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87)):
        if tp >= at_least:
            return fraction
    return 0.88


def defaults(engine: str) -> EngineFeatures:
    """Each engine's documented defaults for a DeepSeek-R1-class model on 8 GPUs."""
    if engine == "vllm":
        # V0 without chunked prefill: whole prompts, budget max_model_len (the model's 163840)
        return EngineFeatures(policy=Policy.PREFILL_FIRST, prefill_tokens_per_step=163840, chunked_prefill=False,
                              max_running=256, prefix_cache=PrefixCache.NONE, block_tokens=16,
                              preemption=Preemption.RECOMPUTE, admission_output_reserve=0.0,
                              memory_fraction=0.9, cuda_graphs=True, graph_max_context=VLLM_GRAPH_MAX_CONTEXT,
                              async_output=True, profiled_kv_pool=True)
    if engine == "sglang":
        # new_token_ratio decays 0.7 -> 0.1 within a few hundred steps: 0.1 is where it sits
        return EngineFeatures(policy=Policy.PREFILL_FIRST, prefill_tokens_per_step=8192, chunked_prefill=True,
                              max_running=1024, prefix_cache=PrefixCache.RADIX, block_tokens=1,
                              preemption=Preemption.RETRACT, admission_output_reserve=0.1,
                              memory_fraction=sglang_memory_fraction(8), cuda_graphs=True,
                              oversized_prompt_alone=True)
    # TensorRT-LLM's KV cache takes free_gpu_memory_fraction (0.9) of the memory free once the
    # weights and the runtime's buffers are in place, not of the whole GPU
    if engine == "trtllm":
        # PyTorch flow, chunked context off: a context request joins a step whole
        return EngineFeatures(policy=Policy.MIXED, prefill_tokens_per_step=8192, chunked_prefill=False,
                              max_running=2048, prefix_cache=PrefixCache.NONE, block_tokens=32,
                              preemption=Preemption.NONE, admission_output_reserve=1.0,
                              memory_fraction=0.9, memory_of_free=True)
    if engine == "trtllm-engine":
        # a prebuilt TensorRT engine (the seed's offline runs): inflight batching, no-evict
        return EngineFeatures(policy=Policy.MIXED, prefill_tokens_per_step=8192, chunked_prefill=False,
                              max_running=2048, prefix_cache=PrefixCache.NONE, block_tokens=32,
                              preemption=Preemption.NONE, admission_output_reserve=1.0,
                              memory_fraction=0.9, memory_of_free=True)
    if engine == "generic":
        return EngineFeatures(policy=Policy.MIXED, prefill_tokens_per_step=8192, chunked_prefill=True,
                              max_running=256, preemption=Preemption.RECOMPUTE)
    raise SimConfigError("engine", engine, f"one of {', '.join(ENGINES)}")
