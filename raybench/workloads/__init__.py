"""Prompt sources: seeded, rebuilt per request index, so any sharding sends the same prompts."""

from raybench.workloads.base import RequestSpec, Workload, prompt_text
from raybench.workloads.prefix import SharedPrefixWorkload
from raybench.workloads.random import RandomWorkload
from raybench.workloads.registry import WORKLOADS, make_workload

__all__ = [
    "WORKLOADS",
    "RandomWorkload",
    "RequestSpec",
    "SharedPrefixWorkload",
    "Workload",
    "make_workload",
    "prompt_text",
]
