"""What one engine step costs, from kernel-level pieces, and the KV capacity a launch leaves.

A step processes T tokens (prompt chunks plus k tokens per decoding request) for S sequences and
reads the KV of every context token its attention visits. Its cost is a sum of pieces, each
computed from the model's shapes and the GPU's nominal figures, each with its own fitted factor
(``profiles.EngineProfile``):

    step_s = fixed_s                         scheduler, sampling, launches: every step pays it
           + per_seq_s * S                   per-sequence host work (sampling, detokenize, bookkeeping)
           + moe_read_factor * moe_s         touched experts' weights at nominal HBM bandwidth
           + compute_factor * compute_s      GEMM FLOPs (2 x active params x T, FP8 peak)
                                             + prompt attention FLOPs (BF16 peak)
           + kv_read_factor * kv_s           the KV latent read by attention, at nominal bandwidth
           + eager_factor * eager_s          a decode step that cannot replay its CUDA graph (vLLM:
                                             a sequence past max_seq_len_to_capture) launches every
                                             kernel eagerly: kernels x (eager - graph launch cost)
           + physical_s                      not fitted: dense weights at the measured 2.3 TB/s of
                                             a TP-8 dense shard, plus tensor-parallel all-reduces

A factor is 1 / efficiency of its piece: moe_read_factor 10 says the expert GEMMs read weights
at a tenth of HBM bandwidth, as a TP-8 expert shard does at decode sizes
(reference/h200-microbench.md: 0.13-0.34 TB/s). Touched experts per MoE layer for T tokens under
uniform routing: E * (1 - (1 - top_k / E) ** T). DeepSeek's MLA latent has one KV "head": tensor
parallelism replicates it on every rank, DP attention keeps each request on one rank.

The cost is LINEAR in the fitted numbers, and a closed-loop benchmark with every request
released at once schedules the same steps whatever they cost; so a benchmark's latencies are
sums of step feature vectors, and calibration fits the factors by least squares without
re-simulating (``calibrate.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from raybench.sim.config import SimConfigError
from raybench.sim.features import EngineFeatures
from raybench.sim.profiles import EngineProfile

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
    link_bytes_per_s: float  # one direction of the GPU-to-GPU fabric (NVLink, xGMI)
    dense_read_bytes_per_s: float  # what a TP-8 dense GEMM shard reads at decode sizes (measured on H200)
    allreduce_latency_s: float = 15e-6  # one small all-reduce over 8 GPUs
    eager_launch_s: float = 8.1e-6  # one kernel launched from eager PyTorch (measured on H200)
    graph_launch_s: float = 1.09e-6  # one kernel replayed inside a CUDA graph (measured on H200)
    kv_reread_cost: float = 1.0  # a decode step's read of KV another request of the step has read, per first read


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
    attention_bytes: float  # attention weights of all layers (replicated on every rank under DP attention)
    attention_params: float  # their parameters: DP attention runs them per rank on that rank's tokens
    hidden_size: int
    num_layers: int
    prefill_attn_flops_per_pair: float  # all layers, per (query token, context token)
    decode_attn_flops_per_pair: float
    max_model_len: int
    kernels_per_step: int  # GPU kernels one decode forward launches (norms, GEMMs + quant, attention, MoE, comm)
    mlp_intermediate: int  # intermediate size of one expert (MoE) or of the MLP (dense)


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
        attention_bytes=attn * layers,
        attention_params=attn * layers,
        hidden_size=hidden,
        num_layers=layers,
        prefill_attn_flops_per_pair=2 * heads * (qk_nope + qk_rope + v_head) * layers,
        decode_attn_flops_per_pair=2 * heads * (kv_lora + qk_rope + kv_lora) * layers,  # absorbed
        max_model_len=163840,
        # per layer ~45: 2 norms, 5 FP8 projections of MLA with their activation quant (10), rope,
        # absorbed-MLA bmms, cache write, attention + metadata, 2 all-reduces, router + grouped
        # top-k (~8 small ops), MoE align, fused MoE (quant, 2 GEMMs, activation, sum), shared expert
        kernels_per_step=45 * layers,
        mlp_intermediate=2048,
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
        attention_bytes=2 * (2 * hidden * hidden + 2 * hidden * kv_heads * head_dim) * layers,
        attention_params=(2 * hidden * hidden + 2 * hidden * kv_heads * head_dim) * layers,
        hidden_size=hidden,
        num_layers=layers,
        prefill_attn_flops_per_pair=pair,
        decode_attn_flops_per_pair=pair,
        max_model_len=131072,
        kernels_per_step=15 * layers,  # norms, 4 projections, rope, attention, cache write, 3 MLP, adds
        mlp_intermediate=inter,
    )


GPUS = MappingProxyType(
    {
        "H200": GpuProfile(name="H200", memory_gib=140, bandwidth_bytes_per_s=4.8e12,
                           fp8_flops_per_s=1979e12, bf16_flops_per_s=989e12, link_bytes_per_s=450e9,
                           dense_read_bytes_per_s=2.3e12, kv_reread_cost=0.75),
        "H100": GpuProfile(name="H100", memory_gib=80, bandwidth_bytes_per_s=3.35e12,
                           fp8_flops_per_s=1979e12, bf16_flops_per_s=989e12, link_bytes_per_s=450e9,
                           dense_read_bytes_per_s=1.6e12),
        "MI300X": GpuProfile(name="MI300X", memory_gib=192, bandwidth_bytes_per_s=5.3e12,
                             fp8_flops_per_s=2615e12, bf16_flops_per_s=1307e12, link_bytes_per_s=448e9,
                             dense_read_bytes_per_s=2.5e12),
    }
)

MODELS: tuple[ModelProfile, ...] = (
    _deepseek_v3("deepseek-ai/DeepSeek-R1",
                 ("deepseek-ai/deepseek-r1", "deepseek-r1", "deepseek-ai/deepseek-v3", "deepseek-v3")),
    _llama_dense("meta-llama/Llama-3.1-8B-Instruct",
                 ("meta-llama/llama-3.1-8b-instruct", "meta-llama/llama-3.1-8b", "llama-3.1-8b",
                  "llama-3.1-8b-instruct", "meta-llama/meta-llama-3.1-8b-instruct")),
)

def find_model(name: str) -> ModelProfile | None:
    """The profile whose name or alias matches ``name`` (case-insensitive), else None."""
    key = name.lower()
    for model in MODELS:
        if key == model.name.lower() or key in model.aliases:
            return model
    return None



#: the step feature vector, in the order of EngineProfile.coefficients
FEATURES = ("steps", "sequences", "moe_s", "compute_s", "kv_s", "eager_s", "physical_s")


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """Step costs of one (model, GPU x num_gpus, engine profile, launch features) and its KV capacity."""

    model: ModelProfile
    gpu: GpuProfile
    num_gpus: int
    profile: EngineProfile
    features: EngineFeatures
    kv_capacity_tokens: int

    @property
    def max_num_seqs(self) -> int:
        return self.features.max_running

    @property
    def max_num_batched_tokens(self) -> int:
        return self.features.prefill_tokens_per_step

    @property
    def coefficients(self) -> tuple[float, ...]:
        return self.profile.coefficients

    @property
    def kv_bytes_per_token_per_rank(self) -> float:
        return self.model.kv_bytes_per_token / min(self.num_gpus, self.model.kv_heads) / self.features.dp_attention

    def touched_experts(self, num_tokens: float) -> float:
        """Experts per MoE layer that at least one of ``num_tokens`` routes to (uniform routing)."""
        m = self.model
        return m.num_experts * (1.0 - (1.0 - m.experts_per_token / m.num_experts) ** num_tokens)

    @property
    def eager_step_s(self) -> float:
        """What launching a decode step's kernels eagerly adds to replaying its CUDA graph."""
        return self.model.kernels_per_step * (self.gpu.eager_launch_s - self.gpu.graph_launch_s)

    def step_features(self, num_tokens: int, num_seqs: int, prefill_pairs: float, kv_tokens_read: float,
                      eager: bool = False, attn_tokens: float | None = None) -> tuple[float, ...]:
        """One step's feature vector (FEATURES); its cost is the dot product with the coefficients.

        ``eager``: a decode step that runs without its CUDA graph (a prefill step's launches hide
        under its long kernels, so it pays nothing extra). ``attn_tokens``: the tokens the
        attention projections cost as (DP attention: dp_attention x the busiest rank's); the
        prompt pairs and KV tokens are given the same way."""
        m, g, n = self.model, self.gpu, self.num_gpus
        moe_s = m.moe_layers * self.touched_experts(num_tokens) * m.expert_bytes / n / g.bandwidth_bytes_per_s
        peak = g.fp8_flops_per_s if m.weight_dtype == "fp8" else g.bf16_flops_per_s
        attn = num_tokens if attn_tokens is None else attn_tokens
        gemm_flops = 2.0 * ((m.active_params - m.attention_params) * num_tokens + m.attention_params * attn)
        compute_s = (gemm_flops / peak + m.prefill_attn_flops_per_pair * prefill_pairs / g.bf16_flops_per_s) / n
        kv_s = kv_tokens_read * self.kv_bytes_per_token_per_rank / g.bandwidth_bytes_per_s
        eager_s = self.eager_step_s if eager else 0.0
        return (1.0, float(num_seqs), moe_s, compute_s, kv_s, eager_s, self._physical_s(num_tokens))

    def _physical_s(self, num_tokens: float) -> float:
        m, g, n = self.model, self.gpu, self.num_gpus
        dense = m.dense_bytes / n
        if self.features.dp_attention > 1:  # every rank holds all attention weights
            dense += m.attention_bytes * (1.0 - 1.0 / n)
        comm = 0.0
        if n > 1:  # two all-reduces of the hidden states per layer (ring: 2 (n-1)/n of the bytes)
            per_reduce = 2.0 * (n - 1) / n * num_tokens * m.hidden_size * 2 / g.link_bytes_per_s
            comm = 2 * m.num_layers * (per_reduce + g.allreduce_latency_s)
        return dense / g.dense_read_bytes_per_s + comm

    def cost_s(self, feats) -> float:
        return sum(c * f for c, f in zip(self.coefficients, feats))

    def step_time_s(self, num_tokens: int, num_seqs: int, prefill_pairs: float, kv_tokens_read: float) -> float:
        return self.cost_s(self.step_features(num_tokens, num_seqs, prefill_pairs, kv_tokens_read))

    def decode_span_features(self, num_seqs: int, k: int, context0: float, steps: int, max_context0: int = 0,
                             ranks: tuple[tuple[int, int], ...] | None = None) -> tuple[float, ...]:
        """Summed features of ``steps`` pure-decode steps; the context grows by num_seqs x k per step
        and the longest sequence's (``max_context0`` at the first step) by k. ``ranks``: under DP
        attention, (requests, context) of every rank at the first step."""
        one = self._decode_step(num_seqs, k, ranks)
        kv_tokens = float(self._span_kv_tokens(num_seqs, k, context0, steps, ranks).sum())
        kv_s = kv_tokens * self.kv_bytes_per_token_per_rank / self.gpu.bandwidth_bytes_per_s
        eager_s = self.features.eager_decode_steps(max_context0, k, steps) * self.eager_step_s
        return (float(steps), float(steps * num_seqs), steps * one[2], steps * one[3], kv_s, eager_s, steps * one[6])

    def decode_step_times_s(self, num_seqs: int, k: int, context0: float, steps: int, max_context0: int = 0,
                            ranks: tuple[tuple[int, int], ...] | None = None):
        """Each step's seconds over a pure-decode span (a numpy array), for the real-time fast path."""
        one = self._decode_step(num_seqs, k, ranks)
        c = self.coefficients
        base = c[0] + c[1] * num_seqs + c[2] * one[2] + c[3] * one[3] + c[6] * one[6]
        context = self._span_kv_tokens(num_seqs, k, context0, steps, ranks)
        times = base + c[4] * context * self.kv_bytes_per_token_per_rank / self.gpu.bandwidth_bytes_per_s
        graphed = steps - self.features.eager_decode_steps(max_context0, k, steps)
        times[graphed:] += c[5] * self.eager_step_s
        return times

    def _decode_step(self, num_seqs: int, k: int, ranks) -> tuple[float, ...]:
        attn = None if not ranks else len(ranks) * max(r for r, _ in ranks) * k
        return self.step_features(num_seqs * k, num_seqs, 0.0, 0.0, attn_tokens=attn)

    @staticmethod
    def _span_kv_tokens(num_seqs: int, k: int, context0: float, steps: int, ranks):
        """KV tokens each step of a decode span reads, as step_features takes them."""
        import numpy as np

        s = np.arange(steps, dtype=np.float64)
        if not ranks:
            return context0 + s * (num_seqs * k)
        return len(ranks) * np.max([c + r * k * s for r, c in ranks], axis=0)


#: tokens vLLM's fused MoE kernel takes at a time, so its intermediate buffers are this big at most
#: (VLLM_FUSED_MOE_CHUNK_SIZE, 32768 in the early-2025 releases)
FUSED_MOE_CHUNK_TOKENS = 32768


def profile_peak_bytes(model: ModelProfile, num_gpus: int, tokens: int) -> float:
    """Activation bytes per GPU at the peak of a forward pass over ``tokens`` prompt tokens.

    vLLM sizes its KV pool after such a pass over max_num_batched_tokens tokens: what the pass
    needed at its peak stays out of the pool. The peak is in a MoE layer: the residual stream
    (residual, layer input, expert output and one more copy, BF16), and the fused MoE kernel's
    buffers for up to FUSED_MOE_CHUNK_TOKENS tokens x top-k (gate and up, the activation, and
    every expert's output before the weighted sum); a dense model holds its MLP's gate, up and
    activation for every token. DeepSeek-R1 on 8 GPUs: 12.6 GiB at 163,840 tokens (vLLM's
    budget without chunked prefill: max_model_len), 5.6 GiB at 32,768, 0.35 GiB at 2,048.
    """
    h, shard = model.hidden_size, model.mlp_intermediate / num_gpus
    stream = 4 * tokens * h * 2
    if model.moe_layers:
        mlp = min(tokens, FUSED_MOE_CHUNK_TOKENS) * model.experts_per_token * (3 * shard + h) * 2
    else:
        mlp = tokens * 3 * shard * 2
    return float(stream + mlp)


def kv_capacity_tokens(model: ModelProfile, gpu: GpuProfile, num_gpus: int, features: EngineFeatures,
                       reserve_gib: float) -> int:
    """KV tokens that fit in (memory x fraction - weights per rank - reserve) on every rank, or in
    (memory - weights - reserve) x fraction where the fraction is of free memory (``memory_of_free``).

    An engine that sizes its pool after a profiling pass (vLLM) also keeps that pass's peak
    activations out (``profile_peak_bytes`` at its step budget), so the same reserve leaves a
    chunked-prefill launch (2,048 tokens a step) a larger pool than one that prefills whole
    prompts. Under DP attention each rank holds its own requests, so the node holds
    dp_attention times as many tokens. Returns 0 or less when the weights alone do not fit.
    """
    weights = model.weight_bytes / num_gpus
    if features.dp_attention > 1:
        weights += model.attention_bytes * (1.0 - 1.0 / num_gpus)
    if features.memory_of_free:
        free = (gpu.memory_gib * GIB - weights - reserve_gib * GIB) * features.memory_fraction
    else:
        free = gpu.memory_gib * GIB * features.memory_fraction - weights - reserve_gib * GIB
    if features.profiled_kv_pool:
        free -= profile_peak_bytes(model, num_gpus, features.prefill_tokens_per_step)
    per_rank = model.kv_bytes_per_token / min(num_gpus, model.kv_heads)
    return math.floor(free / per_rank) * features.dp_attention


def build(model: ModelProfile, gpu: GpuProfile, num_gpus: int, profile: EngineProfile,
          features: EngineFeatures, kv_capacity_override: int | None = None) -> CostModel:
    """A CostModel; raises SimConfigError when the weights do not fit."""
    capacity = kv_capacity_override
    if capacity is None:
        capacity = kv_capacity_tokens(model, gpu, num_gpus, features, profile.reserve_gib)
        if capacity < 1:
            need = model.weight_bytes / num_gpus / GIB
            raise SimConfigError(
                "num_gpus", num_gpus,
                f"{model.name} needs {need:.0f} GiB of weights per GPU on {num_gpus} x {gpu.name} "
                f"({gpu.memory_gib} GiB each, {profile.reserve_gib} GiB reserve): use more GPUs, a larger GPU, "
                "or set kv_capacity_tokens")
    return CostModel(model=model, gpu=gpu, num_gpus=num_gpus, profile=profile, features=features,
                     kv_capacity_tokens=capacity)


def resolve(config: SimConfig) -> CostModel:
    """The cost model a simulator config asks for; raises SimConfigError naming the field to change."""
    from raybench.sim.profiles import load_profiles, pair_key, uncalibrated

    model = find_model(config.model)
    if model is None:
        names = ", ".join(m.name for m in MODELS)
        raise SimConfigError("model", config.model, f"for engine timing a profiled model: {names}")
    gpu = GPUS[config.gpu]
    engine = config.backend_profile
    profile = load_profiles(config.profiles).get(pair_key(engine, gpu.name)) or uncalibrated(engine, gpu.name)
    features = config.engine_features()
    if config.max_num_seqs is not None:
        features = features.with_(max_running=config.max_num_seqs)
    if config.max_num_batched_tokens is not None:
        if config.max_num_batched_tokens < features.dp_attention:
            raise SimConfigError("max_num_batched_tokens", config.max_num_batched_tokens,
                                 f"at least the DP-attention ranks ({features.dp_attention}): each takes "
                                 f"max_num_batched_tokens // {features.dp_attention} prompt tokens a step")
        features = features.with_(prefill_tokens_per_step=config.max_num_batched_tokens)
    return build(model, gpu, config.num_gpus, profile, features, config.kv_capacity_tokens)
