"""``raybench sim``: serve the simulator from the command line (a thin adapter over ``run``)."""

from __future__ import annotations

import dataclasses

import click

from raybench.sim import costmodel
from raybench.sim.features import ENGINES, Policy, Preemption, PrefixCache, defaults
from raybench.sim.config import TIMINGS, FaultKind, FaultSpec, SimConfig, SimConfigError
from raybench.sim.server import run

_OPTION_OF_FIELD = {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(SimConfig)}
_OPTION_OF_FIELD["faults"] = "--fault"

EPILOG = """\b
Examples:
  raybench sim                                   # zero latency, on a free port
  raybench sim --port 8000 --timing fixed --ttft-ms 200 --itl-ms 20
  raybench sim --timing engine --gpu MI300X --backend-profile sglang
  raybench sim --tokens-per-chunk 4              # MTP-like: 4 tokens per chunk
  raybench sim --fault http_500:every=10 --fault drop:every=7:after=5
  raybench sim --ready-file /tmp/sim.port        # the port is written there once listening
"""


class FaultParam(click.ParamType):
    """KIND[:every=N][:after=K] into a FaultSpec."""

    name = "fault"

    def convert(self, value, param, ctx):
        if isinstance(value, FaultSpec):
            return value
        kind, *options = str(value).split(":")
        kwargs: dict[str, object] = {"kind": kind}
        for option in options:
            name, sep, number = option.partition("=")
            field = {"every": "every", "after": "after_chunks"}.get(name)
            if not sep or field is None:
                self.fail(f"{value!r}: options are every=N and after=K, got {option!r}", param, ctx)
            try:
                kwargs[field] = int(number)
            except ValueError:
                self.fail(f"{value!r}: {name} must be an integer, got {number!r}", param, ctx)
        try:
            return FaultSpec(**kwargs)  # type: ignore[arg-type]
        except SimConfigError as err:
            self.fail(f"{value!r}: {err}", param, ctx)


_FEATURE_OPTIONS = {"policy": "policy", "chunked_prefill": "chunked_prefill", "dp_attention": "dp_attention",
                    "prefix_cache": "prefix_cache", "preemption": "preemption", "memory_fraction": "memory_fraction",
                    "max_model_len": "max_model_len", "cuda_graphs": "cuda_graphs",
                    "graph_max_context": "graph_max_context", "async_output": "async_output",
                    "profiled_kv_pool": "profiled_kv_pool", "memory_of_free": "memory_of_free",
                    "block_size": "block_tokens", "oversized_prompt_alone": "oversized_prompt_alone"}


def _features(options: dict):
    """The engine's default features with the options given on the command line."""
    changes = {f: options.pop(o) for o, f in _FEATURE_OPTIONS.items()}
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return None
    try:
        return defaults(str(options["backend_profile"])).with_(**changes)
    except SimConfigError as err:
        raise click.BadParameter(str(err), param_hint=f"'--{err.field.replace('_', '-')}'") from err


@click.command("sim", epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to bind; 0 picks a free one.")
@click.option("--model", default="deepseek-ai/DeepSeek-R1", show_default=True,
              help="Served model name (engine timing needs a profiled model).")
@click.option("--timing", type=click.Choice(TIMINGS), default="zero", show_default=True,
              help="zero: as fast as possible; fixed: --ttft-ms/--itl-ms; engine: batching + roofline.")
@click.option("--ttft-ms", type=click.FloatRange(0, 3.6e6), default=200.0, show_default=True,
              help="fixed timing: time to first token.")
@click.option("--itl-ms", type=click.FloatRange(0, 3.6e6), default=20.0, show_default=True,
              help="fixed timing: time per output token.")
@click.option("--tokens-per-chunk", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Tokens per decode step and chunk (MTP / speculative decoding).")
@click.option("--gpu", type=click.Choice(list(costmodel.GPUS)), default="H200", show_default=True)
@click.option("--num-gpus", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option("--backend-profile", type=click.Choice(list(ENGINES)), default="vllm",
              show_default=True, help="Engine: its fitted profile on --gpu and its scheduling defaults.")
@click.option("--profiles", default=None, help="Profiles JSON from `raybench calibrate` [default: the shipped ones].")
@click.option("--policy", type=click.Choice([p.value for p in Policy]), default=None,
              help="prefill_first (SGLang, vLLM V0) or mixed (chunked prefill, TRT-LLM) [default: engine's].")
@click.option("--chunked-prefill/--no-chunked-prefill", default=None, help="May a prompt span steps [default: engine's].")
@click.option("--dp-attention", type=click.IntRange(min=1), default=None,
              help="Ranks holding disjoint requests' KV (SGLang --enable-dp-attention: the GPU count).")
@click.option("--prefix-cache", type=click.Choice([p.value for p in PrefixCache]), default=None,
              help="none, block_hash (vLLM) or radix (SGLang) [default: engine's].")
@click.option("--preemption", type=click.Choice([p.value for p in Preemption]), default=None,
              help="recompute (vLLM), retract (SGLang), none (TRT-LLM reserves) [default: engine's].")
@click.option("--memory-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="GPU memory the engine takes [default: engine's].")
@click.option("--max-model-len", type=click.IntRange(min=1), default=None, help="Longest prompt + output.")
@click.option("--block-size", type=click.IntRange(min=1), default=None,
              help="KV block in tokens: the pool's unit, and a vLLM prefix hit's (64 under FlashMLA) "
                   "[default: engine's].")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None,
              help="Decode steps replay CUDA graphs (off: vLLM --enforce-eager) [default: engine's].")
@click.option("--graph-max-context", type=click.IntRange(min=1), default=None,
              help="A decode step with a longer sequence runs eagerly (vLLM --max-seq-len-to-capture) "
                   "[default: engine's].")
@click.option("--async-output/--no-async-output", default=None,
              help="A step's tokens go out with the next step's, as vLLM V0's async output processing "
                   "hands them out (off: --disable-async-output-proc, --enforce-eager, the V1 engine) "
                   "[default: engine's].")
@click.option("--profiled-kv-pool/--no-profiled-kv-pool", default=None,
              help="The KV pool is what a forward pass over a full step's prompt tokens leaves free, as "
                   "vLLM profiles it: a smaller --max-num-batched-tokens leaves more [default: engine's].")
@click.option("--memory-of-free/--memory-of-total", default=None,
              help="--memory-fraction is a share of the memory the weights leave free, as TensorRT-LLM's "
                   "free_gpu_memory_fraction is, not of the whole GPU [default: engine's].")
@click.option("--oversized-prompt-alone/--oversized-prompt-refused", default=None,
              help="Without chunked prefill, a prompt longer than a step's budget runs alone in a step (SGLang) "
                   "or is refused with a 400 (TensorRT-LLM; vLLM V0 would not start with such a budget) "
                   "[default: engine's].")
@click.option("--max-num-seqs", type=click.IntRange(min=1), default=None,
              help="Cap on running requests [default: backend profile].")
@click.option("--max-num-batched-tokens", type=click.IntRange(min=1), default=None,
              help="Token budget per step [default: backend profile].")
@click.option("--kv-capacity-tokens", type=click.IntRange(min=1), default=None,
              help="KV cache size in tokens [default: GPU memory minus weights].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the early-EOS points.")
@click.option("--fault", "faults", type=FaultParam(), multiple=True, metavar="KIND[:every=N][:after=K]",
              help=f"Inject a fault (repeatable); kinds: {', '.join(k.value for k in FaultKind)}.")
@click.option("--ready-file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the port number here once listening.")
def sim_command(ready_file: str | None, **options: object) -> None:
    """Serve the simulated OpenAI-compatible inference server until SIGTERM / Ctrl-C."""
    options["faults"] = tuple(options["faults"])  # type: ignore[arg-type]
    options["features"] = _features(options)
    try:
        config = SimConfig(**options)  # type: ignore[arg-type]
    except SimConfigError as err:
        field = err.field.split(".")[0]
        hint = _OPTION_OF_FIELD.get(field, _OPTION_OF_FIELD.get(field + "s", field))
        raise click.BadParameter(str(err), param_hint=f"'{hint}'") from err
    try:
        run(config, ready_file=ready_file)
    except OSError as err:  # the address is taken or not ours
        raise click.ClickException(f"cannot serve on {config.host}:{config.port}: {err.strerror or err}") from err
