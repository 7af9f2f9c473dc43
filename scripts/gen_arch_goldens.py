#!/usr/bin/python3
"""Tiny published-architecture checkpoints and their reference logits (moe/model/arch/).

For every supported Hugging Face architecture this writes a folder tests/data/arch/<name>/ that
looks like a published checkpoint: config.json with the family's own keys, the weights under the
family's own tensor names (model.safetensors, or shards + model.safetensors.index.json for
Qwen2-MoE; F16 for Llama, BF16 for Qwen3-MoE, F32 otherwise), and golden.safetensors with

    tokens      I64 [P + N]   a random prompt of P tokens followed by N greedy tokens
    prompt_len  I64 [1]       P
    logits      F32 [P + N, V] reference logits of the whole sequence (one causal forward)

The references below are compact float64 PyTorch re-implementations written from the published
modeling code of each family (transformers' modeling_{llama,mistral,qwen2,qwen2_moe,qwen3_moe,
olmoe,mixtral}.py and DeepSeek's modeling_deepseek.py for V2/V3), not from our C++: the
Qwen2-MoE shared expert is scaled by sigmoid(shared_expert_gate(x)); OLMoE normalises q and k
over the whole projection width before the clip; Qwen3-MoE per head before RoPE; DeepSeek's MLA
de-interleaves q_pe/k_pe ((2i, 2i+1) -> (i, i + r/2)) and applies rotate_half, with YaRN inv_freq,
the mscale ratio on cos/sin and mscale(factor, mscale_all_dim)^2 in the softmax scale; DeepSeek-V2
group_limited_greedy ranks groups by their max score and fills the other experts with 0.0;
DeepSeek-V3 noaux_tc ranks groups by the sum of their two best (score + e_score_correction_bias),
selects by the biased score and gates with the unbiased sigmoid score, renormalised (+1e-20) and
scaled by routed_scaling_factor.

The C++ runs in f32, so seeds are resampled until every routing decision (expert and group top-k)
and every greedy argmax has a margin of at least MIN_MARGIN.

    /usr/bin/python3 scripts/gen_arch_goldens.py [--out tests/data/arch]
"""

import argparse
import json
import math
import os
import shutil
import struct

import numpy as np
import torch

MIN_MARGIN = 2e-3
PROMPT = 6
NEW = 8
F64 = torch.float64

# ------------------------------------------------------------------------------------------------
# safetensors writer (sorted names, data packed in name order, header padded to 8 bytes)


def to_bytes(t, dtype):
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "F16":
        return t.to(torch.float32).numpy().astype("<f2").tobytes()
    if dtype == "BF16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    if dtype == "I64":
        return t.numpy().astype("<i8").tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors, dtypes=None, metadata=None):
    header = {"__metadata__": metadata} if metadata else {}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        dt = "I64" if t.dtype == torch.int64 else (dtypes or {}).get(name, "F32")
        raw = to_bytes(t, dt)
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def rounded(t, dtype):
    """The value the C++ will see after loading `t` stored as dtype."""
    if dtype == "F16":
        return t.to(torch.float16).to(F64)
    if dtype == "BF16":
        return t.to(torch.bfloat16).to(F64)
    return t.to(torch.float32).to(F64)


# ------------------------------------------------------------------------------------------------
# Shared pieces (Hugging Face formulas)

class Margins:
    """Smallest gap seen between the last chosen and the first rejected candidate."""

    def __init__(self):
        self.min = float("inf")

    def topk(self, values, k):
        if k >= values.shape[-1]:
            return
        s = torch.sort(values, dim=-1, descending=True).values
        self.min = min(self.min, float((s[..., k - 1] - s[..., k]).min()))


MARGINS = Margins()


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def default_inv_freq(dim, theta):
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=F64) / dim))


def llama3_inv_freq(dim, theta, rs):
    inv = default_inv_freq(dim, theta)
    factor, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], \
        rs["original_max_position_embeddings"]
    low_wl, high_wl = old / lo, old / hi
    wl = 2 * math.pi / inv
    out = torch.where(wl > low_wl, inv / factor, inv)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = (wl >= high_wl) & (wl <= low_wl)
    return torch.where(medium, smoothed, out)


def yarn_get_mscale(scale, mscale):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def deepseek_yarn(dim, theta, rs):
    """DeepseekV2YarnRotaryEmbedding: inv_freq and the cos/sin magnitude."""
    factor, old = rs["factor"], rs["original_max_position_embeddings"]
    beta_fast, beta_slow = rs.get("beta_fast", 32), rs.get("beta_slow", 1)

    def corr_dim(n_rot):
        return (dim * math.log(old / (n_rot * 2 * math.pi))) / (2 * math.log(theta))

    low = max(math.floor(corr_dim(beta_fast)), 0)
    high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=F64) - low) / (high - low), 0, 1)
    freq_extra = default_inv_freq(dim, theta)
    freq_inter = 1.0 / (factor * theta ** (torch.arange(0, dim, 2, dtype=F64) / dim))
    mask = 1.0 - ramp
    inv = freq_inter * (1 - mask) + freq_extra * mask
    m = yarn_get_mscale(factor, rs.get("mscale", 1)) / yarn_get_mscale(factor, rs.get("mscale_all_dim", 0))
    return inv, m


def cos_sin(inv_freq, T, mag=1.0):
    freqs = torch.outer(torch.arange(T, dtype=F64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * mag, emb.sin() * mag  # [T, dim]


def rope_half(x, cos, sin):  # x [T, H, d]
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def causal_attention(q, k, v, scale):  # q [T,H,dk], k [T,Hkv,dk], v [T,Hkv,dv]
    T, H, _ = q.shape
    rep = H // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    s = torch.einsum("thd,shd->hts", q, k) * scale
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    s = s.masked_fill(mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.einsum("hts,shd->thd", p, v).reshape(T, -1)


def linear(x, W, p, bias=False):
    y = x @ W[p + ".weight"].T
    return y + W[p + ".bias"] if bias else y


def swiglu(x, W, p):
    return linear(torch.nn.functional.silu(linear(x, W, p + ".gate_proj")) * linear(x, W, p + ".up_proj"),
                  W, p + ".down_proj")


def experts_combine(x, W, p, idx, wts, names=("gate_proj", "up_proj", "down_proj")):
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            ep = f"{p}.experts.{e}."
            h = torch.nn.functional.silu(x[t] @ W[ep + names[0] + ".weight"].T) * (x[t] @ W[ep + names[1] + ".weight"].T)
            out[t] += wts[t, j] * (h @ W[ep + names[2] + ".weight"].T)
    return out


# ------------------------------------------------------------------------------------------------
# Attention variants

def attn_llama(c, W, p, x, cs, qk_norm=None, qkv_bias=False, o_bias=False, clip=None):
    """Llama / Mistral / Qwen2 / Qwen3-MoE / OLMoE attention."""
    T = x.shape[0]
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    dh = c.get("head_dim") or c["hidden_size"] // H
    eps = c["rms_norm_eps"]
    q = linear(x, W, p + "q_proj", qkv_bias)
    k = linear(x, W, p + "k_proj", qkv_bias)
    v = linear(x, W, p + "v_proj", qkv_bias)
    if qk_norm == "full":  # OLMoE: over the whole projection
        q = rmsnorm(q, W[p + "q_norm.weight"], eps)
        k = rmsnorm(k, W[p + "k_norm.weight"], eps)
    if clip is not None:
        q, k, v = q.clamp(-clip, clip), k.clamp(-clip, clip), v.clamp(-clip, clip)
    q, k, v = q.view(T, H, dh), k.view(T, Hkv, dh), v.view(T, Hkv, dh)
    if qk_norm == "per_head":  # Qwen3-MoE: per head over head_dim
        q = rmsnorm(q, W[p + "q_norm.weight"], eps)
        k = rmsnorm(k, W[p + "k_norm.weight"], eps)
    cos, sin = cs
    q, k = rope_half(q, cos, sin), rope_half(k, cos, sin)
    return linear(causal_attention(q, k, v, 1.0 / math.sqrt(dh)), W, p + "o_proj", o_bias)


def attn_deepseek(c, W, p, x, cs):
    """DeepseekV2Attention / DeepseekV3Attention (MLA), as DeepSeek's own modeling code."""
    T = x.shape[0]
    H = c["num_attention_heads"]
    dn, dr, dv, rkv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    dq = dn + dr
    if c.get("q_lora_rank") is None:
        q = linear(x, W, p + "q_proj")
    else:
        q = linear(rmsnorm(linear(x, W, p + "q_a_proj"), W[p + "q_a_layernorm.weight"], 1e-6), W, p + "q_b_proj")
    q = q.view(T, H, dq)
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    ckv = linear(x, W, p + "kv_a_proj_with_mqa")
    compressed, k_pe = ckv[:, :rkv], ckv[:, rkv:].view(T, 1, dr)
    kv = linear(rmsnorm(compressed, W[p + "kv_a_layernorm.weight"], 1e-6), W, p + "kv_b_proj").view(T, H, dn + dv)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    cos, sin = cs

    def deinterleave(t):  # (2i, 2i+1) -> (i, i + d/2), then rotate_half
        n, h, d = t.shape
        return t.view(n, h, d // 2, 2).transpose(3, 2).reshape(n, h, d)

    q_pe = rope_half(deinterleave(q_pe), cos, sin)
    k_pe = rope_half(deinterleave(k_pe), cos, sin)
    qs = torch.cat((q_nope, q_pe), dim=-1)
    ks = torch.cat((k_nope, k_pe.expand(T, H, dr)), dim=-1)
    scale = dq ** -0.5
    rs = c.get("rope_scaling")
    if rs is not None and rs.get("mscale_all_dim", 0):
        m = yarn_get_mscale(rs["factor"], rs["mscale_all_dim"])
        scale = scale * m * m
    return linear(causal_attention(qs, ks, v, scale), W, p + "o_proj")


# ------------------------------------------------------------------------------------------------
# FFN variants (x [T, D] after post_attention_layernorm)

def softmax_topk(c, W, p, x, renorm):
    probs = torch.softmax(linear(x, W, p + "gate"), dim=-1)
    k = c["num_experts_per_tok"]
    MARGINS.topk(probs, k)
    wts, idx = torch.topk(probs, k, dim=-1)
    if renorm:
        wts = wts / wts.sum(-1, keepdim=True)
    return idx, wts


def ffn_mixtral(c, W, p, x, layer):
    idx, wts = softmax_topk(c, W, p + "block_sparse_moe.", x, True)
    return experts_combine(x, W, p + "block_sparse_moe", idx, wts, ("w1", "w3", "w2"))


def qwen_moe_layer(c, layer):
    return layer not in c.get("mlp_only_layers", []) and c["num_experts"] > 0 and \
        (layer + 1) % c.get("decoder_sparse_step", 1) == 0


def ffn_qwen2_moe(c, W, p, x, layer):
    if not qwen_moe_layer(c, layer):
        return swiglu(x, W, p + "mlp")
    idx, wts = softmax_topk(c, W, p + "mlp.", x, c.get("norm_topk_prob", False))
    out = experts_combine(x, W, p + "mlp", idx, wts)
    shared = swiglu(x, W, p + "mlp.shared_expert")
    return out + torch.sigmoid(linear(x, W, p + "mlp.shared_expert_gate")) * shared


def ffn_qwen3_moe(c, W, p, x, layer):
    if not qwen_moe_layer(c, layer):
        return swiglu(x, W, p + "mlp")
    idx, wts = softmax_topk(c, W, p + "mlp.", x, c.get("norm_topk_prob", False))
    return experts_combine(x, W, p + "mlp", idx, wts)


def ffn_olmoe(c, W, p, x, layer):
    idx, wts = softmax_topk(c, W, p + "mlp.", x, c.get("norm_topk_prob", False))
    return experts_combine(x, W, p + "mlp", idx, wts)


def ffn_dense(c, W, p, x, layer):
    return swiglu(x, W, p + "mlp")


def deepseek_moe_layer(c, layer):
    return c.get("n_routed_experts") is not None and layer >= c.get("first_k_dense_replace", 0) and \
        layer % c.get("moe_layer_freq", 1) == 0


def ffn_deepseek_v2(c, W, p, x, layer):
    if not deepseek_moe_layer(c, layer):
        return swiglu(x, W, p + "mlp")
    T, E, k = x.shape[0], c["n_routed_experts"], c["num_experts_per_tok"]
    scores = torch.softmax(linear(x, W, p + "mlp.gate"), dim=-1)
    if c["topk_method"] == "greedy":
        MARGINS.topk(scores, k)
        wts, idx = torch.topk(scores, k, dim=-1)
    else:  # group_limited_greedy
        g = c["n_group"]
        group_scores = scores.view(T, g, -1).max(dim=-1).values
        MARGINS.topk(group_scores, c["topk_group"])
        group_idx = torch.topk(group_scores, c["topk_group"], dim=-1)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(T, g, E // g).reshape(T, -1)
        tmp = scores.masked_fill(~score_mask.bool(), 0.0)
        MARGINS.topk(tmp, k)
        wts, idx = torch.topk(tmp, k, dim=-1)
    if k > 1 and c.get("norm_topk_prob", False):
        wts = wts / (wts.sum(-1, keepdim=True) + 1e-20)
    else:
        wts = wts * c["routed_scaling_factor"]
    out = experts_combine(x, W, p + "mlp", idx, wts)
    if c.get("n_shared_experts"):
        out = out + swiglu(x, W, p + "mlp.shared_experts")
    return out


def ffn_deepseek_v3(c, W, p, x, layer):
    if not deepseek_moe_layer(c, layer):
        return swiglu(x, W, p + "mlp")
    T, E, k, g = x.shape[0], c["n_routed_experts"], c["num_experts_per_tok"], c["n_group"]
    scores = torch.sigmoid(linear(x, W, p + "mlp.gate"))
    choice = scores + W[p + "mlp.gate.e_score_correction_bias"][None, :]
    group_scores = choice.view(T, g, -1).topk(2, dim=-1)[0].sum(dim=-1)
    MARGINS.topk(group_scores, c["topk_group"])
    group_idx = torch.topk(group_scores, c["topk_group"], dim=-1)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(T, g, E // g).reshape(T, -1)
    tmp = choice.masked_fill(~score_mask.bool(), 0.0)
    MARGINS.topk(tmp, k)
    idx = torch.topk(tmp, k, dim=-1)[1]
    if float(tmp.gather(1, idx).min()) <= 0:  # HF would pick a masked (0.0) expert; moe uses -inf
        MARGINS.min = 0.0
    wts = scores.gather(1, idx)
    if k > 1 and c.get("norm_topk_prob", False):
        wts = wts / (wts.sum(-1, keepdim=True) + 1e-20)
    wts = wts * c["routed_scaling_factor"]
    out = experts_combine(x, W, p + "mlp", idx, wts)
    if c.get("n_shared_experts"):
        out = out + swiglu(x, W, p + "mlp.shared_experts")
    return out


# ------------------------------------------------------------------------------------------------
# The decoder (the same pre-norm skeleton in every family)

def rope_tables(c, T):
    H = c["num_attention_heads"]
    if "qk_rope_head_dim" in c:
        dim = c["qk_rope_head_dim"]
    else:
        dim = c.get("head_dim") or c["hidden_size"] // H
    theta = c.get("rope_theta", 10000.0)
    rs = c.get("rope_scaling")
    if rs is None:
        return cos_sin(default_inv_freq(dim, theta), T)
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "llama3":
        return cos_sin(llama3_inv_freq(dim, theta, rs), T)
    if kind == "yarn":
        inv, m = deepseek_yarn(dim, theta, rs)
        return cos_sin(inv, T, m)
    raise ValueError(kind)


def forward(arch, c, W, tokens):
    T = len(tokens)
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
    cs = rope_tables(c, T)
    eps = c["rms_norm_eps"]
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        x = x + arch["attn"](c, W, p + "self_attn.", h, cs)
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        x = x + arch["ffn"](c, W, p, h, layer)
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T


# ------------------------------------------------------------------------------------------------
# Architectures: config + tensor shapes

def base(arch, **kw):
    c = dict(architectures=[arch], vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
             tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2,
             torch_dtype="float32")
    c.update(kw)
    return c


CASES = {
    "mixtral": dict(
        config=base("MixtralForCausalLM", model_type="mixtral", intermediate_size=24, num_local_experts=4,
                    num_experts_per_tok=2, sliding_window=None, router_aux_loss_coef=0.02),
        attn=attn_llama, ffn=ffn_mixtral),
    "llama": dict(  # explicit head_dim != D/H, llama3 rope scaling, tied head, F16 storage
        config=base("LlamaForCausalLM", model_type="llama", intermediate_size=64, head_dim=16,
                    tie_word_embeddings=True, attention_bias=False, mlp_bias=False, rope_theta=500000.0,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=16), torch_dtype="float16"),
        attn=attn_llama, ffn=ffn_dense, dtype="F16"),
    "mistral": dict(
        config=base("MistralForCausalLM", model_type="mistral", intermediate_size=48, sliding_window=4096,
                    head_dim=None),
        attn=attn_llama, ffn=ffn_dense),
    "qwen2": dict(  # q/k/v biases, tied head
        config=base("Qwen2ForCausalLM", model_type="qwen2", intermediate_size=48, tie_word_embeddings=True,
                    rope_theta=1000000.0, rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=32768,
                    max_window_layers=2),
        attn=lambda c, W, p, x, cs: attn_llama(c, W, p, x, cs, qkv_bias=True), ffn=ffn_dense),
    "qwen2_moe": dict(  # shared expert with sigmoid gate, a dense layer from mlp_only_layers; 2 shards
        config=base("Qwen2MoeForCausalLM", model_type="qwen2_moe", num_hidden_layers=3, intermediate_size=40,
                    moe_intermediate_size=16, shared_expert_intermediate_size=24, num_experts=8,
                    num_experts_per_tok=2, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1],
                    rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=4096),
        attn=lambda c, W, p, x, cs: attn_llama(c, W, p, x, cs, qkv_bias=True), ffn=ffn_qwen2_moe, shards=2),
    "qwen3_moe": dict(  # per-head q/k norm, explicit head_dim, renormalised top-k, BF16 storage
        config=base("Qwen3MoeForCausalLM", model_type="qwen3_moe", num_hidden_layers=3, head_dim=16,
                    intermediate_size=40, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                    norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[0], attention_bias=False,
                    rms_norm_eps=1e-6, torch_dtype="bfloat16"),
        attn=lambda c, W, p, x, cs: attn_llama(c, W, p, x, cs, qk_norm="per_head"), ffn=ffn_qwen3_moe,
        dtype="BF16"),
    "olmoe": dict(  # full-width q/k norm, clip_qkv
        config=base("OlmoeForCausalLM", model_type="olmoe", intermediate_size=16, num_experts=8,
                    num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=2.0, attention_bias=False,
                    num_key_value_heads=4),
        attn=lambda c, W, p, x, cs: attn_llama(c, W, p, x, cs, qk_norm="full", clip=c["clip_qkv"]),
        ffn=ffn_olmoe),
    "deepseek_v2": dict(  # MLA without q_lora, group_limited_greedy, route scale, YaRN (mscale ratio 1)
        config=base("DeepseekV2ForCausalLM", model_type="deepseek_v2", num_hidden_layers=3,
                    num_key_value_heads=4, intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8,
                    n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
                    topk_method="group_limited_greedy", scoring_func="softmax", norm_topk_prob=False,
                    routed_scaling_factor=2.0, first_k_dense_replace=1, moe_layer_freq=1, q_lora_rank=None,
                    kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, attention_bias=False,
                    rms_norm_eps=1e-6,
                    rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=16, beta_fast=32,
                                      beta_slow=1, mscale=0.707, mscale_all_dim=0.707)),
        attn=attn_deepseek, ffn=ffn_deepseek_v2),
    "deepseek_v3": dict(  # MLA with q_lora, noaux_tc + e_score_correction_bias, YaRN (mscale ratio != 1)
        config=base("DeepseekV3ForCausalLM", model_type="deepseek_v3", num_hidden_layers=3,
                    num_key_value_heads=4, intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8,
                    n_shared_experts=1, num_experts_per_tok=3, n_group=4, topk_group=2, topk_method="noaux_tc",
                    scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
                    first_k_dense_replace=1, moe_layer_freq=1, q_lora_rank=24, kv_lora_rank=16,
                    qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, attention_bias=False, rms_norm_eps=1e-6,
                    num_nextn_predict_layers=1,
                    rope_scaling=dict(type="yarn", factor=8.0, original_max_position_embeddings=16, beta_fast=32,
                                      beta_slow=1, mscale=1.0, mscale_all_dim=0.8)),
        attn=attn_deepseek, ffn=ffn_deepseek_v3, extra={"model.layers.3.eh_proj.weight": (32, 64)}),
}


def shapes(name, c):
    """HF tensor name -> shape, as each family's modeling code declares its parameters."""
    D, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    dh = c.get("head_dim") or D // H
    s = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    if not c.get("tie_word_embeddings"):
        s["lm_head.weight"] = (V, D)

    def mlp(p, f):
        s.update({p + "gate_proj.weight": (f, D), p + "up_proj.weight": (f, D), p + "down_proj.weight": (D, f)})

    for layer in range(L):
        p = f"model.layers.{layer}."
        s[p + "input_layernorm.weight"] = (D,)
        s[p + "post_attention_layernorm.weight"] = (D,)
        a = p + "self_attn."
        if name.startswith("deepseek"):
            dq = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
            if c["q_lora_rank"] is None:
                s[a + "q_proj.weight"] = (H * dq, D)
            else:
                s.update({a + "q_a_proj.weight": (c["q_lora_rank"], D), a + "q_a_layernorm.weight": (c["q_lora_rank"],),
                          a + "q_b_proj.weight": (H * dq, c["q_lora_rank"])})
            s[a + "kv_a_proj_with_mqa.weight"] = (c["kv_lora_rank"] + c["qk_rope_head_dim"], D)
            s[a + "kv_a_layernorm.weight"] = (c["kv_lora_rank"],)
            s[a + "kv_b_proj.weight"] = (H * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
            s[a + "o_proj.weight"] = (D, H * c["v_head_dim"])
        else:
            s.update({a + "q_proj.weight": (H * dh, D), a + "k_proj.weight": (Hkv * dh, D),
                      a + "v_proj.weight": (Hkv * dh, D), a + "o_proj.weight": (D, H * dh)})
            if name.startswith("qwen2"):
                s.update({a + "q_proj.bias": (H * dh,), a + "k_proj.bias": (Hkv * dh,), a + "v_proj.bias": (Hkv * dh,)})
            if name == "qwen3_moe":
                s.update({a + "q_norm.weight": (dh,), a + "k_norm.weight": (dh,)})
            if name == "olmoe":
                s.update({a + "q_norm.weight": (H * dh,), a + "k_norm.weight": (Hkv * dh,)})
        if name == "mixtral":
            m = p + "block_sparse_moe."
            s[m + "gate.weight"] = (c["num_local_experts"], D)
            f = c["intermediate_size"]
            for e in range(c["num_local_experts"]):
                s.update({f"{m}experts.{e}.w1.weight": (f, D), f"{m}experts.{e}.w3.weight": (f, D),
                          f"{m}experts.{e}.w2.weight": (D, f)})
            continue
        moe = {"qwen2_moe": lambda: qwen_moe_layer(c, layer), "qwen3_moe": lambda: qwen_moe_layer(c, layer),
               "olmoe": lambda: True, "deepseek_v2": lambda: deepseek_moe_layer(c, layer),
               "deepseek_v3": lambda: deepseek_moe_layer(c, layer)}.get(name, lambda: False)()
        if not moe:
            mlp(p + "mlp.", c["intermediate_size"])
            continue
        E = c.get("num_experts") or c.get("n_routed_experts")
        f = c["intermediate_size"] if name == "olmoe" else c["moe_intermediate_size"]
        s[p + "mlp.gate.weight"] = (E, D)
        for e in range(E):
            mlp(f"{p}mlp.experts.{e}.", f)
        if name == "qwen2_moe":
            mlp(p + "mlp.shared_expert.", c["shared_expert_intermediate_size"])
            s[p + "mlp.shared_expert_gate.weight"] = (1, D)
        if name.startswith("deepseek") and c.get("n_shared_experts"):
            mlp(p + "mlp.shared_experts.", c["moe_intermediate_size"] * c["n_shared_experts"])
        if name == "deepseek_v3":
            s[p + "mlp.gate.e_score_correction_bias"] = (E,)
    return s


def init(shp, gen):
    W = {}
    for n, sh in sorted(shp.items()):
        if n.endswith("norm.weight") or n.endswith("layernorm.weight"):
            t = 1.0 + 0.2 * torch.randn(sh, generator=gen, dtype=F64)
        elif n.endswith(".bias"):
            t = 0.3 * torch.randn(sh, generator=gen, dtype=F64)
        elif n.endswith("e_score_correction_bias"):
            t = 0.05 * torch.randn(sh, generator=gen, dtype=F64)
        elif n == "model.embed_tokens.weight":
            t = torch.randn(sh, generator=gen, dtype=F64)
        elif n.endswith("gate.weight") and "experts" not in n:  # routers: decisive
            t = 2.0 / math.sqrt(sh[1]) * torch.randn(sh, generator=gen, dtype=F64)
        else:
            t = 1.0 / math.sqrt(sh[-1]) * torch.randn(sh, generator=gen, dtype=F64)
        W[n] = t
    return W


def generate(name, case, seed):
    c = case["config"]
    gen = torch.Generator().manual_seed(seed)
    shp = shapes(name, c)
    W = init(shp, gen)
    dtype = case.get("dtype", "F32")
    W = {n: rounded(t, dtype) for n, t in W.items()}
    MARGINS.min = float("inf")
    tokens = torch.randint(3, c["vocab_size"], (PROMPT,), generator=gen).tolist()
    arg_margin = float("inf")
    for _ in range(NEW):
        logits = forward(case, c, W, tokens)
        s = torch.sort(logits[-1], descending=True).values
        arg_margin = min(arg_margin, float(s[0] - s[1]))
        tokens.append(int(torch.argmax(logits[-1])))
    logits = forward(case, c, W, tokens)
    return W, tokens, logits, min(MARGINS.min, arg_margin)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "arch"))
    args = ap.parse_args()
    for name, case in CASES.items():
        for seed in range(1, 200):
            W, tokens, logits, margin = generate(name, case, seed)
            if margin >= MIN_MARGIN:
                break
        else:
            raise RuntimeError(f"{name}: no seed with margin >= {MIN_MARGIN}")
        out = os.path.join(args.out, name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        c = case["config"]
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
            f.write("\n")
        dtype = case.get("dtype", "F32")
        tensors = dict(W)
        for n, sh in case.get("extra", {}).items():  # tensors the model must skip (DeepSeek-V3's MTP layer)
            tensors[n] = torch.zeros(sh, dtype=F64)
        dtypes = {n: dtype for n in tensors}
        meta = {"format": "pt"}
        shards = case.get("shards", 1)
        if shards == 1:
            write_safetensors(os.path.join(out, "model.safetensors"), tensors, dtypes, meta)
        else:
            names = sorted(tensors)
            per = (len(names) + shards - 1) // shards
            weight_map = {}
            for i in range(shards):
                fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
                part = {n: tensors[n] for n in names[i * per:(i + 1) * per]}
                write_safetensors(os.path.join(out, fname), part, dtypes, meta)
                weight_map.update({n: fname for n in part})
            total = sum(t.numel() * 4 for t in tensors.values())
            with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
                f.write("\n")
        write_safetensors(os.path.join(out, "golden.safetensors"),
                          {"tokens": torch.tensor(tokens, dtype=torch.int64),
                           "prompt_len": torch.tensor([PROMPT], dtype=torch.int64),
                           "logits": logits},
                          metadata={"seed": str(seed), "margin": f"{margin:.3g}",
                                    "generator": "scripts/gen_arch_goldens.py"})
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(f"{name}: seed {seed}, margin {margin:.3g}, max|logit| {float(logits.abs().max()):.3g}, "
              f"{size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
