"""raybench's simulated inference engine: an OpenAI-compatible server and an offline engine.

It imports nothing else from raybench (and never Ray), so it can ship on its own. Start with
``SimServer`` (in-process, for tests), ``run`` (blocking, a process of its own),
``OfflineEngine`` (one batched generate call in virtual time), ``closed_loop`` (a closed-loop
benchmark in virtual time, for time estimates) and ``SimConfig``.
"""

from raybench.sim.config import FaultKind, FaultSpec, SimConfig, SimConfigError
from raybench.sim.offline import OfflineEngine, OfflineRequestResult, OfflineResult
from raybench.sim.server import SimServer, run
from raybench.sim.virtual import ClosedLoopResult, closed_loop

__all__ = [
    "ClosedLoopResult",
    "FaultKind",
    "FaultSpec",
    "OfflineEngine",
    "OfflineRequestResult",
    "OfflineResult",
    "SimConfig",
    "SimConfigError",
    "SimServer",
    "closed_loop",
    "run",
]
