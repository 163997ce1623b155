"""What one Triton kernel variant costs to compile: the stall a server pays the first time a step meets it.

    python benchmarks/triton_compile_cost.py                  # sm_90 (H200, H100); no GPU needed
    python benchmarks/triton_compile_cost.py --arch 80 --repeat 3

Triton compiles a kernel on its first call with a new set of compile-time constants (the tile
configuration a server's tuned table picks for the step's token count) or a new specialisation
of its integer arguments (by default, whether each is divisible by 16). A serving engine whose
start-up did not run a step's shapes compiles them inside that step, while every request in
it waits. docs/simulator-prefix-rows.md asks whether such stalls could delay the first wave of
the seed's chunked vLLM launch; this prints what each variant of an FP8 grouped GEMM laid out
as a fused MoE's (benchmarks/fused_moe_tiles.py's kernel, DeepSeek-R1's 128 x 128 scale blocks)
takes to compile for a CUDA architecture, with Triton's bundled ptxas, on this machine's CPU.
Each variant is compiled into an empty cache, so nothing is reused between them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as exc:  # raybench itself does not need Triton
    sys.exit(f"triton_compile_cost.py needs Triton ({exc}); run it where Triton is installed")

POINTERS = {"a_ptr": "*fp8e4nv", "a_scale_ptr": "*fp32", "w_ptr": "*fp8e4nv", "w_scale_ptr": "*fp32",
            "c_ptr": "*bf16", "slots_ptr": "*i32", "tile_expert_ptr": "*i32"}
#: the kernel's one argument that follows a step's token count (tokens x top-k slots)
STEP_ARGUMENT = "n_slots"


def grouped_gemm_kernel():
    path = Path(__file__).with_name("fused_moe_tiles.py")
    spec = importlib.util.spec_from_file_location("fused_moe_tiles", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # needs PyTorch too, as that script does
    return module._grouped_gemm


def compile_seconds(kernel, arch: int, block_m: int, step_divisible: bool) -> float:
    """Compile one variant for ``arch`` into a fresh cache; the wall seconds it took."""
    names = kernel.arg_names
    signature = dict(POINTERS)
    signature.update({n: "i32" for n in names if n not in POINTERS and not n.isupper()})
    signature.update({n: "constexpr" for n in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "SCALED")})
    constants = {"BLOCK_M": block_m, "BLOCK_N": 128, "BLOCK_K": 128, "SCALED": True}
    aligned = [n for n, kind in signature.items() if kind != "constexpr" and (n != STEP_ARGUMENT or step_divisible)]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TRITON_CACHE_DIR"] = cache  # Triton before its knobs read the cache folder from here
        if hasattr(triton, "knobs"):
            triton.knobs.cache.dir = cache
        start = time.perf_counter()
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4, "num_stages": 3})
        seconds = time.perf_counter() - start
    if not compiled.asm.get("cubin"):
        raise RuntimeError(f"Triton produced no cubin for sm_{arch}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (90: H100/H200)")
    parser.add_argument("--repeat", type=int, default=2, help="compilations of each variant (>= 1)")
    args = parser.parse_args()
    if args.repeat < 1 or args.arch < 70:
        sys.exit("--repeat takes an integer >= 1 and --arch a compute capability x 10 of 70 or more (e.g. 90)")
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("TRITON_INTERPRET=1 runs kernels on the CPU and compiles nothing: unset it")
    kernel = grouped_gemm_kernel()
    print(f"triton {triton.__version__}, target sm_{args.arch}; seconds to compile one variant, each try in an empty cache")
    print(f"{'tile rows':>9} {'step slots % 16':>15} {'seconds':>20}")
    for block_m in (16, 64, 128):
        for divisible in (True, False):
            times = [compile_seconds(kernel, args.arch, block_m, divisible) for _ in range(args.repeat)]
            shown = " ".join(f"{t:.2f}" for t in times)
            print(f"{block_m:>9} {'0' if divisible else 'not 0':>15} {shown:>20}", flush=True)


if __name__ == "__main__":
    main()
