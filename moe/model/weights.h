// Weights of the MoE transformer as plain structs of named tensors. One ForEachTensor lists the
// names once; initialisation, zeroing gradients, the optimiser, checkpoints and gradient checks all
// go through it. Canonical names are ours ("layers.3.moe.w13"); moe/model/checkpoint.h maps them to
// the Hugging Face Mixtral names.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/rng.h"
#include "moe/core/tensor.h"
#include "moe/mixture/moe_layer.h"
#include "moe/model/config.h"

namespace moe::model {

// Optional tensors are undefined when the config does not use them and are then skipped by
// ForEachTensor.
struct LayerWeights {
  Tensor attn_norm;  // [D]
  Tensor wq;  // [H*Dh, D]        (MLA without q_lora_rank: [H*(Dn+Dr), D]; undefined with it)
  Tensor wk;  // [Hkv*Dh, D]      (not MLA)
  Tensor wv;  // [Hkv*Dh, D]      (not MLA)
  Tensor wo;  // [D, H*Dv]
  Tensor bq, bk, bv;  // [H*Dh], [Hkv*Dh], [Hkv*Dh]  (qkv_bias)
  Tensor bo;          // [D]              (o_bias)
  Tensor q_norm;      // [Dh] (per head) or [H*Dh] (full width)    (qk_norm)
  Tensor k_norm;      // [Dh] (per head) or [Hkv*Dh] (full width)
  // Multi-head latent attention (see MlaConfig).
  Tensor wq_a;       // [Rq, D]
  Tensor q_a_norm;   // [Rq]
  Tensor wq_b;       // [H*(Dn+Dr), Rq]
  Tensor wkv_a;      // [Rkv+Dr, D]
  Tensor kv_a_norm;  // [Rkv]
  Tensor wkv_b;      // [H*(Dn+Dv), Rkv]
  // Derived for inference, not a parameter (ForEachTensor skips it): each head's Dn key rows of
  // wkv_b transposed, [H*Rkv, Dn], so latent attention multiplies queries by them as a Linear
  // (f32, or Q8_0 when wkv_b is block-quantised). See DeriveInferenceWeights.
  Tensor wkv_b_kt;
  Tensor ffn_norm;   // [D]
  Tensor w13;        // [2Fd, D]  dense FFN gate|up (dense layers only)
  Tensor w2;         // [D, Fd]   dense FFN down
  // Inference layout of the dense FFN (gate, up, down apart; F32 or block-quantised, possibly
  // mapped from a GGUF file): used instead of w13 / w2 when defined. Attention matrices (wq, wk,
  // wv, wo, MLA's) and lm_head / embed may likewise be block-quantised or borrowed in a model
  // loaded for inference; norms, biases and routers are always F32.
  mixture::FfnMatrices ffn;
  mixture::MoeWeights moe;  // MoE layers only
  bool is_moe = false;
};

struct ModelWeights;

// Fills the derived inference tensors (LayerWeights::wkv_b_kt of MLA layers) from the weights;
// the loaders for inference call it. Infer works without them, only slower.
void DeriveInferenceWeights(const ModelConfig& cfg, ModelWeights& w);

// The Q8_0, Q4_0, Q4_K, Q5_K and Q6_K matrices of a model loaded for inference that RepackForDecode
// regroups as Q8_0x16 / Q4_0x16 / Q4_Kx16 / Q5_Kx16 / Q6_Kx16 (moe/kernels/quant_repack.h):
// attention projections (not MLA's kv_b and its derived kt, which are sliced per head), the dense
// FFN, every routed and shared expert, and an untied lm_head, each with rows in multiples of 16.
// The embedding table stays (rows are looked up by token). Bytes they hold:
int64_t RepackableBytes(const ModelWeights& w);
// Replaces each of them with a tiled copy (the original, if borrowed, is released) and returns
// the bytes repacked; rows are split over ctx's threads. The copies share one allocation (huge
// pages where the OS gives them) and are read-only views of it, like mapped weights. Call only
// where the kernels run (kernels::HasTiledKernels()): elsewhere the products of such
// weights are an Error. `copied(data, bytes)`, when set, is called with each borrowed original
// once it is copied (the GGUF loader drops those pages of its mapping from the resident set).
int64_t RepackForDecode(ModelWeights& w, Context& ctx,
                        const std::function<void(const void*, int64_t)>& copied = {});

struct ModelWeights {
  Tensor embed;       // [V, D]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [D]
  Tensor lm_head;     // [V, D] (undefined when tied to embed)

  // Zeroed tensors of the right shapes.
  // storage = false: shapes only (Tensor::ShapeOnly), for loading one tensor at a time.
  void Allocate(const ModelConfig& cfg, DType dtype, bool storage = true);
  // GPT-2-style init: N(0, 0.02) for matrices, output projections (wo, w2) scaled by
  // 1/sqrt(2L), norms = 1, router N(0, 0.02), selection bias 0.
  void InitRandom(const ModelConfig& cfg, DType dtype, Rng& rng);

  // fn(name, tensor) for every defined tensor (selection biases included).
  template <typename Fn>
  void ForEachTensor(Fn&& fn) {
    Visit(fn, true);
  }
  // Trainable tensors (no selection bias).
  template <typename Fn>
  void ForEachParameter(Fn&& fn) {
    Visit(fn, false);
  }
  int64_t NumParams();

 private:
  template <typename Fn>
  void Visit(Fn& fn, bool with_bias) {
    fn(std::string("embed"), embed);
    for (size_t l = 0; l < layers.size(); ++l) {
      LayerWeights& L = layers[l];
      const std::string p = "layers." + std::to_string(l) + ".";
      auto opt = [&](const char* n, Tensor& t) {
        if (t.defined()) fn(p + n, t);
      };
      fn(p + "attn_norm", L.attn_norm);
      opt("wq", L.wq);
      opt("wk", L.wk);
      opt("wv", L.wv);
      opt("bq", L.bq);
      opt("bk", L.bk);
      opt("bv", L.bv);
      opt("q_norm", L.q_norm);
      opt("k_norm", L.k_norm);
      opt("wq_a", L.wq_a);
      opt("q_a_norm", L.q_a_norm);
      opt("wq_b", L.wq_b);
      opt("wkv_a", L.wkv_a);
      opt("kv_a_norm", L.kv_a_norm);
      opt("wkv_b", L.wkv_b);
      fn(p + "wo", L.wo);
      opt("bo", L.bo);
      fn(p + "ffn_norm", L.ffn_norm);
      if (L.is_moe) {
        auto sub = [&](std::string_view n, Tensor& t) { fn(p + "moe." + std::string(n), t); };
        if (with_bias) L.moe.ForEachTensor(sub);
        else L.moe.ForEachParameter(sub);
      } else if (L.ffn.defined()) {
        fn(p + "ffn.gate", L.ffn.gate);
        fn(p + "ffn.up", L.ffn.up);
        fn(p + "ffn.down", L.ffn.down);
      } else {
        fn(p + "w13", L.w13);
        fn(p + "w2", L.w2);
      }
    }
    fn(std::string("final_norm"), final_norm);
    if (lm_head.defined()) fn(std::string("lm_head"), lm_head);
  }
};

}  // namespace moe::model
