// The decoder-only MoE transformer, forward and backward written out explicitly:
//   x0 = embed[tokens]
//   per layer: x2 = x + Wo · Attn(RoPE(Wq·n1), RoPE(Wk·n1), Wv·n1),  n1 = RMSNorm(x)
//              x' = x2 + FFN(n2),  n2 = RMSNorm(x2),  FFN = MoE layer or dense SwiGLU
//   logits = Head · RMSNorm(x_L);  loss = mean CE over targets + sum of the MoE layers' aux losses
// RoPE pairs dims as Hugging Face's rotate_half by default, so a checkpoint we write runs unchanged
// in MixtralForCausalLM. Templated on float (training, inference) and double (gradient checks).
// Inference (Infer) also runs the attention options of published architectures (q/k/v/o biases,
// q/k RMSNorm, clip_qkv, partial rotary, multi-head latent attention); Forward/Backward throw a
// moe::Error naming them (ModelConfig::TrainingUnsupported).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/tensor.h"
#include "moe/kernels/rope.h"
#include "moe/mixture/moe_layer.h"
#include "moe/model/config.h"
#include "moe/model/weights.h"

namespace moe::model {

// B sequences of S tokens, flattened to T = B*S rows; positions restart at 0 in each sequence.
struct Batch {
  int64_t batch = 0;              // B
  int64_t seq = 0;                // S
  std::vector<int32_t> tokens;    // [B*S]
  std::vector<int32_t> targets;   // [B*S], -1 = no loss at this position
};

template <typename T>
struct LayerActs {
  Tensor x;            // [T,D] layer input
  Tensor n1, rstd1;    // [T,D], [T]
  Tensor q, k, v;      // [T,H,Dh], [T,Hkv,Dh], [T,Hkv,Dh] (q, k after RoPE)
  Tensor att, lse;     // [T,H,Dh], [B,H,S] attention's saved log-sum-exp per query row
  Tensor x2;           // [T,D] after the attention residual
  Tensor n2, rstd2;    // [T,D], [T]
  Tensor h, a, f;      // dense FFN: [T,2Fd], [T,Fd]; f [T,D] FFN output
  mixture::MoeState<T> moe;
};

struct RunOptions {
  bool training = false;  // router jitter; expert choice stays expert choice
  uint64_t seed = 0;      // jitter noise stream
  // Expert choice is not causal (an expert picks among all tokens of the batch, future ones
  // included). When generating, or when this is set, expert-choice layers route as token choice
  // with the same router: softmax scores, top-K, gates = scores (see docs/DESIGN.md).
  bool causal_routing = false;
};

template <typename T>
struct ForwardState {
  std::vector<LayerActs<T>> layers;
  std::vector<int32_t> positions;  // [T]
  Tensor x_out;                    // [T,D] final residual
  Tensor xn, rstd;                 // final norm
  Tensor logits;                   // [T,V]
  Tensor row_loss;                 // [T] cross-entropy per row (0 where no target)
  Tensor ce_lse;                   // [T] logsumexp of each logits row (saved)
  double ce_loss = 0;              // mean over targets
  double aux_loss = 0;             // sum over MoE layers (already weighted by the coefficients)
  int64_t n_targets = 0;
  // Backward scratch.
  Tensor dx, dx2, dn, dq, dk, dv, datt, dh, da, dlogits, tmp;
};

// Keys and values of one sequence, per layer, head-major (kernels::KvLayout::kHeadMajor: decode
// streams each kv head's keys and values sequentially): k [Hkv, max_tokens, Dh] (after RoPE),
// v [Hkv, max_tokens, Dv]. MLA caches the latent instead: k [max_tokens, 1, R + Dr] (the
// normalised compressed kv c and the rotated k_pe), v [max_tokens, 1, R] (c), one head, so either
// layout; see Transformer::InferLatentAttention.
struct KvCache {
  std::vector<Tensor> k, v;
  int64_t length = 0;      // tokens cached
  int64_t capacity = 0;    // max_tokens
  int64_t committed = 0;   // positions whose pages are resident (Reserve)
  bool latent = false;     // MLA: [capacity, 1, width] per layer; else [kv heads, capacity, dim]
  void Allocate(const ModelConfig& cfg, int64_t max_tokens);
  void Clear() { length = 0; }
  // Makes the rows of positions [0, min(tokens, capacity)) resident in every layer now: the cache
  // is mapped lazily, and a decode step that reaches a new page of each kv head's rows would
  // otherwise stop for a page fault per head and layer.
  void Reserve(int64_t tokens);
};

// Inference scratch of one sequence, reused across calls.
struct InferState {
  Tensor x, n, q, att, x2, f, h, a, rstd, logits;
  Tensor kn, vn;                        // this call's keys and values [T, Hkv * D]
  Tensor rstd_qk, lat, lat_n, kv, kpe;  // q/k norm and MLA scratch
  std::vector<int32_t> positions;
  mixture::MoeState<float> moe;
  // Called after each MoE layer with the layer index and its routing plan (routing traces).
  std::function<void(int64_t layer, const mixture::RoutingPlan<float>& plan)> on_route;
};

class Transformer {
 public:
  explicit Transformer(const ModelConfig& cfg);
  const ModelConfig& config() const { return cfg_; }
  const kernels::RopeTable& rope() const { return rope_; }
  // The MoE config a layer runs with under these options (expert choice -> token choice when
  // causal routing is asked for).
  const mixture::MoeConfig& MoeFor(const RunOptions& opt) const;

  // Returns the objective: mean cross-entropy + aux losses. Fills st for Backward.
  template <typename T>
  double Forward(const ModelWeights& w, const Batch& b, ForwardState<T>& st, Context& ctx,
                 const RunOptions& opt = {}) const;
  // Inference: runs `tokens` at positions cache.length.., appends their keys/values to the cache
  // and writes st.logits: [n, V] when all_logits, else [1, V] for the last token. Expert-choice
  // layers route causally (token choice, see RunOptions::causal_routing).
  void Infer(const ModelWeights& w, const int32_t* tokens, int64_t n, KvCache& cache, InferState& st,
             Context& ctx, bool all_logits = false) const;

  // Accumulates loss_scale * d(objective)/d(weights) into grad (allocated like w, zeroed by the
  // caller; selection biases get nothing).
  template <typename T>
  void Backward(const ModelWeights& w, const Batch& b, ForwardState<T>& st, ModelWeights& grad,
                Context& ctx, const RunOptions& opt = {}, double loss_scale = 1.0) const;

 private:
  // Attention of one layer for inference: reads st.n [n, D], appends k/v to the cache, writes the
  // projected output (before the residual) to st.x2 [n, D].
  void InferAttention(const LayerWeights& lw, int64_t layer, int64_t n, int64_t pos0,
                      KvCache& cache, InferState& st, Context& ctx) const;
  // MLA against the latent cache kt [cap, 1, R + Dr], vt [cap, 1, R]: writes st.att [n, H*Dv].
  void InferLatentAttention(const LayerWeights& lw, int64_t n, int64_t pos0, Tensor& kt, Tensor& vt,
                            InferState& st, Context& ctx) const;

  ModelConfig cfg_;
  kernels::RopeTable rope_;
  mixture::MoeConfig causal_moe_;
};

}  // namespace moe::model
