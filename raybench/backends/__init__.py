"""Backends: what raybench benchmarks, as data (one module each), and the actors that run them.

    ProcessBackend            started by raybench on a GPU node (server_actor.ServerActor)
    ├── SGLangBackend         python -m sglang.launch_server
    ├── VLLMBackend           vllm serve
    ├── TRTLLMBackend         trtllm-serve
    └── SimBackend            python -m raybench sim (no GPU)
    ExternalBackend           a URL someone else runs

This package's top level imports no Ray: experiment files and unit tests load it cheaply.
"""

from raybench.backends.base import BackendKind, Dialect, Endpoints, LogFindings, Placement, Platform, ProcessBackend
from raybench.backends.container import Container, ContainerRuntime
from raybench.backends.external import ExternalBackend
from raybench.backends.sglang import SGLangBackend
from raybench.backends.sim import SimBackend
from raybench.backends.trtllm import TRTLLMBackend, TRTLLMEngineFlag, TRTLLMRuntime
from raybench.backends.vllm import VLLMBackend

Backend = SGLangBackend | VLLMBackend | TRTLLMBackend | SimBackend | ExternalBackend

__all__ = [
    "Backend", "BackendKind", "Container", "ContainerRuntime", "Dialect", "Endpoints", "ExternalBackend",
    "LogFindings", "Placement", "Platform", "ProcessBackend", "SGLangBackend", "SimBackend", "TRTLLMBackend",
    "TRTLLMEngineFlag", "TRTLLMRuntime", "VLLMBackend",
]
