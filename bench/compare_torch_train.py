#!/usr/bin/env python3
"""Training throughput: `moe train` vs the same model written the usual way in PyTorch.

Model (moe's `tiny` preset): byte vocabulary 258, D=128, 4 layers, 4 heads / 2 KV heads (RoPE,
rotate_half), RMSNorm, every FFN a Mixtral-style MoE block (E=8, K=2, F=128, softmax top-2,
renormalised, Switch aux loss 0.01 + z-loss 0.001), untied head; batch 16 x 128 tokens; AdamW with
clipping. The PyTorch version is written as people write it: nn.Linear layers, the Hugging Face
Mixtral MoE block (a Python loop over experts with index_select / index_add_), attention as
matmul + causal mask + softmax, torch.optim.AdamW, clip_grad_norm_. Both use the same thread count.
Random token batches (throughput does not depend on the data).

    /usr/bin/python3 bench/compare_torch_train.py [--moe build/release/bin/moe] [--threads 2]
        [--steps 40] [--bf16]

--bf16 also times PyTorch under torch.autocast("cpu", dtype=torch.bfloat16) and `moe train --bf16`
(bf16 matrix products with f32 accumulation; needs AVX512-BF16).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time

import torch
import torch.nn.functional as F

V, D, L, H, HKV, E, K, FF, B, S = 258, 128, 4, 4, 2, 8, 2, 128, 16, 128


class Expert(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Linear(D, FF, bias=False)
        self.w3 = torch.nn.Linear(D, FF, bias=False)
        self.w2 = torch.nn.Linear(FF, D, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoeBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = torch.nn.Linear(D, E, bias=False)
        self.experts = torch.nn.ModuleList(Expert() for _ in range(E))

    def forward(self, x):
        logits = self.gate(x)
        probs = F.softmax(logits, dim=-1, dtype=torch.float)
        w, chosen = torch.topk(probs, K, dim=-1)
        w = (w / w.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        mask = F.one_hot(chosen, E).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            slot, tok = torch.where(mask[e])
            if tok.numel() == 0:
                continue
            out.index_add_(0, tok, (expert(x.index_select(0, tok)) * w[tok, slot, None]).to(x.dtype))
        f = torch.zeros(E).index_add_(0, chosen.reshape(-1), torch.ones(chosen.numel())) / chosen.numel()
        aux = 0.01 * E * (f * probs.mean(0)).sum() + 0.001 * (torch.logsumexp(logits.float(), -1) ** 2).mean()
        return out, aux


class RMSNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(D))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.w


def rope(x, cos, sin):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        dh = D // H
        self.n1, self.n2 = RMSNorm(), RMSNorm()
        self.q = torch.nn.Linear(D, H * dh, bias=False)
        self.k = torch.nn.Linear(D, HKV * dh, bias=False)
        self.v = torch.nn.Linear(D, HKV * dh, bias=False)
        self.o = torch.nn.Linear(H * dh, D, bias=False)
        self.moe = MoeBlock()

    def forward(self, x, cos, sin, mask):
        dh = D // H
        h = self.n1(x)
        q = self.q(h).view(B, S, H, dh).transpose(1, 2)
        k = self.k(h).view(B, S, HKV, dh).transpose(1, 2)
        v = self.v(h).view(B, S, HKV, dh).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = k.repeat_interleave(H // HKV, 1)
        v = v.repeat_interleave(H // HKV, 1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, S, D)
        x = x + self.o(y)
        f, aux = self.moe(self.n2(x).reshape(B * S, D))
        return x + f.view(B, S, D), aux


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, D)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(L))
        self.norm = RMSNorm()
        self.head = torch.nn.Linear(D, V, bias=False)
        dh = D // H
        inv = 10000.0 ** (-torch.arange(0, dh // 2).float() * 2 / dh)
        ang = torch.arange(S).float()[:, None] * inv[None]
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], -1))
        self.register_buffer("sin", torch.cat([ang.sin(), ang.sin()], -1))
        self.register_buffer("mask", torch.triu(torch.ones(S, S, dtype=torch.bool), 1))

    def forward(self, tokens, targets):
        x = self.embed(tokens)
        aux_total = 0.0
        for layer in self.layers:
            x, aux = layer(x, self.cos, self.sin, self.mask)
            aux_total = aux_total + aux
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1)) + aux_total


def torch_tokens_per_s(steps, bf16):
    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for step in range(steps):
        tokens = torch.randint(0, V, (B, S))
        targets = torch.randint(0, V, (B, S))
        t0 = time.perf_counter()
        opt.zero_grad()
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(tokens, targets)
        else:
            loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return B * S / statistics.median(times[steps // 4:])


def moe_tokens_per_s(moe, steps, threads, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        subprocess.run([moe, "train", "--out", out, "--steps", str(steps), "--eval-every", "0", "--eval-rows", "1",
                        "--ckpt-every", "0", "--threads", str(threads), "--corpus-samples", "2000", "--quiet"] + extra,
                       check=True, stdout=subprocess.DEVNULL)
        latest = open(os.path.join(out, "LATEST")).read().strip()
        hist = json.load(open(os.path.join(out, latest, "trainer_state.json")))["history"]
    rates = [h["tokens_per_s"] for h in hist[len(hist) // 4:]]
    return statistics.median(rates)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moe", default="build/release/bin/moe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [("PyTorch fp32 (HF-style MoE block)", torch_tokens_per_s(args.steps, False))]
    if args.bf16:
        rows.append(("PyTorch bf16 autocast", torch_tokens_per_s(args.steps, True)))
    rows.append(("moe train (f32)", moe_tokens_per_s(args.moe, args.steps, args.threads, [])))
    if args.bf16:
        rows.append(("moe train --bf16", moe_tokens_per_s(args.moe, args.steps, args.threads, ["--bf16"])))
    print(f"training tokens/s, tiny MoE LM (D={D} L={L} E={E} K={K} F={FF}), batch {B}x{S}, "
          f"{args.threads} threads, torch {torch.__version__}")
    base = rows[0][1]
    for name, r in rows:
        print(f"  {name:36s} {r:9.0f} tokens/s  ({r / base:.2f}x PyTorch fp32)")


if __name__ == "__main__":
    main()
