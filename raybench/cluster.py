"""Joining a Ray cluster, or starting a private local one that listens on loopback only.

A laptop benchmark must not expose Ray's ports to the network. Ray decides at import time
whether a node may take a routable address (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``), so local
mode sets that variable to 0 before Ray is imported; every Ray process started from here
inherits it and binds to 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import sys

from raybench.errors import RunError
from raybench.priority import RAY_WORKER_NICENESS_ENV

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NAMESPACE = "raybench"


def cluster_address(address: str | None) -> str | None:
    """The cluster to join, or None for a fresh local one."""
    return address or os.environ.get("RAY_ADDRESS") or None


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS); with neither, start a fresh local cluster.

    The local cluster is always a new one (``address="local"``): a stale cluster found on
    disk from an earlier session is never joined by accident. Returns False when this
    process was already connected (and so should not disconnect either).
    """
    address = cluster_address(address)
    if address is None:
        os.environ[LOOPBACK_ENV] = "0"
        # Ray's workers default to niceness 15; a load generator there waits behind any busy process
        os.environ.setdefault(RAY_WORKER_NICENESS_ENV, "0")
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:
            # Ray was imported before this call (in a test or a notebook): the import-time
            # switch is already read, so set it where Ray looks it up when starting a node.
            constants.ENABLE_RAY_CLUSTER = False
    import ray

    if ray.is_initialized():
        return False
    try:
        if address is None:
            ray.init(
                address="local",
                namespace=NAMESPACE,
                num_cpus=num_cpus,
                logging_level=logging.WARNING,
                configure_logging=True,
            )
        else:
            ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = address or "a new local cluster"
        raise RunError(f"cannot connect to Ray at {where}: {err}") from err
    return True


def disconnect() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def node_gpu_inventories(timeout_s: float = 60.0) -> dict[str, dict]:
    """Each alive node's accelerators, read by the vendor tools on that node, by node id."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from raybench.store.hardware import gpu_inventory

    probe = ray.remote(num_cpus=0, max_retries=0)(gpu_inventory)  # once per run, not per node
    refs = {
        node["NodeID"]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        ).remote()
        for node in ray.nodes()
        if node["Alive"]
    }
    inventories = {}
    for node_id, ref in refs.items():
        try:
            inventories[node_id] = ray.get(ref, timeout=timeout_s)
        except (ray.exceptions.RayError, TimeoutError) as err:
            inventories[node_id] = {"vendor": None, "gpus": [], "error": f"could not ask the node: {err!r}"}
    return inventories
