"""Offline engine mode on the simulator: one batched generate inside a Ray task.

The task stands where a ``vllm.LLM`` / ``sglang.Engine`` actor will stand on a GPU node: it
builds the engine, times only the generate call, and returns per-request token counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import ray

from raybench.experiment import SimBackend
from raybench.store.schema import REQUESTS_SCHEMA, RequestStatus
from raybench.workloads.base import RequestSpec


@dataclass(frozen=True, kw_only=True)
class EngineResult:
    elapsed_s: float
    prompt_tokens: list[int]
    output_tokens: list[int]
    node: str

    def requests_table(self, cell_id: str, specs: Sequence[RequestSpec]) -> pa.Table:
        """One row per prompt; times run from 0 (the generate call) to its simulated elapsed."""
        n = len(specs)
        end_ns = int(self.elapsed_s * 1e9)
        return pa.table(
            {
                "cell_id": [cell_id] * n,
                "request_id": [s.request_id for s in specs],
                "actor": ["engine"] * n,
                "node": [self.node] * n,
                "prompt_tokens": self.prompt_tokens,
                "server_prompt_tokens": self.prompt_tokens,
                "max_tokens": [s.max_tokens for s in specs],
                "output_tokens": self.output_tokens,
                "cached_tokens": [None] * n,
                "t_scheduled_ns": [0] * n,
                "t_sent_ns": [0] * n,
                "t_first_ns": [None] * n,
                "t_done_ns": [end_ns] * n,
                "status": [RequestStatus.OK.value] * n,
                "http_status": [None] * n,
                "error": [None] * n,
            },
            schema=REQUESTS_SCHEMA,
        )


@ray.remote(num_cpus=0.5)
def _generate(backend: SimBackend, model: str, prompt_lens: list[int], max_tokens: list[int]) -> EngineResult:
    from raybench.sim.config import SimConfig
    from raybench.sim.offline import OfflineEngine

    config = SimConfig(
        model=model, timing="engine", gpu=backend.gpu, num_gpus=backend.num_gpus,
        backend_profile=backend.profile, tokens_per_chunk=backend.tokens_per_chunk,
    )
    result = OfflineEngine(config).generate(prompt_lens, max_tokens)
    return EngineResult(
        elapsed_s=result.elapsed_s,
        prompt_tokens=result.prompt_tokens,
        output_tokens=result.output_tokens,
        node=ray.get_runtime_context().get_node_id(),
    )


def run_offline_engine(backend: SimBackend, *, model: str, prompt_lens: list[int], max_tokens: list[int]) -> EngineResult:
    return ray.get(_generate.remote(backend, model, prompt_lens, max_tokens))
