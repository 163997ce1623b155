"""Roofline step times per model, GPU and backend, and the KV capacity they leave.

One engine step processes ``num_tokens`` tokens (prefill chunks plus k tokens per decoding
request) and reads every weight it touches plus the KV cache of every request in the batch:

    step_s = t0 + max(FLOPs / (num_gpus * peak * e_c), bytes_per_rank / (bw * e_b))

FLOPs = 2 * active_params * num_tokens + attention pairs * FLOPs per (query, context) pair.
bytes_per_rank = (dense weights + MoE layers * touched experts * expert bytes) / num_gpus
+ context tokens read * KV bytes per token per rank. Touched experts per MoE layer for T tokens
under uniform routing: E * (1 - (1 - top_k / E) ** T) (reference/sim-study.md). The MLA latent
of DeepSeek has a single KV "head", so tensor parallelism replicates it: every rank stores and
reads the whole latent.

The efficiencies (e_c, e_b, t0, memory reserve) are PLACEHOLDERS inside the ranges the study
fitted (e_c 0.03-0.07, t0 21-46 ms); calibrating them per backend x GPU is later work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from raybench.sim.config import SimConfigError

if TYPE_CHECKING:
    from raybench.sim.config import SimConfig

GIB = 2**30


@dataclass(frozen=True, kw_only=True)
class GpuProfile:
    """Dense (not sparsity) vendor peaks of one GPU."""

    name: str
    memory_gib: float
    bandwidth_bytes_per_s: float
    fp8_flops_per_s: float
    bf16_flops_per_s: float


@dataclass(frozen=True, kw_only=True)
class ModelProfile:
    """What one step of a model costs, derived from its architecture (see the builders)."""

    name: str
    aliases: tuple[str, ...]
    weight_dtype: Literal["fp8", "bf16"]
    active_params: float  # parameters each token multiplies through (2 FLOPs each)
    weight_bytes: float  # every stored weight
    dense_bytes: float  # weights every step reads whatever the routing
    moe_layers: int
    num_experts: int
    experts_per_token: int
    expert_bytes: float
    kv_bytes_per_token: int  # all layers, one copy
    kv_heads: int  # KV is split over at most this many TP ranks (1 = replicated, as MLA)
    prefill_attn_flops_per_pair: float  # all layers, per (query token, context token)
    decode_attn_flops_per_pair: float
    max_model_len: int


@dataclass(frozen=True, kw_only=True)
class BackendProfile:
    """Per-backend efficiencies and engine defaults (placeholders until calibrated)."""

    name: str
    e_compute: float  # fraction of dense peak FLOPs reached (GEMMs and attention)
    e_bandwidth: float  # fraction of HBM bandwidth reached when reading weights and KV
    t0_ms: float  # fixed cost of every step: scheduling, sampling, launch overheads
    gpu_memory_utilization: float
    reserve_gib: float  # per GPU: activations, graphs, allocator slack, outside the KV pool
    max_num_seqs: int
    max_num_batched_tokens: int


def _deepseek_v3(name: str, aliases: tuple[str, ...]) -> ModelProfile:
    """DeepSeek-V3/R1 (config_671B.json): 61 layers, 3 dense then 58 MoE, MLA, FP8 weights."""
    hidden, layers, dense_layers, vocab, heads = 7168, 61, 3, 129280, 128
    q_lora, kv_lora, qk_nope, qk_rope, v_head = 1536, 512, 128, 64, 128
    attn = (
        hidden * q_lora
        + q_lora * heads * (qk_nope + qk_rope)
        + hidden * (kv_lora + qk_rope)
        + kv_lora * heads * (qk_nope + v_head)
        + heads * v_head * hidden
    )  # about 187M per layer
    expert = 3 * hidden * 2048  # 44.0M
    dense_mlp = 3 * hidden * 18432  # 396M
    moe_layers = layers - dense_layers
    routers = moe_layers * hidden * 256
    embed = vocab * hidden  # BF16, as is lm_head
    fp8_params = attn * layers + dense_layers * dense_mlp + moe_layers * 257 * expert + routers
    dense_fp8 = attn * layers + dense_layers * dense_mlp + moe_layers * expert + routers
    return ModelProfile(
        name=name,
        aliases=aliases,
        weight_dtype="fp8",
        active_params=dense_fp8 + moe_layers * 8 * expert + embed,
        weight_bytes=fp8_params + 2 * 2 * embed,
        dense_bytes=dense_fp8 + 2 * embed,  # embedding rows read are negligible; lm_head is not
        moe_layers=moe_layers,
        num_experts=256,
        experts_per_token=8,
        expert_bytes=expert,
        kv_bytes_per_token=(kv_lora + qk_rope) * 2 * layers,  # 70,272 B: the BF16 latent
        kv_heads=1,
        prefill_attn_flops_per_pair=2 * heads * (qk_nope + qk_rope + v_head) * layers,
        decode_attn_flops_per_pair=2 * heads * (kv_lora + qk_rope + kv_lora) * layers,  # absorbed
        max_model_len=163840,
    )


def _llama_dense(name: str, aliases: tuple[str, ...]) -> ModelProfile:
    """Llama-3.1-8B: 32 layers, hidden 4096, 32 heads, 8 KV heads of 128, MLP 14336, BF16."""
    hidden, layers, heads, kv_heads, head_dim, inter, vocab = 4096, 32, 32, 8, 128, 14336, 128256
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim + 3 * hidden * inter
    embed = vocab * hidden
    pair = 2 * 2 * heads * head_dim * layers  # QK^T and PV
    return ModelProfile(
        name=name,
        aliases=aliases,
        weight_dtype="bf16",
        active_params=per_layer * layers + embed,
        weight_bytes=2 * (per_layer * layers + 2 * embed),
        dense_bytes=2 * (per_layer * layers + embed),
        moe_layers=0,
        num_experts=1,
        experts_per_token=1,
        expert_bytes=0.0,
        kv_bytes_per_token=2 * kv_heads * head_dim * 2 * layers,  # 131,072 B
        kv_heads=kv_heads,
        prefill_attn_flops_per_pair=pair,
        decode_attn_flops_per_pair=pair,
        max_model_len=131072,
    )


GPUS = MappingProxyType(
    {
        "H200": GpuProfile(name="H200", memory_gib=141, bandwidth_bytes_per_s=4.8e12,
                           fp8_flops_per_s=1979e12, bf16_flops_per_s=989e12),
        "H100": GpuProfile(name="H100", memory_gib=80, bandwidth_bytes_per_s=3.35e12,
                           fp8_flops_per_s=1979e12, bf16_flops_per_s=989e12),
        "MI300X": GpuProfile(name="MI300X", memory_gib=192, bandwidth_bytes_per_s=5.3e12,
                             fp8_flops_per_s=2615e12, bf16_flops_per_s=1307e12),
    }
)

MODELS: tuple[ModelProfile, ...] = (
    _deepseek_v3("deepseek-ai/DeepSeek-R1",
                 ("deepseek-ai/deepseek-r1", "deepseek-r1", "deepseek-ai/deepseek-v3", "deepseek-v3")),
    _llama_dense("meta-llama/Llama-3.1-8B-Instruct",
                 ("meta-llama/llama-3.1-8b-instruct", "meta-llama/llama-3.1-8b", "llama-3.1-8b",
                  "llama-3.1-8b-instruct", "meta-llama/meta-llama-3.1-8b-instruct")),
)

BACKENDS = MappingProxyType(
    {
        "vllm": BackendProfile(name="vllm", e_compute=0.05, e_bandwidth=0.8, t0_ms=30.0,
                               gpu_memory_utilization=0.9, reserve_gib=32.0,
                               max_num_seqs=256, max_num_batched_tokens=8192),
        "sglang": BackendProfile(name="sglang", e_compute=0.06, e_bandwidth=0.8, t0_ms=25.0,
                                 gpu_memory_utilization=0.9, reserve_gib=24.0,
                                 max_num_seqs=1024, max_num_batched_tokens=8192),
        "trtllm": BackendProfile(name="trtllm", e_compute=0.07, e_bandwidth=0.8, t0_ms=21.0,
                                 gpu_memory_utilization=0.9, reserve_gib=24.0,
                                 max_num_seqs=512, max_num_batched_tokens=16384),
        "generic": BackendProfile(name="generic", e_compute=0.04, e_bandwidth=0.7, t0_ms=40.0,
                                  gpu_memory_utilization=0.9, reserve_gib=16.0,
                                  max_num_seqs=256, max_num_batched_tokens=8192),
    }
)


def find_model(name: str) -> ModelProfile | None:
    """The profile whose name or alias matches ``name`` (case-insensitive), else None."""
    key = name.lower()
    for model in MODELS:
        if key == model.name.lower() or key in model.aliases:
            return model
    return None


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """Step times for one (model, GPU x num_gpus, backend) and the engine limits that go with it."""

    model: ModelProfile
    gpu: GpuProfile
    backend: BackendProfile
    num_gpus: int
    kv_capacity_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int

    @property
    def kv_bytes_per_token_per_rank(self) -> float:
        return self.model.kv_bytes_per_token / min(self.num_gpus, self.model.kv_heads)

    def touched_experts(self, num_tokens: float) -> float:
        """Experts per MoE layer that at least one of ``num_tokens`` routes to (uniform routing)."""
        m = self.model
        return m.num_experts * (1.0 - (1.0 - m.experts_per_token / m.num_experts) ** num_tokens)

    def step_terms_s(self, num_tokens, prefill_pairs, decode_pairs, kv_tokens_read):
        """(compute seconds, memory seconds) of one step; works on floats and numpy arrays alike."""
        m, g, b = self.model, self.gpu, self.backend
        peak = g.fp8_flops_per_s if m.weight_dtype == "fp8" else g.bf16_flops_per_s
        flops = (
            2.0 * m.active_params * num_tokens
            + m.prefill_attn_flops_per_pair * prefill_pairs
            + m.decode_attn_flops_per_pair * decode_pairs
        )
        weights = m.dense_bytes + m.moe_layers * self.touched_experts(num_tokens) * m.expert_bytes
        bytes_per_rank = weights / self.num_gpus + kv_tokens_read * self.kv_bytes_per_token_per_rank
        compute_s = flops / (self.num_gpus * peak * b.e_compute)
        memory_s = bytes_per_rank / (g.bandwidth_bytes_per_s * b.e_bandwidth)
        return compute_s, memory_s

    def step_time_s(
        self, num_tokens: int, prefill_pairs: float, decode_pairs: float, kv_tokens_read: int
    ) -> float:
        """Seconds one step takes; the pair counts are Σ query tokens x context tokens attended."""
        compute_s, memory_s = self.step_terms_s(num_tokens, prefill_pairs, decode_pairs, kv_tokens_read)
        return self.backend.t0_ms / 1e3 + max(compute_s, memory_s)


def physical_kv_capacity_tokens(
    model: ModelProfile, gpu: GpuProfile, backend: BackendProfile, num_gpus: int
) -> int:
    """KV tokens that fit in (memory x utilization - weights/rank - reserve) on every rank.

    Returns 0 or less when the weights alone do not fit.
    """
    free_per_rank = (
        gpu.memory_gib * GIB * backend.gpu_memory_utilization
        - model.weight_bytes / num_gpus
        - backend.reserve_gib * GIB
    )
    per_rank = model.kv_bytes_per_token / min(num_gpus, model.kv_heads)
    return math.floor(free_per_rank / per_rank)


def resolve(config: SimConfig) -> CostModel:
    """The cost model a config asks for; raises SimConfigError naming the field to change."""
    model = find_model(config.model)
    if model is None:
        names = ", ".join(m.name for m in MODELS)
        raise SimConfigError("model", config.model, f"for engine timing a profiled model: {names}")
    gpu = GPUS[config.gpu]
    backend = BACKENDS[config.backend_profile]
    capacity = config.kv_capacity_tokens
    if capacity is None:
        capacity = physical_kv_capacity_tokens(model, gpu, backend, config.num_gpus)
        if capacity < 1:
            need = model.weight_bytes / config.num_gpus / GIB
            raise SimConfigError(
                "num_gpus",
                config.num_gpus,
                f"{model.name} needs {need:.0f} GiB of weights per GPU on {config.num_gpus} x "
                f"{gpu.name} ({gpu.memory_gib} GiB each, {backend.reserve_gib} GiB reserve): "
                "use more GPUs, a larger GPU, or set kv_capacity_tokens",
            )
    return CostModel(
        model=model,
        gpu=gpu,
        backend=backend,
        num_gpus=config.num_gpus,
        kv_capacity_tokens=capacity,
        max_num_seqs=config.max_num_seqs or backend.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens or backend.max_num_batched_tokens,
    )
