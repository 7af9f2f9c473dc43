#!/usr/bin/env python3
"""Side-by-side: moe's MoE layer vs the usual PyTorch way of writing it.

The PyTorch baseline is the Hugging Face Mixtral sparse block as people write it: a router Linear,
softmax in float, top-k, renormalise, then a Python loop over experts that gathers each expert's
tokens with index selection and adds the gated outputs back with index_add_. Same shape (Mixtral-like
D=512 F=1408 E=8 K=2), fp32, same thread count, forward and forward+backward, measured in this run.

    /usr/bin/python3 bench/compare_torch.py [--moe build/release/bin/moe] [--threads 2] [--tokens 4096]

Needs Debian's python3-torch (scripts/setup.sh --with-torch). Prints a table and the speed ratio.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F


class Expert(torch.nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.w1 = torch.nn.Linear(d, f, bias=False)  # gate
        self.w3 = torch.nn.Linear(d, f, bias=False)  # up
        self.w2 = torch.nn.Linear(f, d, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoeBlock(torch.nn.Module):
    """Token-choice top-k MoE written the Hugging Face way (loop over experts)."""

    def __init__(self, d, f, e, k):
        super().__init__()
        self.k = k
        self.gate = torch.nn.Linear(d, e, bias=False)
        self.experts = torch.nn.ModuleList(Expert(d, f) for _ in range(e))

    def forward(self, x):
        logits = self.gate(x)
        probs = F.softmax(logits, dim=-1, dtype=torch.float)
        weights, chosen = torch.topk(probs, self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        # mask[e, slot, token] = 1 where token chose e in that slot
        mask = F.one_hot(chosen, num_classes=len(self.experts)).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            slot, tok = torch.where(mask[e])
            if tok.numel() == 0:
                continue
            y = expert(x.index_select(0, tok)) * weights[tok, slot, None]
            out.index_add_(0, tok, y.to(x.dtype))
        return out


def median_time(fn, min_time):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moe", default="build/release/bin/moe", help="path of the moe binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--min-time", type=float, default=3.0)
    args = ap.parse_args()
    if not os.path.exists(args.moe):
        sys.exit(f"compare_torch: {args.moe} not found; build first (scripts/setup.sh)")

    d, f, e, k, t = 512, 1408, 8, 2, args.tokens
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    block = SparseMoeBlock(d, f, e, k)
    x = torch.randn(t, d)
    xg = x.clone().requires_grad_(True)
    dy = torch.randn(t, d)

    def fwd():
        with torch.no_grad():
            block(x)

    def fwd_bwd():
        block.zero_grad(set_to_none=False)
        xg.grad = None
        block(xg).backward(dy)

    torch_fwd = median_time(fwd, args.min_time)
    torch_fb = median_time(fwd_bwd, args.min_time)

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "moe.json")
        subprocess.run([args.moe, "bench", "moe-layer", "--preset", "mixtral", "--tokens", str(t),
                        "--threads", str(args.threads), "--min-time", str(args.min_time), "--no-dense",
                        "--json", out], check=True, stdout=subprocess.DEVNULL)
        with open(out) as fh:
            res = json.load(fh)
    row = res["results"][0]
    moe_fwd, moe_fb = row["fwd_ms"] / 1e3, row["fwdbwd_ms"] / 1e3
    # Active FLOPs of the forward: router + K experts per token (3 matmuls of D x F each).
    flops = 2.0 * t * d * e + 2.0 * t * k * 3 * d * f

    print(f"Mixtral-like MoE layer, T={t} D={d} F={f} E={e} K={k}, fp32, {args.threads} threads, "
          f"torch {torch.__version__}; same-run sgemm {res['sgemm_gflops']:.1f} GFLOP/s")
    print(f"{'':28s} {'fwd ms':>9s} {'tok/s':>9s} {'GFLOP/s':>8s} | {'f+b ms':>9s} {'tok/s':>9s} {'GFLOP/s':>8s}")
    for name, a, b in (("PyTorch (HF-style loop)", torch_fwd, torch_fb), ("moe", moe_fwd, moe_fb)):
        print(f"{name:28s} {a*1e3:9.1f} {t/a:9.0f} {flops/a*1e-9:8.1f} | {b*1e3:9.1f} {t/b:9.0f} {3*flops/b*1e-9:8.1f}")
    print(f"moe / PyTorch tokens/s: forward {torch_fwd/moe_fwd:.2f}x, forward+backward {torch_fb/moe_fb:.2f}x")


if __name__ == "__main__":
    main()
