"""Does a fused MoE kernel's time follow its padded tiles? A GPU measurement for the simulator.

    python benchmarks/fused_moe_tiles.py            # one CUDA GPU, PyTorch and Triton; 1-2 minutes
    python benchmarks/fused_moe_tiles.py --check    # correctness only (TRITON_INTERPRET=1 runs it on a CPU)

vLLM and SGLang run DeepSeek-R1's routed experts in one grouped GEMM: a step's token slots
(tokens x top 8) are sorted by expert, each expert's run is padded to a whole number of
BLOCK_SIZE_M rows, and one program computes one (BLOCK_SIZE_M x BLOCK_SIZE_N) tile of one
expert. vLLM's tuned H200 table for DeepSeek-R1's tensor-parallel-8 shards (E=256, N=256, FP8
with 128 x 128 blocks) takes 16 rows a tile for up to 512 tokens a step and 64 from 1024, so a
step of ~1300-2048 tokens (a chunked-prefill step) computes 1.35-1.55 times its routed rows,
a whole 3200-token prompt 1.28 times, a 32768-token batch 1.03 times. The simulator charges
routed experts one weight read per touched expert plus compute linear in the real rows; the
padding would add cost to exactly the steps where vLLM's chunked launch is known to be slower
than the model (docs/simulator-prefix-rows.md). Whether padded rows cost time depends on
whether a tile is bound by its compute or by reading its weight block, which only a GPU can say.

The kernel here is written for this measurement (not vLLM's): the same grouped layout at
DeepSeek-R1's per-GPU shapes under tensor parallelism 8 (gate+up: K 7168, N 512 per expert;
down: K 256, N 7168), uniform top-8 routing over 256 experts, FP8 e4m3 operands with one scale
per token and 128 channels (activations) and per 128 x 128 block (weights), as DeepSeek-R1's
checkpoint stores them, FP32 accumulation; and BF16 without scales beside it. Per step size T it
times both GEMMs with tiles of 16 and of 64 rows (vLLM's for T marked), and prints time, tiles,
real and padded rows, time per tile and per real token. If the kernel's time follows its tiles,
time per real token at T (table tile) over that at the largest T equals the padding ratio
printed beside it, and padded rows belong in the simulator's compute; if it stays flat while
padding grows, they cost nothing there.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

try:
    import torch
    import triton
    import triton.language as tl
except ImportError as exc:  # raybench itself needs neither
    sys.exit(f"fused_moe_tiles.py needs PyTorch and Triton ({exc}); run it where both are installed")

EXPERTS, TOP_K = 256, 8  # DeepSeek-R1's routed experts
HIDDEN, SHARD = 7168, 256  # hidden size; an expert's intermediate size (2048) over 8 ranks
QUANT_BLOCK = 128  # DeepSeek-R1's FP8 scales cover 128 channels (activations) or 128 x 128 (weights)
STEPS = "128,512,1024,1321,1417,2048,3200,6400,12800,32768"


def table_block_m(tokens: int) -> int:
    """vLLM's tuned tile height for E=256, N=256 on H200 (FP8, 128 x 128 blocks): the table's
    entry nearest the step's token count, as vLLM picks it (16 up to 512 tokens, 64 from 1024;
    768 ties and takes the lower entry)."""
    return 16 if tokens <= 768 else 64


@triton.jit
def _grouped_gemm(a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, c_ptr, slots_ptr, tile_expert_ptr,
                  n_slots, a_rows_per_slot, n, k, stride_a, stride_as, stride_we, stride_wn, stride_wse,
                  stride_wsn, stride_c, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  SCALED: tl.constexpr):
    """One program: one expert's BLOCK_M padded slots x BLOCK_N output channels. A slot's input
    row is ``slot // a_rows_per_slot`` (top_k for gate+up, whose input is the token; 1 for down)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(tile_expert_ptr + pid_m).to(tl.int64)
    slots = tl.load(slots_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = slots < n_slots
    rows = (slots // a_rows_per_slot).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, k, BLOCK_K):
        a = tl.load(a_ptr + rows[:, None] * stride_a + (k0 + ks)[None, :], mask=valid[:, None], other=0.0)
        w = tl.load(w_ptr + expert * stride_we + cols[None, :] * stride_wn + (k0 + ks)[:, None])
        part = tl.dot(a, w)
        if SCALED:
            a_s = tl.load(a_scale_ptr + rows * stride_as + k0 // BLOCK_K, mask=valid, other=0.0)
            w_s = tl.load(w_scale_ptr + expert * stride_wse + pid_n * stride_wsn + k0 // BLOCK_K)  # tiles are blocks
            acc += part * a_s[:, None] * w_s
        else:
            acc += part
    tl.store(c_ptr + slots[:, None].to(tl.int64) * stride_c + cols[None, :], acc.to(c_ptr.dtype.element_ty),
             mask=valid[:, None])


def route(tokens: int, experts: int, top_k: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform routing: each token's top_k distinct experts, [tokens, top_k]."""
    return torch.rand(tokens, experts, generator=gen).topk(top_k, dim=1).indices


def align(expert_ids: torch.Tensor, experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The slots (token x top_k, flattened) sorted by expert, each expert's run padded to whole
    tiles with the out-of-range slot (tokens x top_k); and each tile's expert."""
    flat = expert_ids.flatten()
    n_slots = flat.numel()
    counts = torch.bincount(flat, minlength=experts)
    tiles = (counts + block_m - 1) // block_m
    start = torch.cumsum(tiles * block_m, 0) - tiles * block_m  # where each expert's run begins
    order = torch.argsort(flat, stable=True)
    by_expert = flat[order]
    rank = torch.arange(n_slots) - (torch.cumsum(counts, 0) - counts)[by_expert]  # place within its run
    slots = torch.full((int(tiles.sum()) * block_m,), n_slots, dtype=torch.int32)
    slots[start[by_expert] + rank] = order.to(torch.int32)
    return slots, torch.repeat_interleave(torch.arange(experts, dtype=torch.int32), tiles)


def grouped_gemm(a, a_scale, w, w_scale, slots, tile_expert, n_slots: int, a_rows_per_slot: int,
                 block_m: int, block_n: int = QUANT_BLOCK, block_k: int = QUANT_BLOCK, out=None) -> torch.Tensor:
    """[n_slots, N] = each slot's input row times its expert's weight (``w``: [E, N, K]), scaled
    per block where scales are given; into ``out`` where given (a timed call then only computes)."""
    n, k = w.shape[1], w.shape[2]
    if n % block_n or k % block_k:
        raise ValueError(f"N {n} and K {k} must be multiples of the tile ({block_n} x {block_k})")
    if a_scale is not None and (block_n, block_k) != (QUANT_BLOCK, QUANT_BLOCK):
        raise ValueError(f"scaled operands take {QUANT_BLOCK} x {QUANT_BLOCK} tiles, one scale block each")
    if out is None:
        out = torch.empty(n_slots, n, device=a.device, dtype=torch.bfloat16 if a.is_cuda else torch.float32)
    scaled = a_scale is not None
    grid = (tile_expert.numel(), n // block_n)
    _grouped_gemm[grid](
        a, a_scale if scaled else a, w, w_scale if scaled else w, out, slots, tile_expert,
        n_slots, a_rows_per_slot, n, k, a.stride(0), a_scale.stride(0) if scaled else 0, w.stride(0), w.stride(1),
        w_scale.stride(0) if scaled else 0, w_scale.stride(1) if scaled else 0, out.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SCALED=scaled)
    return out


def reference(a, a_scale, w, w_scale, expert_ids, a_rows_per_slot: int) -> torch.Tensor:
    a = a.float()
    w = w.float()
    if a_scale is not None:
        a = a * a_scale.repeat_interleave(QUANT_BLOCK, 1)
        w = w * w_scale.repeat_interleave(QUANT_BLOCK, 1).repeat_interleave(QUANT_BLOCK, 2)
    flat = expert_ids.flatten()
    rows = torch.arange(flat.numel()) // a_rows_per_slot
    return torch.einsum("sk,snk->sn", a[rows], w[flat])


def check(device: str) -> None:
    """Both GEMMs' layouts against PyTorch, scaled and not, on small shapes: tile heights that
    leave most of a tile empty and ones an expert overflows."""
    gen = torch.Generator().manual_seed(1)
    experts, top_k, k, n = 6, 2, 2 * QUANT_BLOCK, 2 * QUANT_BLOCK
    for tokens, block_m, scaled, per_slot in ((37, 16, True, False), (5, 16, False, True), (70, 64, True, True)):
        expert_ids = route(tokens, experts, top_k, gen)
        n_slots = tokens * top_k
        a_rows = n_slots if per_slot else tokens
        a = torch.randn(a_rows, k, generator=gen)
        w = torch.randn(experts, n, k, generator=gen)
        a_scale = torch.rand(a_rows, k // QUANT_BLOCK, generator=gen) + 0.5 if scaled else None
        w_scale = torch.rand(experts, n // QUANT_BLOCK, k // QUANT_BLOCK, generator=gen) + 0.5 if scaled else None
        slots, tile_expert = align(expert_ids, experts, block_m)
        rows_per_slot = 1 if per_slot else top_k
        moved = [t.to(device) if t is not None else None for t in (a, a_scale, w, w_scale, slots, tile_expert)]
        got = grouped_gemm(*moved, n_slots, rows_per_slot, block_m).float().cpu()
        want = reference(a, a_scale, w, w_scale, expert_ids, rows_per_slot)
        err = float((got - want).norm() / want.norm())
        print(f"check tokens {tokens} tile {block_m} scaled {scaled} input per slot {per_slot}: relative error {err:.1e}")
        if not err < 2e-2:  # a GPU computes FP32 dots in TF32 and stores BF16
            sys.exit("the grouped GEMM does not match the reference")


def padding(expert_ids: torch.Tensor, experts: int, block_m: int) -> tuple[int, int]:
    """(tiles, padded rows) of a step's routed slots under this tile height."""
    counts = torch.bincount(expert_ids.flatten(), minlength=experts)
    tiles = int(((counts + block_m - 1) // block_m).sum())
    return tiles, tiles * block_m


def operands(kind: str, dtype: str, rows: int, device: str):
    """(input, input scales, weights, weight scales) of one GEMM; scales only for FP8."""
    k, n = (HIDDEN, 2 * SHARD) if kind == "gate_up" else (SHARD, HIDDEN)
    a = torch.randn(rows, k, device=device)
    w = torch.randn(EXPERTS, n, k, device=device)
    if dtype == "bf16":
        return a.bfloat16(), None, w.bfloat16(), None
    fp8 = torch.float8_e4m3fn
    a_scale = torch.rand(rows, k // QUANT_BLOCK, device=device) + 0.5
    w_scale = torch.rand(EXPERTS, n // QUANT_BLOCK, k // QUANT_BLOCK, device=device) + 0.5
    return a.to(fp8), a_scale, w.to(fp8), w_scale


def gpu_time_us(call) -> float:
    return 1000 * triton.testing.do_bench(call, warmup=10, rep=50, return_mode="median")


def measure(steps: list[int], dtypes: list[str], device: str = "cuda", timer=gpu_time_us) -> list[dict]:
    """Both GEMMs at every step size, with vLLM's tile height and the other one, printed as they go."""
    gen = torch.Generator().manual_seed(0)
    largest = max(steps)
    results = []
    print(f"{'dtype':>5} {'gemm':>7} {'tokens':>6} {'tile':>4} {'us':>9} {'tiles':>6} {'padded/real':>11}"
          f" {'us/tile':>8} {'ns/real row':>11}")
    for dtype in dtypes:
        for kind in ("gate_up", "down"):
            rows_per_slot = TOP_K if kind == "gate_up" else 1  # gate+up reads tokens, down each slot's row
            a, a_scale, w, w_scale = operands(kind, dtype, largest * TOP_K // rows_per_slot, device)
            out = torch.empty(largest * TOP_K, w.shape[1], device=device,
                              dtype=torch.bfloat16 if device == "cuda" else torch.float32)
            for tokens in sorted(steps):
                expert_ids = route(tokens, EXPERTS, TOP_K, gen)
                n_slots = tokens * TOP_K
                for block_m in (16, 64):  # vLLM's two heights for this table
                    slots, tile_expert = (t.to(device) for t in align(expert_ids, EXPERTS, block_m))
                    call = functools.partial(grouped_gemm, a, a_scale, w, w_scale, slots, tile_expert, n_slots,
                                             rows_per_slot, block_m, out=out)
                    try:
                        us = timer(call)
                    except Exception as err:  # noqa: BLE001  (a dtype this GPU's Triton cannot compile: say so, go on)
                        print(f"{dtype:>5} {kind:>7} {tokens:>6} {block_m:>4}  failed: {type(err).__name__}: {err}")
                        continue
                    tiles, padded = padding(expert_ids, EXPERTS, block_m)
                    row = {"dtype": dtype, "gemm": kind, "tokens": tokens, "block_m": block_m, "us": us,
                           "tiles": tiles, "real_rows": n_slots, "padded_rows": padded,
                           "table_tile": block_m == table_block_m(tokens)}
                    results.append(row)
                    mark = "*" if row["table_tile"] else " "
                    print(f"{dtype:>5} {kind:>7} {tokens:>6} {block_m:>3}{mark} {us:9.1f} {tiles:>6}"
                          f" {padded / n_slots:11.3f} {us / tiles:8.3f} {1000 * us / n_slots:11.3f}", flush=True)
            del a, a_scale, w, w_scale, out
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the kernel against PyTorch and stop")
    parser.add_argument("--steps", default=STEPS, help="tokens a step, comma-separated")
    parser.add_argument("--dtypes", default="fp8,bf16")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    try:
        steps = [int(s) for s in args.steps.split(",")]
        dtypes = args.dtypes.split(",")
        if min(steps) < 1 or not set(dtypes) <= {"fp8", "bf16"}:
            raise ValueError
    except ValueError:
        sys.exit("--steps takes positive integers and --dtypes fp8 and/or bf16 (e.g. --steps 2048,32768 --dtypes fp8)")
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if not interpret and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run it on a GPU machine, or with --check and TRITON_INTERPRET=1 on a CPU")
    check("cpu" if interpret else "cuda")
    if args.check:
        return
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, triton {triton.__version__}")
    results = measure(steps, dtypes)
    summarize(results, max(steps))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def summarize(results: list[dict], largest: int) -> None:
    """Per GEMM, with vLLM's tile for each step: time per real row against the largest step's,
    beside the padding ratio; equal columns mean the time follows the tiles."""
    print("\nwith vLLM's tile (*): time per real row / the largest step's, and padding / the largest step's")
    for dtype in sorted({r["dtype"] for r in results}):
        for kind in ("gate_up", "down"):
            rows = {r["tokens"]: r for r in results if r["dtype"] == dtype and r["gemm"] == kind and r["table_tile"]}
            if largest not in rows:
                continue
            base = rows[largest]
            per_row = base["us"] / base["real_rows"]
            pad = base["padded_rows"] / base["real_rows"]
            for tokens, r in sorted(rows.items()):
                print(f"  {dtype:>5} {kind:>7} {tokens:>6}: time/row x{r['us'] / r['real_rows'] / per_row:5.2f}"
                      f"   padding x{r['padded_rows'] / r['real_rows'] / pad:5.2f}")


if __name__ == "__main__":
    main()
