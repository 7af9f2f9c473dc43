#!/usr/bin/python3
"""PyTorch goldens for the MoE layer (moe/mixture/moe_layer.h).

An independent float64 implementation of the layer, written from the routing contract below, that
writes tests/data/moe_<case>.safetensors with the config, weights, inputs, outputs, losses, routing
counts and the gradients of L = sum(y * dy) + aux_loss + z_loss. tests/mixture/golden_test.cc runs
the C++ layer in f32 against them. Needs only torch + numpy (no `safetensors` package):

    /usr/bin/python3 scripts/gen_moe_goldens.py [--out tests/data] [--case NAME ...]

Contract (T tokens, E experts, k = top_k, G groups):
  logits = x @ router.T; scores = softmax(logits) or sigmoid(logits)
  sel = scores (+ bias when selection_bias), never differentiated
  groups: score each of G consecutive groups by the sum of its top-2 sel (top2_sum) or its max;
    keep the topk_groups best (ties -> lower index); other experts get sel = -inf
  token choice: top-k of sel (ties -> lower index), ordered by descending sel;
    w_j = scores[t, e_j]; renormalize: w_j /= sum_j w_j (all k); gate_j = w_j * route_scale;
    capacity C = ceil(cf*T*k/E) when cf > 0, filled rank-major (j outer, t inner); over-capacity
    assignments are dropped (still counted in the renormalisation and in f_i)
  expert choice: C = round-half-away(cf*T*k/E) in [1, T]; expert e takes its top-C tokens by
    sel[:, e] (ties -> lower token); gate = scores[t, e] * route_scale
  expert: (silu(x W1^T) * (x W3^T)) W2^T with [W1; W3] = w13[e], W2 = w2[e]
  shared expert (shared_d_ff > 0): same with shared_w13 / shared_w2, times sigmoid(x . shared_gate)
  y[t] = sum_kept gate * E_e(x[t]) + shared(x[t])
  aux = aux_loss_coef * E * sum_i f_i P_i, f_i = picks of i before capacity / (T*k) (expert
    choice: C / (T*k)), P_i = mean_t p[t, i], p = scores (softmax) or scores / row sum (sigmoid)
  z = z_loss_coef * mean_t logsumexp(logits[t])^2

The C++ layer computes in f32, so every routing decision must be robust to rounding: seeds are
resampled until each decision has a margin of at least MIN_MARGIN in selection score.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

MIN_MARGIN = 1e-3
MAX_SEEDS = 5000

CONFIG_DEFAULTS = dict(
    d_model=0, d_ff=0, n_experts=0, top_k=1, router="token_choice", score="softmax",
    renormalize=True, route_scale=1.0, selection_bias=False, n_groups=1, topk_groups=1,
    group_score="top2_sum", capacity_factor=0.0, shared_d_ff=0, shared_gate=False,
    aux_loss_coef=0.0, z_loss_coef=0.0)

# name -> (tokens T, scale of dy, config overrides). Where the config has aux/z losses, dy is
# scaled down so that their share of the gradients is far above the f32 test tolerance (with
# dy ~ N(0, 1) they would be invisible next to sum(y * dy)); build_case asserts this.
CASES = {
    # Mixtral: softmax top-2 of 8, renormalised, dropless.
    "mixtral": (32, 1.0, dict(d_model=16, d_ff=16, n_experts=8, top_k=2, renormalize=True)),
    # Switch: top-1 of 4 with capacity 1.0 (tokens are dropped), load-balancing and z losses.
    "switch": (32, 0.003, dict(d_model=16, d_ff=16, n_experts=4, top_k=1, renormalize=False,
                               capacity_factor=1.0, aux_loss_coef=0.01, z_loss_coef=0.001)),
    # DeepSeek-V3: sigmoid, selection bias, 4 groups (best 2 by top-2 sum), top-4 of 16,
    # renormalised, routed scale 2.5, ungated shared expert; plus the (sigmoid) balance loss.
    "deepseek": (32, 0.001, dict(d_model=16, d_ff=8, n_experts=16, top_k=4, score="sigmoid",
                                 selection_bias=True, n_groups=4, topk_groups=2, renormalize=True,
                                 route_scale=2.5, shared_d_ff=16, aux_loss_coef=0.01)),
    # Qwen2-MoE: softmax top-4 of 12, not renormalised, gated shared expert; plus z loss.
    "qwen2": (24, 0.01, dict(d_model=32, d_ff=8, n_experts=12, top_k=4, renormalize=False,
                             shared_d_ff=24, shared_gate=True, z_loss_coef=0.001)),
    # Expert choice: each of 8 experts takes C = 1.5*T*2/8 tokens, plus the balance loss (its
    # value only: with softmax and equal f_i = C/(T*k) it is constant, so its gradient is 0).
    "expert_choice": (32, 1.0, dict(d_model=16, d_ff=16, n_experts=8, top_k=2,
                                    router="expert_choice", renormalize=False,
                                    capacity_factor=1.5, aux_loss_coef=0.01)),
    # Groups scored by their max (DeepSeek-V2), top-3 with capacity (rank-major dropping with
    # k > 1; dropped choices still count in the renormalisation), routed scale 1.5, z loss.
    "grouped_capacity": (32, 0.01, dict(d_model=16, d_ff=8, n_experts=8, top_k=3, n_groups=4,
                                        topk_groups=2, group_score="max", renormalize=True,
                                        route_scale=1.5, capacity_factor=1.0, z_loss_coef=0.001)),
}
# A loss term's gradient must make up at least this NMSE share of d_router (the test's NMSE bound
# is 1e-7), so that getting it wrong fails the test.
MIN_LOSS_SHARE = 1e-5



# ------------------------------------------------------------------------------------------------
# safetensors writer (sorted names, data packed in name order, header padded to 8 bytes)

def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata} if metadata else {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype == np.float32:
            dtype, raw = "F32", arr.astype("<f4").tobytes()
        elif arr.dtype == np.int64:
            dtype, raw = "I64", arr.astype("<i8").tobytes()
        else:
            raise ValueError(f"{name}: unsupported dtype {arr.dtype}")
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# Routing (plain Python over float64 values; selection is never differentiated)

def ranked(values, candidates):
    """Candidates sorted by descending value, ties to the lower index."""
    return sorted(candidates, key=lambda i: (-values[i], i))


def route_token_choice(cfg, sel):
    """Returns (choice [T][k], margins list). sel: [T][E] python floats."""
    E, k, G = cfg["n_experts"], cfg["top_k"], cfg["n_groups"]
    choice, margins = [], []
    for row in sel:
        eligible = list(range(E))
        if G > 1:
            gsz = E // G
            gscore = []
            for g in range(G):
                vals = sorted(row[g * gsz:(g + 1) * gsz], reverse=True)
                gscore.append(vals[0] if cfg["group_score"] == "max" or gsz == 1
                              else vals[0] + vals[1])
            order = ranked(gscore, range(G))
            keep = set(order[:cfg["topk_groups"]])
            margins.append(gscore[order[cfg["topk_groups"] - 1]] - gscore[order[cfg["topk_groups"]]])
            eligible = [e for e in range(E) if e // gsz in keep]
        order = ranked(row, eligible)
        if len(order) > k:
            margins.append(row[order[k - 1]] - row[order[k]])
        if cfg["capacity_factor"] > 0:
            # With capacity the rank order decides priority, so it must be robust too.
            margins += [row[order[j]] - row[order[j + 1]] for j in range(k - 1)]
        choice.append(order[:k])
    return choice, margins


def round_half_away(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


# ------------------------------------------------------------------------------------------------
# The layer

def swiglu(x, w13, w2, f):
    h = x @ w13.T
    return (torch.nn.functional.silu(h[:, :f]) * h[:, f:]) @ w2.T


def moe_forward(cfg, W, x):
    """Returns (y, aux, z, tokens_per_expert, dropped, margins)."""
    T = x.shape[0]
    E, k, F = cfg["n_experts"], cfg["top_k"], cfg["d_ff"]
    logits = x @ W["router"].T
    scores = torch.softmax(logits, -1) if cfg["score"] == "softmax" else torch.sigmoid(logits)
    sel_t = scores.detach().clone()
    if cfg["selection_bias"]:
        sel_t += W["bias"]
    sel = sel_t.tolist()

    assignments = []  # (token, expert, gate tensor)
    picks = [0] * E
    dropped = 0
    if cfg["router"] == "token_choice":
        choice, margins = route_token_choice(cfg, sel)
        cap = math.ceil(cfg["capacity_factor"] * T * k / E) if cfg["capacity_factor"] > 0 else 0
        gates = []
        for t in range(T):
            w = scores[t, choice[t]]
            if cfg["renormalize"]:
                w = w / w.sum()
            gates.append(w * cfg["route_scale"])
        kept = [0] * E
        for j in range(k):
            for t in range(T):
                e = choice[t][j]
                picks[e] += 1
                if cap > 0 and kept[e] >= cap:
                    dropped += 1
                    continue
                kept[e] += 1
                assignments.append((t, e, gates[t][j]))
        f_i = torch.tensor([p / (T * k) for p in picks], dtype=torch.float64)
    else:
        cap = min(max(round_half_away(cfg["capacity_factor"] * T * k / E), 1), T)
        margins = []
        col = [[sel[t][e] for t in range(T)] for e in range(E)]
        for e in range(E):
            order = ranked(col[e], range(T))
            if cap < T:
                margins.append(col[e][order[cap - 1]] - col[e][order[cap]])
            for t in sorted(order[:cap]):
                assignments.append((t, e, scores[t, e] * cfg["route_scale"]))
        f_i = torch.full((E,), cap / (T * k), dtype=torch.float64)

    y = torch.zeros_like(x)
    tokens_per_expert = [0] * E
    for e in range(E):
        mine = [(t, g) for (t, ee, g) in assignments if ee == e]
        tokens_per_expert[e] = len(mine)
        if not mine:
            continue
        idx = torch.tensor([t for t, _ in mine])
        g = torch.stack([g for _, g in mine])
        out = swiglu(x[idx], W["w13"][e], W["w2"][e], F) * g[:, None]
        y = y.index_add(0, idx, out)
    if cfg["shared_d_ff"] > 0:
        sh = swiglu(x, W["shared_w13"], W["shared_w2"], cfg["shared_d_ff"])
        if cfg["shared_gate"]:
            sh = sh * torch.sigmoid(x @ W["shared_gate"][0])[:, None]
        y = y + sh

    p = scores if cfg["score"] == "softmax" else scores / scores.sum(-1, keepdim=True)
    aux = cfg["aux_loss_coef"] * E * (f_i * p.mean(0)).sum()
    z = cfg["z_loss_coef"] * (torch.logsumexp(logits, -1) ** 2).mean()
    return y, aux, z, tokens_per_expert, dropped, margins


def make_weights(cfg, gen):
    D, F, E = cfg["d_model"], cfg["d_ff"], cfg["n_experts"]

    def normal(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    W = {
        "router": normal(E, D, std=1.0 / math.sqrt(D)),
        "w13": normal(E, 2 * F, D, std=1.0 / math.sqrt(D)),
        "w2": normal(E, D, F, std=1.0 / math.sqrt(F)),
    }
    if cfg["selection_bias"]:
        W["bias"] = normal(E, std=0.05)
    if cfg["shared_d_ff"] > 0:
        fs = cfg["shared_d_ff"]
        W["shared_w13"] = normal(2 * fs, D, std=1.0 / math.sqrt(D))
        W["shared_w2"] = normal(D, fs, std=1.0 / math.sqrt(fs))
    if cfg["shared_gate"]:
        W["shared_gate"] = normal(1, D, std=1.0 / math.sqrt(D))
    return W


def build_case(name, tokens, dy_scale, overrides):
    cfg = dict(CONFIG_DEFAULTS, **overrides)
    for seed in range(MAX_SEEDS):
        gen = torch.Generator().manual_seed(1000 * (sorted(CASES).index(name) + 1) + seed)
        W = make_weights(cfg, gen)
        x = torch.randn(tokens, cfg["d_model"], generator=gen, dtype=torch.float64)
        dy = torch.randn(tokens, cfg["d_model"], generator=gen, dtype=torch.float64) * dy_scale
        with torch.no_grad():
            _, _, _, _, dropped, margins = moe_forward(cfg, W, x)
        if margins and min(margins) < MIN_MARGIN:
            continue
        if name in ("switch", "grouped_capacity") and dropped == 0:
            continue
        break
    else:
        sys.exit(f"{name}: no seed in {MAX_SEEDS} gives routing margins >= {MIN_MARGIN}")

    params = {k: v.clone().requires_grad_(k != "bias") for k, v in W.items()}
    xg = x.clone().requires_grad_(True)
    y, aux, z, tpe, dropped, margins = moe_forward(cfg, params, xg)
    # Share of each loss term in d_router: it must be visible to the test.
    shares = {}
    for term, value, coef in (("aux", aux, cfg["aux_loss_coef"]), ("z", z, cfg["z_loss_coef"])):
        if coef > 0:
            (g_term,) = torch.autograd.grad(value, params["router"], retain_graph=True)
            shares[term] = g_term
    loss = (y * dy).sum() + aux + z
    loss.backward()
    d_router = params["router"].grad
    for term in list(shares):
        shares[term] = float((shares[term] ** 2).sum() / (d_router ** 2).sum())
        structurally_zero = term == "aux" and cfg["router"] == "expert_choice" and cfg["score"] == "softmax"
        assert structurally_zero or shares[term] >= MIN_LOSS_SHARE, \
            f"{name}: {term} loss gradient share {shares[term]:.2e} < {MIN_LOSS_SHARE} (scale dy down)"
    if name == "switch":
        assert dropped > 0, "switch must drop tokens"

    f32 = lambda t: t.detach().numpy().astype(np.float32)
    out = {"x": f32(x), "dy": f32(dy), "y": f32(y),
           "aux_loss": np.array([float(aux)], np.float32),
           "z_loss": np.array([float(z)], np.float32),
           "tokens_per_expert": np.array(tpe, np.int64),
           "dropped": np.array([dropped], np.int64),
           "d_x": f32(xg.grad)}
    for k, v in params.items():
        out[k] = f32(v)
        if k != "bias":
            out["d_" + k] = f32(v.grad)
    summary = (f"{name:16s} seed {seed:4d}  T={tokens} D={cfg['d_model']} F={cfg['d_ff']} "
               f"E={cfg['n_experts']} k={cfg['top_k']}  min margin {min(margins) if margins else float('nan'):.2e}  "
               f"tokens/expert {tpe}  dropped {dropped}  aux {float(aux):.6g}  z {float(z):.6g}  "
               f"|y| {float(y.abs().max()):.3g}  loss share of d_router "
               + (" ".join(f"{k} {v:.1e}" for k, v in shares.items()) or "-"))
    return cfg, out, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    ap.add_argument("--case", action="append", choices=sorted(CASES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for name in args.case or list(CASES):
        cfg, tensors, summary = build_case(name, *CASES[name])
        path = os.path.join(args.out, f"moe_{name}.safetensors")
        write_safetensors(path, tensors, {"config": json.dumps(cfg, sort_keys=True),
                                          "generator": "scripts/gen_moe_goldens.py",
                                          "torch": torch.__version__})
        size = os.path.getsize(path)
        assert size < 1 << 20, f"{path} is {size} bytes"
        print(f"{summary}  -> {os.path.relpath(path)} ({size} bytes)")


if __name__ == "__main__":
    main()
