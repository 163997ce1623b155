"""Can the cluster host a cell's streams? Checked before the cell (and the run) starts, not found out later.

Each load-generator actor takes ``cpus_per_actor`` of a CPU and drives its streams from one
process, so the cluster hosts at most

    actors that fit now  = floor(free CPUs on the client nodes / cpus_per_actor)
    streams per actor   <= the open-file limit (one socket per stream) less what Ray itself holds
    streams per node    <= the ephemeral ports toward one server (ip_local_port_range)

A cell asking for more actors than fit runs on those that fit, with more streams each, and says
so; a cell asking for more streams than the cluster can host at all is refused in one line that
gives the largest concurrency it can host now and how to add client nodes. Without this check an
actor that cannot be placed waits minutes in silence, then fails with a timeout.

``size_pool`` is plain arithmetic (unit-tested); ``client_capacity`` reads the cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from raybench.errors import ConfigError, RunError

CLIENT_RESOURCE = "client"
# descriptors an actor's process holds besides its streams (Ray's own sockets, logs, pipes)
FD_RESERVE = 128
_DEFAULT_PORTS = 28232  # Linux's default ip_local_port_range, 32768-60999
ADD_CLIENT_NODES = """add client nodes (on each: ray start --address=<head>:6379 --resources='{"client": 1}')"""


@dataclass(frozen=True, kw_only=True)
class ClientCapacity:
    """What the nodes that may run load generators have free now."""

    free_cpus: float
    nodes: int  # nodes load generators may go to (client nodes when the cluster has any)
    client_nodes: int  # nodes with the ``client`` resource; 0: load generators may go anywhere
    fds_per_process: int  # the open-file limit (RLIMIT_NOFILE) of an actor's process (read on the driver's node)
    ports_per_node: int = _DEFAULT_PORTS  # ephemeral ports toward one server address
    # CPUs of those nodes, free or not: by default no more actors than cores (more only take turns)
    total_cpus: int | None = None

    @property
    def streams_per_actor_max(self) -> int:
        return max(1, self.fds_per_process - FD_RESERVE)

    def actors_that_fit(self, cpus_per_actor: float) -> int:
        return math.floor(self.free_cpus / cpus_per_actor + 1e-9)

    def where(self) -> str:
        return f"{self.client_nodes} client node{'s' if self.client_nodes != 1 else ''}" if self.client_nodes else \
            f"{self.nodes} node{'s' if self.nodes != 1 else ''}"


@dataclass(frozen=True, kw_only=True)
class PoolSize:
    actors: int
    note: str | None = None  # set when the pool differs from what was asked (too few CPUs)


def size_pool(*, cell_id: str, streams: int, actors: int | None, streams_per_actor: int, cpus_per_actor: float,
              capacity: ClientCapacity) -> PoolSize:
    """The actors a cell of ``streams`` concurrent streams runs on, or a one-line error.

    ``actors``: what the user asked for (--actors), None for one per ``streams_per_actor``.
    """
    fit = capacity.actors_that_fit(cpus_per_actor)
    free = f"{capacity.free_cpus:g} free CPUs on {capacity.where()} ({cpus_per_actor:g} CPU per load-generator actor)"
    if fit < 1:
        raise RunError(f"cell {cell_id}: no room for a load-generator actor: {free}; "
                       f"wait for other Ray jobs to finish, or {ADD_CLIENT_NODES}")
    if actors is not None and actors > fit:
        raise ConfigError(f"--actors {actors}: the cluster has room for {fit} load-generator actors now ({free}); "
                          f"use --actors {fit} or fewer, or {ADD_CLIENT_NODES}")
    per_actor = capacity.streams_per_actor_max
    largest = min((actors or fit) * per_actor, max(1, capacity.nodes) * capacity.ports_per_node)
    if streams > largest:
        limits = (f"{actors or fit} actors x up to {per_actor:,} streams (open-file limit "
                  f"{capacity.fds_per_process:,}), {capacity.ports_per_node:,} ports per node toward one server")
        raise RunError(f"cell {cell_id}: {streams:,} concurrent streams do not fit: the cluster can host at most "
                       f"{largest:,} now ({free}; {limits}); lower the concurrency to {largest:,} or less, "
                       f"or {ADD_CLIENT_NODES}")
    if actors is not None:
        return PoolSize(actors=min(actors, streams))
    wanted = min(math.ceil(streams / streams_per_actor), streams, capacity.total_cpus or streams)
    if wanted <= fit:
        return PoolSize(actors=wanted)
    note = (f"cell {cell_id}: {streams:,} streams would take {wanted} load-generator actors, but {free} hold {fit}: "
            f"running {fit} actors of up to {math.ceil(streams / fit):,} streams each")
    return PoolSize(actors=fit, note=note)


def client_capacity() -> ClientCapacity:
    """The free CPUs where load generators go, from the connected Ray cluster."""
    import resource

    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    clients = [n for n in nodes if n.get("Resources", {}).get(CLIENT_RESOURCE, 0) > 0]
    free = float(ray.available_resources().get("CPU", 0.0))
    if clients:  # Ray's public API gives free CPUs per cluster only: capped by what the client nodes have
        free = min(free, sum(float(n["Resources"].get("CPU", 0.0)) for n in clients))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    total = int(sum(float(n["Resources"].get("CPU", 0.0)) for n in clients or nodes))
    return ClientCapacity(free_cpus=free, nodes=len(clients or nodes), client_nodes=len(clients), total_cpus=max(1, total),
                          fds_per_process=soft if soft != resource.RLIM_INFINITY else 1 << 20,
                          ports_per_node=local_port_range())


def local_port_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return _DEFAULT_PORTS
    return max(1, high - low + 1)
