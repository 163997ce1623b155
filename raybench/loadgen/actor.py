"""``LoadGenActor``: the Ray face of ``LoadGenWorker``, made once at module level."""

from __future__ import annotations

import ray

from raybench.loadgen.worker import LoadGenWorker


class _LoadGenActor(LoadGenWorker):
    def __init__(self, name: str) -> None:
        super().__init__(name=name, node=ray.get_runtime_context().get_node_id())

    def ready(self) -> str:
        """The node the actor landed on (its Ray node id)."""
        return self.node


LoadGenActor = ray.remote(_LoadGenActor)
