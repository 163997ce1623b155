"""env.json: the software, hardware, plan and server commands of a run, with secrets redacted.

Written before the first cell (servers get their versions and nodes once they are up), so a run
directory says what ran and where even when the run stops early.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import raybench
from raybench.cluster import node_gpu_inventories
from raybench.experiment import Backend, Cell, Experiment, ExternalBackend
from raybench.predict import launch_record
from raybench.store.metadata import (
    git_state,
    host_info,
    package_versions,
    redact_argv,
    redact_env,
    redact_options,
    redact_text,
    source_record,
)


def run_environment(experiment: Experiment, cells: list[Cell], *, experiment_file: Path | None,
                    invocation: Mapping[str, Any]) -> dict[str, Any]:
    """env.json: what ran, where, with which software; servers get their versions once they are up."""
    import ray

    nodes = [
        {"node_id": n["NodeID"], "address": n["NodeManagerAddress"], "alive": n["Alive"], "resources": n["Resources"]}
        for n in ray.nodes()
    ]
    source = experiment_file
    return {
        "raybench_version": raybench.__version__,
        **host_info(),
        "packages": package_versions(),
        "raybench_git": git_state(Path(raybench.__file__).parent),
        "command": redact_argv(invocation.get("argv", [])),
        "options": redact_options(invocation.get("options", {})),
        "experiment": {
            "name": experiment.name, "model": experiment.model, "seed": experiment.seed,
            "repeats": experiment.repeats, "warmup_requests": experiment.warmup_requests,
            "compat": experiment.compat, "goodput_slos_ms": experiment.goodput_slos_ms,
            "source": source_record(source) if source is not None else None,
        },
        "plan": [c.to_json() for c in cells],
        "seeds": {c.id: c.seed for c in cells},
        "servers": {b.name: _server_launch(experiment, b) for b in experiment.backends
                    if any(c.backend == b.name for c in cells)},
        "ray_nodes": nodes,
        "gpus_by_node": node_gpu_inventories(),
        "time_base": "driver perf_counter_ns; actor clocks anchored NTP-style (see cells' actors)",
    }


def _port_placeholder(argv: tuple[str, ...]) -> list[str]:
    """The port is picked free on the node at start: show it as a placeholder until then."""
    return ["<port>" if i and argv[i - 1] == "--port" and a == "0" else a for i, a in enumerate(argv)]


def _server_launch(experiment: Experiment, backend: Backend) -> dict[str, Any]:
    """How a server is started, before it is: the command with placeholders for what its node decides."""
    hw = experiment.hardware.get(backend.name)
    record: dict[str, Any] = {"kind": backend.kind.value, "hardware": dataclasses.asdict(hw) if hw else None,
                              "started": False, "version": None, "simulator": launch_record(experiment, backend)}
    if isinstance(backend, ExternalBackend):
        record["url"] = redact_text(backend.url)
        return record
    spec = backend.launch_spec(model=experiment.model, host="<node-ip>", port=0, python="python3")
    record.update(
        argv=redact_argv(_port_placeholder(spec.argv)),
        env=redact_env(spec.env),
        container=backend.container.image if backend.container is not None else None,
        ray_resources=backend.actor_options(),
    )
    return record
