"""What a decode step's attention pays for KV that requests share: a GPU measurement for the simulator.

    python benchmarks/shared_prefix_decode.py            # one CUDA GPU, PyTorch and Triton; ~1 minute
    python benchmarks/shared_prefix_decode.py --check    # correctness only (TRITON_INTERPRET=1 runs it on a CPU)

The simulator charges a decode step the KV every running request reads (``kv_s``), shared or not.
In the seed's shared-prefix rows ten groups of requests share a 2000-token prompt prefix, and a
prefix cache (vLLM's blocks, SGLang's radix tree) keeps one copy of it: the requests of a group
read the same KV. Whether the GPU then reads that copy once per request from HBM, or mostly
from L2, decides what those rows' decode steps cost.

The kernel reads KV as an MLA decode kernel on one tensor-parallel rank of DeepSeek-R1 does: per
request the BF16 latent (512 + 64 rope = 576 values a token, one layer) of every context token,
through an index table (pages of 64 tokens like vLLM's FlashMLA cache, or single tokens like
SGLang's pool), 16 query heads (128 / TP 8), scores and the latent-weighted sum with an online
softmax, each request's context split over several programs so that the GPU is full. It is not
FlashMLA: what is measured is the ratio between two layouts of the same reads.

Per batch size and page size it times, with L2 flushed before every call (median of repeats):
- ``unique``: every request's context in blocks of its own (what the simulator charges);
- ``shared``: the first 1984 tokens (31 pages of 64) of each request are its group's, ten groups,
  requests in random group order (as a server's running batch holds them);
- ``shared-sorted``: the same, the requests ordered by group;
and prints time, the bytes each layout names (every request's context) and the bytes it holds
once (unique pages), the bandwidth that would mean, shared / unique, and what a re-read of a
byte another request of the step has read costs as a share of a first read (time / unique time =
(held + re-read x (named - held)) / named): the simulator's ``GpuProfile.kv_reread_cost``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import sys

try:
    import torch
    import triton
    import triton.language as tl
except ImportError as exc:  # raybench itself needs neither
    sys.exit(f"shared_prefix_decode.py needs PyTorch and Triton ({exc}); run it where both are installed")

NOPE, ROPE, HEADS = 512, 64, 16  # DeepSeek-R1 MLA latent; 128 heads over 8 ranks
PROMPT, PREFIX, OUTPUT, GROUPS = 3272, 1984, 800, 10  # the seed's prefix rows as the server counted them


@triton.jit
def _decode_partial(q_ptr, kv_ptr, idx_ptr, lens_ptr, out_ptr, lse_ptr, max_tokens, splits, scale,
                    H: tl.constexpr, NOPE_D: tl.constexpr, ROPE_D: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    s = tl.program_id(1)
    seq_len = tl.load(lens_ptr + b)
    per_split = tl.cdiv(tl.cdiv(seq_len, BLOCK_N), splits) * BLOCK_N
    start = s * per_split
    end = tl.minimum(start + per_split, seq_len)
    heads = tl.arange(0, H)
    d_nope = tl.arange(0, NOPE_D)
    d_rope = tl.arange(0, ROPE_D)
    row = NOPE_D + ROPE_D
    q_nope = tl.load(q_ptr + (b * H + heads[:, None]) * row + d_nope[None, :])
    q_rope = tl.load(q_ptr + (b * H + heads[:, None]) * row + NOPE_D + d_rope[None, :])
    m = tl.full([H], float("-inf"), tl.float32)
    l = tl.zeros([H], tl.float32)
    acc = tl.zeros([H, NOPE_D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        valid = offs < end
        tok = tl.load(idx_ptr + b * max_tokens + offs, mask=valid, other=0).to(tl.int64)
        k_nope = tl.load(kv_ptr + tok[:, None] * row + d_nope[None, :], mask=valid[:, None], other=0.0)
        k_rope = tl.load(kv_ptr + tok[:, None] * row + NOPE_D + d_rope[None, :], mask=valid[:, None], other=0.0)
        scores = tl.dot(q_nope, tl.trans(k_nope)) + tl.dot(q_rope, tl.trans(k_rope))
        scores = tl.where(valid[None, :], scores * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(k_nope.dtype), k_nope)
        m = m_new
    part = b * splits + s
    has = end > start
    out = tl.where(has, acc / tl.where(has, l, 1.0)[:, None], 0.0)
    tl.store(out_ptr + (part * H + heads[:, None]) * NOPE_D + d_nope[None, :], out)
    tl.store(lse_ptr + part * H + heads, tl.where(has, m + tl.log(tl.where(has, l, 1.0)), float("-inf")))


def decode(q, kv, idx, lens, splits: int, warps: int = 4, stages: int = 2):
    """Attention output per request and head, [B, H, NOPE], from the split programs' partials."""
    batch = q.shape[0]
    out = torch.empty(batch, splits, HEADS, NOPE, device=q.device, dtype=torch.float32)
    lse = torch.empty(batch, splits, HEADS, device=q.device, dtype=torch.float32)
    _decode_partial[(batch, splits)](q, kv, idx, lens, out, lse, idx.shape[1], splits, 1.0 / math.sqrt(192),
                                     H=HEADS, NOPE_D=NOPE, ROPE_D=ROPE, BLOCK_N=64, num_warps=warps, num_stages=stages)
    return out, lse


def combine(out, lse):
    weights = torch.softmax(lse, dim=1)  # over the splits
    return (out * weights[..., None]).sum(1)


def reference(q, kv, idx, lens):
    outs = []
    for b in range(q.shape[0]):
        k = kv[idx[b, : lens[b]].long()].float()
        scores = q[b].float() @ k.T / math.sqrt(192)
        outs.append(torch.softmax(scores, -1) @ k[:, :NOPE])
    return torch.stack(outs)


def layout(lens: torch.Tensor, groups: torch.Tensor, page: int, kind: str, gen: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Token index table for requests of these context lengths and prefix groups, the lengths in
    the table's order, the number of distinct tokens it names, and the pool's size in tokens.

    Pages are drawn at random from a pool twice the size needed, as a paged allocator hands them
    out after some churn; under a shared layout a group's prefix pages are the same for all its
    requests."""
    batch, max_tokens = len(lens), int(lens.max())
    pages_per_req = -(-max_tokens // page)
    prefix_pages = PREFIX // page if kind != "unique" else 0
    need = batch * pages_per_req + GROUPS * prefix_pages
    pool = torch.randperm(2 * need, generator=gen)[:need]
    group_prefix = pool[: GROUPS * prefix_pages].view(GROUPS, prefix_pages)
    pages = pool[GROUPS * prefix_pages:].view(batch, pages_per_req).clone()
    if kind == "shared-sorted":
        order = groups.argsort(stable=True)
        lens, groups = lens[order], groups[order]
    if prefix_pages:
        pages[:, :prefix_pages] = group_prefix[groups]
    tokens = (pages[:, :, None] * page + torch.arange(page)[None, None, :]).reshape(batch, -1)[:, :max_tokens]
    distinct = int(torch.unique(torch.cat([tokens[b, : lens[b]] for b in range(batch)])).numel())
    return tokens.to(torch.int32), lens.to(torch.int32), distinct, 2 * need * page


def draw(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Context lengths of a running batch in the steady state (prompt + 0..800 output tokens so far)
    and each request's prefix group."""
    return PROMPT + torch.randint(0, OUTPUT, (batch,), generator=gen), torch.randint(0, GROUPS, (batch,), generator=gen)


def check(device, dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    for page, batch, splits in ((64, 3, 2), (1, 2, 3)):
        idx, lens, _, pool_tokens = layout(*draw(batch, gen), page, "shared", gen)
        kv = torch.randn(pool_tokens, NOPE + ROPE, generator=gen).to(dtype)
        q = torch.randn(batch, HEADS, NOPE + ROPE, generator=gen).to(dtype)
        got = combine(*decode(q.to(device), kv.to(device), idx.to(device), lens.to(device), splits)).cpu()
        want = reference(q, kv, idx, lens)
        err = float((got - want).norm() / want.norm())
        print(f"check page {page} batch {batch} splits {splits}: relative error {err:.1e}")
        if not err < 2e-2:
            sys.exit("the decode kernel does not match the reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the kernel against PyTorch and stop")
    parser.add_argument("--batches", default="32,64,128")
    parser.add_argument("--pages", default="64,1", help="page sizes in tokens (64: vLLM's FlashMLA, 1: SGLang)")
    parser.add_argument("--configs", default="4x2x2",
                        help="kernel variants, WARPSxSTAGESxWAVES (programs per SM), comma-separated")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    try:
        batches = [int(b) for b in args.batches.split(",")]
        pages = [int(p) for p in args.pages.split(",")]
        configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
        if any(len(c) != 3 or min(c) < 1 for c in configs) or min(batches + pages) < 1:
            raise ValueError
    except ValueError:
        sys.exit("--batches and --pages take positive integers, --configs WARPSxSTAGESxWAVES triples"
                 " (e.g. --batches 32,128 --pages 64 --configs 4x2x2,8x3x1)")
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if not interpret and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run it on a GPU machine, or with --check and TRITON_INTERPRET=1 on a CPU")
    device = "cpu" if interpret else "cuda"
    check(device, torch.float32 if interpret else torch.bfloat16)
    if args.check:
        return
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name(0)}, {sms} SMs, torch {torch.__version__}, triton {triton.__version__}")
    gen = torch.Generator().manual_seed(0)
    rows = []
    row_bytes = (NOPE + ROPE) * 2
    print(f"{'cfg':>6} {'page':>4} {'batch':>5} {'splits':>6} {'layout':>13} {'us':>8} {'named MB':>9} {'held MB':>8}"
          f" {'named GB/s':>10} {'held GB/s':>9} {'x unique':>8} {'re-read':>7}")
    for (warps, stages, waves), page, batch in itertools.product(configs, pages, batches):
        cfg = f"{warps}x{stages}x{waves}"
        splits = max(1, round(waves * sms / batch))
        base = None
        lens_groups = draw(batch, gen)
        for kind in ("unique", "shared", "shared-sorted"):
            idx, lens, distinct, pool_tokens = layout(*lens_groups, page, kind, gen)
            idx, lens = idx.to(device), lens.to(device)
            kv = torch.randn(pool_tokens, NOPE + ROPE, device=device, dtype=torch.bfloat16)
            q = torch.randn(batch, HEADS, NOPE + ROPE, device=device, dtype=torch.bfloat16)
            call = functools.partial(decode, q, kv, idx, lens, splits, warps, stages)
            us = 1000 * triton.testing.do_bench(call, warmup=50, rep=300, return_mode="median")
            named = int(lens.sum()) * row_bytes
            held = distinct * row_bytes
            base = us if kind == "unique" else base
            # the cost of a byte another request of the step has read, as a share of a first read:
            # time / unique time = (held + reread * (named - held)) / named
            reread = (us / base * named - held) / (named - held) if named > held else float("nan")
            rows.append({"warps": warps, "stages": stages, "waves": waves, "page": page, "batch": batch, "splits": splits,
                         "layout": kind, "us": us, "named_bytes": named, "held_bytes": held,
                         "ratio_to_unique": us / base, "reread_cost": reread})
            print(f"{cfg:>6} {page:>4} {batch:>5} {splits:>6} {kind:>13} {us:8.1f} {named / 1e6:9.1f}"
                  f" {held / 1e6:8.1f} {named / us / 1e3:10.0f} {held / us / 1e3:9.0f} {us / base:8.3f}"
                  f" {reread:7.2f}", flush=True)
            del kv, call
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
