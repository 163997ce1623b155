"""Workloads by name, for experiment files and the CLI (``make_workload("random", ...)``).

Typos are the common failure here, so every error lists what exists and suggests the closest.
"""

from __future__ import annotations

import dataclasses
import difflib
from types import MappingProxyType
from typing import Any

from raybench.errors import ConfigError
from raybench.workloads.base import Workload
from raybench.workloads.multiturn import MultiTurnWorkload
from raybench.workloads.prefix import SharedPrefixWorkload
from raybench.workloads.random import RandomWorkload

# Read-only: adding a workload is a code change here, never a runtime registration.
WORKLOADS: MappingProxyType[str, type] = MappingProxyType(
    {"random": RandomWorkload, "prefix": SharedPrefixWorkload, "multiturn": MultiTurnWorkload}
)


def make_workload(name: str, **params: Any) -> Workload:
    """The workload called ``name``, built from ``params`` (validated by its class)."""
    if name not in WORKLOADS:
        raise ConfigError.unknown("workload", name, WORKLOADS)
    cls = WORKLOADS[name]
    fields = [field for field in dataclasses.fields(cls) if field.init]
    allowed = [field.name for field in fields]
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown parameter {key!r} for workload {name!r}; "
                f"allowed: {', '.join(allowed)}.{hint}"
            )
    missing = [
        field.name
        for field in fields
        if field.name not in params
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"workload {name!r} needs {', '.join(missing)}; allowed: {', '.join(allowed)}"
        )
    return cls(**params)
