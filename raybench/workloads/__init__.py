"""Prompt sources: seeded, rebuilt per request index, so any sharding sends the same prompts."""

from raybench.workloads.base import (
    RequestSpec,
    ScheduledWorkload,
    SessionWorkload,
    ShardableWorkload,
    Workload,
    prompt_text,
)
from raybench.workloads.multiturn import MultiTurnWorkload
from raybench.workloads.prefix import SharedPrefixWorkload
from raybench.workloads.random import RandomWorkload
from raybench.workloads.registry import WORKLOADS, make_workload
from raybench.workloads.trace import TraceWorkload

__all__ = [
    "WORKLOADS",
    "MultiTurnWorkload",
    "ScheduledWorkload",
    "SessionWorkload",
    "ShardableWorkload",
    "TraceWorkload",
    "RandomWorkload",
    "RequestSpec",
    "SharedPrefixWorkload",
    "Workload",
    "make_workload",
    "prompt_text",
]
