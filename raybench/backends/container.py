"""Running a server inside a container image: ``docker run`` / ``podman run`` with GPU access.

The container shares the node's network (``--network host``) so the server's port is the
node's port, gets the GPUs Ray reserved for the ServerActor and no others, a large /dev/shm
(NCCL and PyTorch share tensors through it; the seed used 32 GB), and optionally the node's
Hugging Face cache so weights are downloaded once per node.

GPU flags, from the runtimes' own documentation:
- NVIDIA + docker: ``--gpus '"device=0,1"'`` (Docker's ``--gpus``; the inner quotes are literal).
- NVIDIA + podman: ``--device nvidia.com/gpu=0`` per GPU (CDI names).
- AMD (ROCm): ``--device /dev/kfd --device /dev/dri --group-add video --security-opt
  seccomp=unconfined`` (ROCm's "Running ROCm Docker containers"), and ``HIP_VISIBLE_DEVICES``
  to keep the server on the GPUs Ray gave it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from raybench.errors import ConfigError

HF_CACHE_IN_CONTAINER = "/root/.cache/huggingface"


class ContainerRuntime(str, enum.Enum):
    DOCKER = "docker"
    PODMAN = "podman"


@dataclass(frozen=True, kw_only=True)
class Container:
    image: str
    runtime: ContainerRuntime = ContainerRuntime.DOCKER
    shm_size: str | None = "32g"  # None: leave the runtime's default (64 MB, too small for TP)
    ipc_host: bool = False  # share the host's IPC namespace instead of a private /dev/shm
    model_cache: str | None = None  # node path mounted at /root/.cache/huggingface
    extra_args: tuple[str, ...] = ()  # more `docker run` options, e.g. ("--ulimit", "memlock=-1")

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image.strip():
            raise ConfigError.invalid("container.image", self.image, "an image reference such as 'vllm/vllm-openai:v0.7.3'")
        try:
            object.__setattr__(self, "runtime", ContainerRuntime(self.runtime))
        except ValueError:
            raise ConfigError.unknown("container.runtime", str(self.runtime), [r.value for r in ContainerRuntime]) from None
        if isinstance(self.extra_args, str) or not all(isinstance(a, str) for a in self.extra_args):
            raise ConfigError.invalid("container.extra_args", self.extra_args, "a tuple of strings")
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    def run_argv(
        self, inner: Sequence[str], *, name: str, env: Mapping[str, str], platform: str, gpu_ids: Sequence[str]
    ) -> list[str]:
        """``<runtime> run ... --entrypoint <inner[0]> <image> <inner[1:]>``; ``platform`` is "cuda" or "rocm"."""
        argv = [self.runtime.value, "run", "--rm", "--name", name, "--network", "host"]
        if self.ipc_host:
            argv += ["--ipc", "host"]
        elif self.shm_size:
            argv += ["--shm-size", self.shm_size]
        argv += self._gpu_flags(platform, gpu_ids)
        if self.model_cache:
            argv += ["-v", f"{self.model_cache}:{HF_CACHE_IN_CONTAINER}"]
        env = dict(env)
        if platform == "rocm" and gpu_ids:
            env.setdefault("HIP_VISIBLE_DEVICES", ",".join(gpu_ids))
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        # the image's own entrypoint (vllm/vllm-openai starts the API server) would take the
        # command as its arguments: run the server's program as the entrypoint instead
        return argv + list(self.extra_args) + ["--entrypoint", inner[0], self.image, *inner[1:]]

    def _gpu_flags(self, platform: str, gpu_ids: Sequence[str]) -> list[str]:
        if platform == "rocm":
            return ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video",
                    "--security-opt", "seccomp=unconfined"]
        if not gpu_ids:
            return []
        if self.runtime is ContainerRuntime.PODMAN:
            flags: list[str] = []
            for gpu in gpu_ids:
                flags += ["--device", f"nvidia.com/gpu={gpu}"]
            return flags
        # the quotes are part of the value: docker splits --gpus on commas otherwise
        return ["--gpus", '"device=' + ",".join(gpu_ids) + '"']

    def remove_argv(self, name: str) -> list[str]:
        """Removes the container whatever state it is in (the CLI may be gone, the container not)."""
        return [self.runtime.value, "rm", "-f", name]
