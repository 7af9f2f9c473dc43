#!/usr/bin/python3
"""PyTorch goldens for the MoE transformer LM (moe/model/transformer.h).

An independent float64 implementation of the model, written from its formulas (not from our C++):

  x0 = embed[tokens]
  per layer l:  n1 = rmsnorm(x) * attn_norm
                q, k, v = n1 Wq^T, n1 Wk^T, n1 Wv^T   (heads [H, Dh], kv heads [Hkv, Dh])
                q, k = RoPE(q), RoPE(k)   rotate_half pairing (i, i + Dh/2), theta^(-2i/Dh)
                att = causal softmax(q k^T / sqrt(Dh)) v   (query head h reads kv head h // (H/Hkv))
                x2 = x + att Wo^T;  n2 = rmsnorm(x2) * ffn_norm
                x' = x2 + MoE(n2)  (the layer of gen_moe_goldens.moe_forward) or a dense SwiGLU
  logits = rmsnorm(x_L) * final_norm @ head^T (head = lm_head, or embed when tied)
  loss = mean CE over targets >= 0 + sum over MoE layers of (aux + z)

It writes tests/data/model_<case>.safetensors with the config, the weights ("w.<name>", our
canonical names), tokens, targets, logits, loss, every gradient ("g.<name>"), and the loss after
each of 5 AdamW steps on the same batch (torch.optim.AdamW; no decay on norms and the embedding).
The C++ model runs in f32, so seeds are resampled until every routing decision of the forward
passes has a margin of at least MIN_MARGIN.

    /usr/bin/python3 scripts/gen_model_goldens.py [--out tests/data]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_moe_goldens as moe_ref  # noqa: E402  (the independent MoE layer reference)

MIN_MARGIN = 2e-3
ADAM = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
STEPS = 5

CASES = {
    # Every layer MoE (Mixtral-like), softmax top-2, aux and z losses, untied head.
    "mixtral_lm": dict(vocab_size=13, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, max_seq=8,
                       rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False, dense_d_ff=0,
                       moe_every=1, batch=2, seq=6,
                       moe=dict(d_ff=8, n_experts=4, top_k=2, renormalize=True,
                                aux_loss_coef=0.01, z_loss_coef=0.001)),
    # Dense layer 0, MoE layer 1 (sigmoid, shared expert, route scale), tied embeddings.
    "interleaved_lm": dict(vocab_size=11, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, max_seq=8,
                           rope_theta=500.0, norm_eps=1e-6, tie_embeddings=True, dense_d_ff=12,
                           moe_every=2, batch=2, seq=5,
                           moe=dict(d_ff=8, n_experts=4, top_k=2, score="sigmoid", renormalize=True,
                                    route_scale=2.0, shared_d_ff=6, aux_loss_coef=0.01)),
}


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    # x [B, S, H, Dh]; rotate_half pairing
    dh = x.shape[-1]
    inv = theta ** (-torch.arange(0, dh // 2, dtype=torch.float64) * 2.0 / dh)
    ang = pos[:, None].double() * inv[None, :]          # [S, Dh/2]
    cos = torch.cat([ang.cos(), ang.cos()], -1)[None, :, None, :]
    sin = torch.cat([ang.sin(), ang.sin()], -1)[None, :, None, :]
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    rot = torch.cat([-x2, x1], -1)
    return x * cos + rot * sin


def forward(cfg, W, tokens, targets, margins):
    B, S = tokens.shape
    D, H, Hkv = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"]
    Dh = D // H
    mcfg = dict(moe_ref.CONFIG_DEFAULTS, d_model=D, **cfg["moe"])
    x = W["embed"][tokens.reshape(-1)]                  # [T, D]
    pos = torch.arange(S)
    aux_total = torch.zeros((), dtype=torch.float64)
    for l in range(cfg["n_layers"]):
        p = f"layers.{l}."
        n1 = rmsnorm(x, W[p + "attn_norm"], cfg["norm_eps"])
        q = (n1 @ W[p + "wq"].T).reshape(B, S, H, Dh)
        k = (n1 @ W[p + "wk"].T).reshape(B, S, Hkv, Dh)
        v = (n1 @ W[p + "wv"].T).reshape(B, S, Hkv, Dh)
        q, k = rope(q, pos, cfg["rope_theta"]), rope(k, pos, cfg["rope_theta"])
        rep = H // Hkv
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(Dh)
        mask = torch.triu(torch.ones(S, S, dtype=torch.bool), 1)
        s = s.masked_fill(mask, float("-inf"))
        att = torch.einsum("bhts,bshd->bthd", torch.softmax(s, -1), v).reshape(B * S, H * Dh)
        x2 = x + att @ W[p + "wo"].T
        n2 = rmsnorm(x2, W[p + "ffn_norm"], cfg["norm_eps"])
        if cfg["moe_every"] > 0 and (l + 1) % cfg["moe_every"] == 0:
            Wl = {kk[len(p) + 4:]: vv for kk, vv in W.items() if kk.startswith(p + "moe.")}
            y, aux, z, _, _, mg = moe_ref.moe_forward(mcfg, Wl, n2)
            margins.extend(mg)
            aux_total = aux_total + aux + z
        else:
            y = moe_ref.swiglu(n2, W[p + "w13"], W[p + "w2"], cfg["dense_d_ff"])
        x = x2 + y
    xn = rmsnorm(x, W["final_norm"], cfg["norm_eps"])
    head = W["embed"] if cfg["tie_embeddings"] else W["lm_head"]
    logits = xn @ head.T
    ce = torch.nn.functional.cross_entropy(logits, targets.reshape(-1), ignore_index=-1)
    return logits, ce + aux_total


def make_weights(cfg, gen):
    D, H, Hkv, V = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["vocab_size"]
    Dh = D // H
    m = cfg["moe"]
    W = {}

    def normal(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    W["embed"] = normal(V, D, std=0.5)
    for l in range(cfg["n_layers"]):
        p = f"layers.{l}."
        W[p + "attn_norm"] = 1.0 + normal(D, std=0.1)
        W[p + "wq"] = normal(H * Dh, D, std=0.3)
        W[p + "wk"] = normal(Hkv * Dh, D, std=0.3)
        W[p + "wv"] = normal(Hkv * Dh, D, std=0.3)
        W[p + "wo"] = normal(D, H * Dh, std=0.3)
        W[p + "ffn_norm"] = 1.0 + normal(D, std=0.1)
        if cfg["moe_every"] > 0 and (l + 1) % cfg["moe_every"] == 0:
            E, F = m["n_experts"], m["d_ff"]
            W[p + "moe.router"] = normal(E, D, std=0.5)
            W[p + "moe.w13"] = normal(E, 2 * F, D, std=0.3)
            W[p + "moe.w2"] = normal(E, D, F, std=0.3)
            if m.get("shared_d_ff", 0) > 0:
                fs = m["shared_d_ff"]
                W[p + "moe.shared_w13"] = normal(2 * fs, D, std=0.3)
                W[p + "moe.shared_w2"] = normal(D, fs, std=0.3)
        else:
            fd = cfg["dense_d_ff"]
            W[p + "w13"] = normal(2 * fd, D, std=0.3)
            W[p + "w2"] = normal(D, fd, std=0.3)
    W["final_norm"] = 1.0 + normal(D, std=0.1)
    if not cfg["tie_embeddings"]:
        W["lm_head"] = normal(V, D, std=0.3)
    return W


def build(name, cfg):
    B, S, V = cfg["batch"], cfg["seq"], cfg["vocab_size"]
    for seed in range(2000):
        gen = torch.Generator().manual_seed(7000 + 100 * sorted(CASES).index(name) + seed)
        W = make_weights(cfg, gen)
        tokens = torch.randint(0, V, (B, S), generator=gen)
        targets = torch.randint(0, V, (B, S), generator=gen)
        targets[0, 2] = -1
        targets[1, S - 1] = -1
        params = {k: v.clone().requires_grad_(True) for k, v in W.items()}
        margins = []
        logits, loss = forward(cfg, params, tokens, targets, margins)
        loss.backward()
        ok = min(margins, default=1.0) >= MIN_MARGIN
        # The AdamW steps must keep every routing decision robust too.
        decay = [v for k, v in params.items() if not (k.endswith("norm") or k == "embed")]
        no_decay = [v for k, v in params.items() if k.endswith("norm") or k == "embed"]
        opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], **ADAM)
        losses = []
        for _ in range(STEPS):
            opt.zero_grad()
            mg = []
            _, l2 = forward(cfg, params, tokens, targets, mg)
            ok = ok and min(mg, default=1.0) >= MIN_MARGIN
            l2.backward()
            opt.step()
            losses.append(l2.item())
        with torch.no_grad():
            mg = []
            _, lf = forward(cfg, params, tokens, targets, mg)
            ok = ok and min(mg, default=1.0) >= MIN_MARGIN
        losses.append(lf.item())
        if not ok:
            continue
        # Fresh gradients of the initial point (the AdamW loop reused params).
        params0 = {k: v.clone().requires_grad_(True) for k, v in W.items()}
        logits, loss = forward(cfg, params0, tokens, targets, [])
        loss.backward()
        out = {"tokens": tokens.numpy().astype(np.int64), "targets": targets.numpy().astype(np.int64),
               "logits": logits.detach().numpy().astype(np.float32).reshape(B * S, V),
               "loss": np.array([loss.item()], dtype=np.float32),
               "loss_after_steps": np.array(losses, dtype=np.float32)}
        for k, v in W.items():
            out["w." + k] = v.numpy().astype(np.float32)
            out["g." + k] = params0[k].grad.numpy().astype(np.float32)
        print(f"{name}: seed {seed}, loss {loss.item():.6f}, after {STEPS} steps {losses[-1]:.6f}, "
              f"min margin {min(margins):.4f}")
        return out
    raise SystemExit(f"{name}: no seed with routing margins >= {MIN_MARGIN}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    for name, cfg in CASES.items():
        tensors = build(name, cfg)
        meta = {"config": json.dumps(cfg, sort_keys=True), "adamw": json.dumps(ADAM), "steps": str(STEPS)}
        path = os.path.join(args.out, f"model_{name}.safetensors")
        moe_ref.write_safetensors(path, tensors, meta)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
