#!/usr/bin/python3
"""PyTorch goldens for the transformer kernels (moe/kernels/{rope,attention,cross_entropy,adamw}.h).

Independent float64 implementations, written from the published descriptions, that write
tests/data/kernels_<kernel>.safetensors; tests/kernels/transformer_golden_test.cc runs the C++
kernels in f32 against them. Inputs are drawn in float32 (so the C++ side sees them exactly) and
every computation is float64. Needs only torch + numpy:

    /usr/bin/python3 scripts/gen_transformer_goldens.py [--out tests/data]

Files (tensor names are "<case>.<name>"; each case's parameters are a JSON string in the
metadata under the case name):
  kernels_rope       x [T,H,Dh], positions [T], dy -> inv_freq [r/2], y, dx = d sum(y*dy)/dx,
                     plus the cos/sin scale and the softmax-scale multiplier. Cases:
                     half (partial rotary, rotate_half), interleaved (complex multiplication, as in
                     Meta's Llama), yarn (DeepSeek-V2/V3 rope_scaling, on the rope slice of an MLA
                     head, interleaved), llama3 (Llama 3.1 rope_scaling), linear.
  kernels_attention  q [B,T,H,Dk], k [B,S,Hkv,Dk], v [B,S,Hkv,Dv], dout -> out, lse [B,H,T],
                     dq, dk, dv of sum(out*dout). Cases: train (pos0 = 0), cached (pos0 > 0,
                     Dv != Dk, S > pos0 + T so the last key is never read, H/Hkv = 3).
  kernels_cross_entropy  logits [T,V], targets (-100 ignored) -> loss, row_loss, dlogits of the
                     mean loss (torch.nn.functional.cross_entropy).
  kernels_adamw      3 torch.optim.AdamW steps: param0, grads [3,N] -> params [3,N] after each
                     step, m and v after the last; plus clip_grad_norm_ over two tensors.

RoPE formulas (r = rotary dim, inv_freq_i = theta^(-2i/r), i < r/2):
  linear   inv_freq / factor
  yarn     (YaRN paper, as configured by DeepSeek-V2/V3's rope_scaling) corr_dim(n) =
           r ln(L / (2 pi n)) / (2 ln theta) with L = original_max_position_embeddings;
           low = max(floor(corr_dim(beta_fast)), 0), high = min(ceil(corr_dim(beta_slow)), r - 1);
           ramp_i = clamp((i - low) / (high - low), 0, 1); the extrapolation mask is 1 - ramp and
           inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp); cos and sin are multiplied
           by mscale(factor, mscale) / mscale(factor, mscale_all_dim), mscale(s, m) =
           0.1 m ln s + 1 (s > 1), and the softmax scale by mscale(factor, mscale_all_dim)^2.
  llama3   wavelength w = 2 pi / inv_freq; w < L / high_freq_factor: kept; w > L / low_freq_factor:
           / factor; otherwise s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor)
           and inv_freq = (1 - s) inv_freq / factor + s inv_freq.
"""

import argparse
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


# ------------------------------------------------------------------------------------------------
# safetensors writer (sorted names, data packed in name order, header padded to 8 bytes)

def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        kinds = {np.dtype(np.float32): ("F32", "<f4"), np.dtype(np.float64): ("F64", "<f8"),
                 np.dtype(np.int64): ("I64", "<i8")}
        if arr.dtype not in kinds:
            raise ValueError(f"{name}: unsupported dtype {arr.dtype}")
        dtype, fmt = kinds[arr.dtype]
        raw = arr.astype(fmt).tobytes()
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


def f32(t):
    return t.detach().numpy().astype(np.float32)


def f64(t):
    return np.asarray(t.detach().numpy() if torch.is_tensor(t) else t, dtype=np.float64)


def randn32(gen, *shape, scale=1.0):
    """float32 draws widened to float64 (exactly representable on the C++ side)."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).double()


# ------------------------------------------------------------------------------------------------
# RoPE

def mscale(s, m):
    return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0


def rope_inv_freq(r, theta, sc):
    """(inv_freq [r/2], cos/sin scale, softmax-scale multiplier) from the formulas above."""
    base = 1.0 / theta ** (torch.arange(0, r, 2, dtype=torch.float64) / r)
    kind = sc.get("type", "none")
    if kind == "none":
        return base, 1.0, 1.0
    factor = sc["factor"]
    if kind == "linear":
        return base / factor, 1.0, 1.0
    L = sc["original_max_position_embeddings"]
    if kind == "yarn":
        def corr_dim(n_rot):
            return r * math.log(L / (n_rot * 2 * math.pi)) / (2 * math.log(theta))
        low = max(math.floor(corr_dim(sc["beta_fast"])), 0)
        high = min(math.ceil(corr_dim(sc["beta_slow"])), r - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(r // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        extrapolation_mask = 1 - ramp
        inv = (base / factor) * (1 - extrapolation_mask) + base * extrapolation_mask
        m_all = mscale(factor, sc["mscale_all_dim"])
        return inv, mscale(factor, sc["mscale"]) / m_all, m_all * m_all
    if kind == "llama3":
        lo, hi = sc["low_freq_factor"], sc["high_freq_factor"]
        wavelen = 2 * math.pi / base
        scaled = torch.where(wavelen > L / lo, base / factor, base)
        smooth = (L / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= L / hi) & (wavelen <= L / lo)
        return torch.where(medium, smoothed, scaled), 1.0, 1.0
    raise ValueError(kind)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, positions, inv, m, r, offset, pairing):
    """x [T,H,Dh]: rotate dims [offset, offset + r) of every head."""
    angles = positions.double()[:, None] * inv[None, :]  # [T, r/2]
    xs = x[..., offset:offset + r]
    if pairing == "half":
        # Hugging Face: x * cos + rotate_half(x) * sin with cos/sin of cat(freqs, freqs).
        emb = torch.cat((angles, angles), dim=-1)[:, None, :]
        rot = xs * (m * emb.cos()) + rotate_half(xs) * (m * emb.sin())
    else:
        # Meta Llama: consecutive pairs as complex numbers times m e^{i angle}.
        xc = torch.view_as_complex(xs.reshape(*xs.shape[:-1], r // 2, 2).contiguous())
        rot = torch.view_as_real(xc * torch.polar(torch.full_like(angles, m), angles)[:, None, :])
        rot = rot.reshape(xs.shape)
    return torch.cat((x[..., :offset], rot, x[..., offset + r:]), dim=-1)


ROPE_CASES = {
    "half": dict(t=6, h=2, dh=16, r=8, offset=0, theta=10000.0, pairing="half", scaling={}),
    "interleaved": dict(t=6, h=2, dh=16, r=16, offset=0, theta=10000.0, pairing="interleaved",
                        scaling={}),
    # An MLA head [nope 8 | rope 16]; mscale != mscale_all_dim so cos/sin are scaled too.
    "yarn": dict(t=6, h=2, dh=24, r=16, offset=8, theta=10000.0, pairing="interleaved",
                 scaling=dict(type="yarn", factor=40.0, original_max_position_embeddings=4096,
                              beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=0.8)),
    "llama3": dict(t=6, h=2, dh=16, r=16, offset=0, theta=500000.0, pairing="half",
                   scaling=dict(type="llama3", factor=8.0, low_freq_factor=1.0,
                                high_freq_factor=4.0, original_max_position_embeddings=8192)),
    "linear": dict(t=4, h=1, dh=8, r=8, offset=0, theta=10000.0, pairing="half",
                   scaling=dict(type="linear", factor=4.0)),
}


def build_rope(gen):
    tensors, meta = {}, {}
    for name, c in ROPE_CASES.items():
        inv, m, softmax_mult = rope_inv_freq(c["r"], c["theta"], c["scaling"])
        x = randn32(gen, c["t"], c["h"], c["dh"]).requires_grad_(True)
        dy = randn32(gen, c["t"], c["h"], c["dh"])
        positions = torch.cat((torch.tensor([0, 1]),
                               torch.randint(0, 20000, (c["t"] - 2,), generator=gen)))
        y = apply_rope(x, positions, inv, m, c["r"], c["offset"], c["pairing"])
        (y * dy).sum().backward()
        p = f"{name}."
        tensors.update({p + "x": f32(x), p + "dy": f32(dy), p + "positions": positions.numpy(),
                        p + "y": f32(y), p + "dx": f32(x.grad), p + "inv_freq": f64(inv),
                        p + "cos_sin_scale": f64([m]), p + "softmax_scale_multiplier":
                        f64([softmax_mult])})
        meta[name] = json.dumps({k: c[k] for k in ("r", "offset", "theta", "pairing", "scaling")},
                                sort_keys=True)
        print(f"rope {name:12s} inv_freq {[f'{v:.3g}' for v in inv.tolist()]} m {m:.6f} "
              f"softmax x{softmax_mult:.6f}")
    return tensors, meta


# ------------------------------------------------------------------------------------------------
# Attention

ATTENTION_CASES = {
    "train": dict(b=2, t=5, s=5, h=4, hkv=2, dk=8, dv=8, pos0=0, scale=8 ** -0.5),
    "cached": dict(b=2, t=3, s=8, h=6, hkv=2, dk=12, dv=8, pos0=4, scale=12 ** -0.5 * 1.3),
}


def attention(q, k, v, pos0, scale):
    b, t, h, dk = q.shape
    s, hkv = k.shape[1], k.shape[2]
    kr = k.repeat_interleave(h // hkv, dim=2)  # query head j reads kv head j // (h / hkv)
    vr = v.repeat_interleave(h // hkv, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, kr) * scale
    visible = torch.arange(s)[None, :] <= (pos0 + torch.arange(t))[:, None]  # [t, s]
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [b, h, t]
    out = torch.einsum("bhts,bshd->bthd", torch.softmax(scores, dim=-1), vr)
    return out, lse


def build_attention(gen):
    tensors, meta = {}, {}
    for name, c in ATTENTION_CASES.items():
        q = randn32(gen, c["b"], c["t"], c["h"], c["dk"]).requires_grad_(True)
        k = randn32(gen, c["b"], c["s"], c["hkv"], c["dk"]).requires_grad_(True)
        v = randn32(gen, c["b"], c["s"], c["hkv"], c["dv"]).requires_grad_(True)
        dout = randn32(gen, c["b"], c["t"], c["h"], c["dv"])
        out, lse = attention(q, k, v, c["pos0"], c["scale"])
        (out * dout).sum().backward()
        p = f"{name}."
        tensors.update({p + "q": f32(q), p + "k": f32(k), p + "v": f32(v), p + "dout": f32(dout),
                        p + "out": f32(out), p + "lse": f32(lse), p + "dq": f32(q.grad),
                        p + "dk": f32(k.grad), p + "dv": f32(v.grad)})
        meta[name] = json.dumps({"pos0": c["pos0"], "scale": c["scale"]}, sort_keys=True)
        print(f"attention {name:8s} {c}  |out| {float(out.abs().max()):.3g}")
    return tensors, meta


# ------------------------------------------------------------------------------------------------
# Cross-entropy

def build_cross_entropy(gen):
    t, v = 12, 50
    logits = randn32(gen, t, v, scale=3.0).requires_grad_(True)
    targets = torch.randint(0, v, (t,), generator=gen)
    targets[[2, 7]] = -100
    loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")
    rows = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
    loss.backward()
    print(f"cross_entropy T={t} V={v} loss {float(loss):.6f}")
    return {"logits": f32(logits), "targets": targets.numpy(), "loss": f64([float(loss)]),
            "row_loss": f32(rows), "dlogits": f32(logits.grad)}, {}


# ------------------------------------------------------------------------------------------------
# AdamW and gradient clipping

ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def build_adamw(gen):
    n, steps = 64, 3
    param0 = randn32(gen, n)
    # Step 2 has tiny gradients, so bias correction and eps both matter.
    grads = torch.stack([randn32(gen, n, scale=s) for s in (1.0, 1e-3, 2.0)])
    p = param0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], **ADAMW)
    params = []
    for i in range(steps):
        p.grad = grads[i].clone()
        opt.step()
        params.append(p.detach().clone())
    st = opt.state[p]
    assert int(st["step"]) == steps
    a, b = randn32(gen, 40), randn32(gen, 7, 3, scale=2.0)
    ga, gb = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ga.grad, gb.grad = a.clone(), b.clone()
    norm = torch.nn.utils.clip_grad_norm_([ga, gb], max_norm=2.0)
    print(f"adamw {ADAMW}  clip norm {float(norm):.6f}")
    tensors = {"param0": f32(param0), "grads": f32(grads), "params": f32(torch.stack(params)),
               "m": f32(st["exp_avg"]), "v": f32(st["exp_avg_sq"]),
               "clip.a": f32(a), "clip.b": f32(b), "clip.norm": f64([float(norm)]),
               "clip.a_clipped": f32(ga.grad), "clip.b_clipped": f32(gb.grad)}
    meta = {"adamw": json.dumps(dict(ADAMW, betas=list(ADAMW["betas"])), sort_keys=True),
            "clip": json.dumps({"max_norm": 2.0})}
    return tensors, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for i, (kernel, build) in enumerate([("rope", build_rope), ("attention", build_attention),
                                         ("cross_entropy", build_cross_entropy),
                                         ("adamw", build_adamw)]):
        gen = torch.Generator().manual_seed(2024 + i)
        tensors, meta = build(gen)
        meta.update({"generator": "scripts/gen_transformer_goldens.py", "torch": torch.__version__})
        path = os.path.join(args.out, f"kernels_{kernel}.safetensors")
        write_safetensors(path, tensors, meta)
        size = os.path.getsize(path)
        total += size
        print(f"  -> {os.path.relpath(path)} ({size} bytes)")
    assert total < 200_000, f"goldens take {total} bytes"


if __name__ == "__main__":
    main()
