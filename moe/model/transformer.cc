#include "moe/model/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "moe/kernels/attention.h"
#include "moe/kernels/cross_entropy.h"
#include "moe/kernels/embedding.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/rmsnorm.h"
#include "moe/kernels/weight_matmul.h"
#include "moe/mixture/experts.h"

namespace moe::model {

namespace {

kernels::RopeConfig MakeRope(const ModelConfig& cfg) {
  cfg.Validate();
  kernels::RopeConfig rc;
  rc.rotary_dim = cfg.rope_dim();
  rc.theta = cfg.rope_theta;
  rc.scaling = cfg.rope_scaling;
  // Positions beyond the cached ones are computed on demand (same values).
  rc.cached_positions = std::min<int64_t>(cfg.max_seq, 16384);
  return rc;
}

template <typename T>
View<T> V(Tensor& t) {
  return t.view<T>();
}
template <typename T>
CView<T> C(const Tensor& t) {
  return t.view<T>();
}

// dst = a + b elementwise.
template <typename T>
void Add(CView<T> a, CView<T> b, View<T> dst, Context& ctx) {
  ParallelForRange(a.numel(), ctx, [&](int64_t lo, int64_t hi, int) {
    for (int64_t i = lo; i < hi; ++i) dst[i] = a[i] + b[i];
  }, 4096);
}

template <typename T>
void Copy(CView<T> src, View<T> dst) {
  std::memcpy(dst.data, src.data, static_cast<size_t>(src.numel()) * sizeof(T));
}

// y[t, :] += b for every row.
void AddBias(View<float> y, CView<float> b) {
  const int64_t m = y.cols();
  for (int64_t t = 0; t < y.rows(); ++t)
    for (int64_t j = 0; j < m; ++j) y.row(t)[j] += b[j];
}

void Clamp(View<float> y, float c) {
  for (int64_t i = 0; i < y.numel(); ++i) y[i] = std::clamp(y[i], -c, c);
}

// Dense SwiGLU FFN of a layer: f = W2 (silu(W1 n) * W3 n), with h = [W1 n | W3 n] and a saved
// (the inference layout `ffn` runs in f32 through SwiGluInfer).
template <typename T>
void DenseFfnForward(const LayerWeights& lw, int64_t fd, CView<T> n, Tensor& h, Tensor& a, View<T> f, Context& ctx) {
  const int64_t nt = n.rows();
  h.Resize(DTypeOf<T>(), {nt, 2 * fd});
  a.Resize(DTypeOf<T>(), {nt, fd});
  if (lw.ffn.defined()) {
    if constexpr (std::is_same_v<T, float>) {
      MOE_CHECK(lw.ffn.d_ff() == fd, "model", "dense FFN gate {} does not match d_ff {}",
                lw.ffn.gate.shape().str(), fd);
      mixture::SwiGluInfer({{nt, n.data, &lw.ffn, V<T>(h).data, V<T>(a).data, f.data}}, ctx);
      return;
    }
    Fail("model", "the dense FFN's inference layout (gate/up/down apart) runs in f32 only");
  }
  mixture::GroupedSwiGluForward<T>(
      {{nt, fd, n.data, C<T>(lw.w13).data, C<T>(lw.w2).data, V<T>(h).data, V<T>(a).data, f.data}}, n.cols(), ctx);
}

void CheckTrainable(const ModelConfig& c) {
  const std::string bad = c.TrainingUnsupported();
  MOE_CHECK(bad.empty(), "model",
            "training (Forward/Backward) does not support: {} (inference only)", bad);
}

// The first `width` floats of each (token, head) row of token-major src ([n][h] rows of ld
// floats) into head-major dst ([h][n][width]), and back.
void ToHeadMajor(const float* src, int64_t ld, float* dst, int64_t n, int64_t h, int64_t width) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t hh = 0; hh < h; ++hh)
      std::memcpy(dst + (hh * n + t) * width, src + (t * h + hh) * ld,
                  static_cast<size_t>(width) * sizeof(float));
}
void ToTokenMajor(const float* src, float* dst, int64_t ld, int64_t n, int64_t h, int64_t width) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t hh = 0; hh < h; ++hh)
      std::memcpy(dst + (t * h + hh) * ld, src + (hh * n + t) * width,
                  static_cast<size_t>(width) * sizeof(float));
}

// Rows [first, first + count) of w (whole rows: the same bytes per row for every dtype).
kernels::WeightRef WeightRows(const kernels::WeightRef& w, int64_t first, int64_t count) {
  kernels::WeightRef r = w;
  r.n = count;
  r.data = static_cast<const uint8_t*>(w.data) + first * (kernels::WeightBytes(w) / w.n);
  return r;
}

}  // namespace

Transformer::Transformer(const ModelConfig& cfg) : cfg_(cfg), rope_(MakeRope(cfg)) {
  causal_moe_ = cfg_.moe;
  if (causal_moe_.router == mixture::RouterKind::kExpertChoice) {
    causal_moe_.router = mixture::RouterKind::kTokenChoice;
    causal_moe_.capacity_factor = 0;
    causal_moe_.renormalize = false;
  }
}

const mixture::MoeConfig& Transformer::MoeFor(const RunOptions& opt) const {
  return opt.causal_routing ? causal_moe_ : cfg_.moe;
}

template <typename T>
double Transformer::Forward(const ModelWeights& w, const Batch& b, ForwardState<T>& st, Context& ctx,
                            const RunOptions& opt) const {
  const ModelConfig& c = cfg_;
  const int64_t nt = b.batch * b.seq, d = c.d_model, h = c.n_heads, hkv = c.n_kv_heads, dh = c.head_dim;
  MOE_CHECK(b.batch >= 1 && b.seq >= 1 && b.seq <= c.max_seq, "model",
            "batch of {} x {} tokens: need B >= 1 and 1 <= S <= max_seq ({})", b.batch, b.seq, c.max_seq);
  MOE_CHECK(static_cast<int64_t>(b.tokens.size()) == nt, "model", "batch has {} tokens, expected B*S = {}",
            b.tokens.size(), nt);
  MOE_CHECK(b.targets.empty() || static_cast<int64_t>(b.targets.size()) == nt, "model",
            "batch has {} targets, expected B*S = {}", b.targets.size(), nt);
  MOE_CHECK(static_cast<int64_t>(w.layers.size()) == c.n_layers, "model", "weights have {} layers, config {}",
            w.layers.size(), c.n_layers);
  CheckTrainable(c);
  constexpr DType dt = DTypeOf<T>();
  const mixture::MoeConfig& mcfg = MoeFor(opt);
  const kernels::RopePairing pairing = c.rope_pairing;

  st.positions.resize(static_cast<size_t>(nt));
  for (int64_t i = 0; i < nt; ++i) st.positions[static_cast<size_t>(i)] = static_cast<int32_t>(i % b.seq);
  const CView<int32_t> pos(st.positions.data(), {nt});
  const CView<int32_t> tokens(b.tokens.data(), {nt});

  st.layers.resize(static_cast<size_t>(c.n_layers));
  Tensor x(dt, {nt, d});
  kernels::EmbeddingForward<T>(C<T>(w.embed), tokens, V<T>(x), ctx);
  st.aux_loss = 0;
  const T scale = static_cast<T>(c.softmax_scale());
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    LayerActs<T>& a = st.layers[static_cast<size_t>(l)];
    a.x.Resize(dt, {nt, d});
    Copy<T>(C<T>(x), V<T>(a.x));
    a.n1.Resize(dt, {nt, d});
    a.rstd1.Resize(dt, {nt});
    kernels::RmsNormForward<T>(C<T>(a.x), C<T>(lw.attn_norm), static_cast<T>(c.norm_eps), V<T>(a.n1),
                               V<T>(a.rstd1), ctx);
    a.q.Resize(dt, {nt, h * dh});
    a.k.Resize(dt, {nt, hkv * dh});
    a.v.Resize(dt, {nt, hkv * dh});
    kernels::LinearForward<T>(C<T>(a.n1), C<T>(lw.wq), V<T>(a.q), ctx);
    kernels::LinearForward<T>(C<T>(a.n1), C<T>(lw.wk), V<T>(a.k), ctx);
    kernels::LinearForward<T>(C<T>(a.n1), C<T>(lw.wv), V<T>(a.v), ctx);
    const View<T> q3 = V<T>(a.q).Reshape({nt, h, dh}), k3 = V<T>(a.k).Reshape({nt, hkv, dh});
    kernels::RopeForward<T>(q3, pos, rope_, pairing, 0, q3, ctx);
    kernels::RopeForward<T>(k3, pos, rope_, pairing, 0, k3, ctx);
    a.att.Resize(dt, {nt, h * dh});
    a.lse.Resize(dt, {b.batch, h, b.seq});
    const int64_t bb = b.batch, ss = b.seq;
    kernels::AttentionForward<T>(C<T>(a.q).Reshape({bb, ss, h, dh}), C<T>(a.k).Reshape({bb, ss, hkv, dh}),
                                 C<T>(a.v).Reshape({bb, ss, hkv, dh}), 0, scale,
                                 V<T>(a.att).Reshape({bb, ss, h, dh}), V<T>(a.lse), ctx);
    a.x2.Resize(dt, {nt, d});
    kernels::LinearForward<T>(C<T>(a.att), C<T>(lw.wo), V<T>(a.x2), ctx);
    Add<T>(C<T>(a.x2), C<T>(a.x), V<T>(a.x2), ctx);
    a.n2.Resize(dt, {nt, d});
    a.rstd2.Resize(dt, {nt});
    kernels::RmsNormForward<T>(C<T>(a.x2), C<T>(lw.ffn_norm), static_cast<T>(c.norm_eps), V<T>(a.n2),
                               V<T>(a.rstd2), ctx);
    a.f.Resize(dt, {nt, d});
    if (lw.is_moe) {
      mixture::MoeForward<T>(mcfg, lw.moe, C<T>(a.n2), V<T>(a.f), a.moe, ctx,
                             {.training = opt.training, .seed = opt.seed * 1000003 + static_cast<uint64_t>(l)});
      st.aux_loss += a.moe.aux_total();
    } else {
      DenseFfnForward<T>(lw, c.dense_d_ff, C<T>(a.n2), a.h, a.a, V<T>(a.f), ctx);
    }
    Add<T>(C<T>(a.x2), C<T>(a.f), V<T>(x), ctx);
  }
  st.x_out = std::move(x);
  st.xn.Resize(dt, {nt, d});
  st.rstd.Resize(dt, {nt});
  kernels::RmsNormForward<T>(C<T>(st.x_out), C<T>(w.final_norm), static_cast<T>(c.norm_eps), V<T>(st.xn),
                             V<T>(st.rstd), ctx);
  const Tensor& head = w.lm_head.defined() ? w.lm_head : w.embed;
  st.logits.Resize(dt, {nt, c.vocab_size});
  kernels::LinearForward<T>(C<T>(st.xn), C<T>(head), V<T>(st.logits), ctx);
  st.ce_loss = 0;
  st.n_targets = 0;
  if (!b.targets.empty()) {
    st.row_loss.Resize(dt, {nt});
    st.ce_lse.Resize(dt, {nt});
    const kernels::CrossEntropyResult r = kernels::CrossEntropyForward<T>(
        C<T>(st.logits), CView<int32_t>(b.targets.data(), {nt}), V<T>(st.row_loss), V<T>(st.ce_lse), ctx);
    st.ce_loss = r.loss;
    st.n_targets = r.count;
  }
  return st.ce_loss + st.aux_loss;
}

template <typename T>
void Transformer::Backward(const ModelWeights& w, const Batch& b, ForwardState<T>& st, ModelWeights& grad,
                           Context& ctx, const RunOptions& opt, double loss_scale) const {
  const ModelConfig& c = cfg_;
  const int64_t nt = b.batch * b.seq, d = c.d_model, h = c.n_heads, hkv = c.n_kv_heads, dh = c.head_dim;
  MOE_CHECK(static_cast<int64_t>(b.targets.size()) == nt && st.logits.defined() && st.logits.shape()[0] == nt,
            "model", "Backward needs the Forward of the same batch, with targets");
  CheckTrainable(c);
  for (const LayerWeights& lw : w.layers)
    MOE_CHECK(!lw.ffn.defined() && !lw.moe.inference_layout(), "model",
              "these weights were loaded for inference (FFN matrices kept apart, e.g. a mapped GGUF "
              "file); training needs them in the training layout (w13 / w2)");
  constexpr DType dt = DTypeOf<T>();
  const mixture::MoeConfig& mcfg = MoeFor(opt);
  const CView<int32_t> pos(st.positions.data(), {nt});
  const T scale = static_cast<T>(c.softmax_scale());
  const kernels::RopePairing pairing = c.rope_pairing;

  // Head and final norm.
  st.dlogits.Resize(dt, {nt, c.vocab_size});
  const double ce_scale = st.n_targets > 0 ? loss_scale / static_cast<double>(st.n_targets) : 0.0;
  kernels::CrossEntropyBackward<T>(C<T>(st.logits), CView<int32_t>(b.targets.data(), {nt}), C<T>(st.ce_lse),
                                   static_cast<T>(ce_scale), V<T>(st.dlogits), ctx);
  Tensor& dhead = grad.lm_head.defined() ? grad.lm_head : grad.embed;
  const Tensor& head = w.lm_head.defined() ? w.lm_head : w.embed;
  st.dn.Resize(dt, {nt, d}, true);
  kernels::LinearBackward<T>(C<T>(st.dlogits), C<T>(st.xn), C<T>(head), V<T>(st.dn), V<T>(dhead), ctx);
  st.dx.Resize(dt, {nt, d}, true);
  kernels::RmsNormBackward<T>(C<T>(st.dn), C<T>(st.x_out), C<T>(w.final_norm), C<T>(st.rstd), V<T>(st.dx),
                              V<T>(grad.final_norm), ctx);

  for (int64_t l = c.n_layers - 1; l >= 0; --l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    LayerWeights& lg = grad.layers[static_cast<size_t>(l)];
    LayerActs<T>& a = st.layers[static_cast<size_t>(l)];
    // FFN: dx2 = dx + RMSNorm'(FFN'(dx)).
    st.dn.Resize(dt, {nt, d}, true);
    if (lw.is_moe) {
      mixture::MoeBackward<T>(mcfg, lw.moe, C<T>(a.n2), C<T>(st.dx), a.moe, lg.moe, V<T>(st.dn), ctx, loss_scale);
    } else {
      const int64_t fd = c.dense_d_ff;
      st.da.Resize(dt, {nt, fd});
      st.dh.Resize(dt, {nt, 2 * fd});
      mixture::GroupedSwiGluBackward<T>(
          {{nt, fd, C<T>(a.n2).data, C<T>(lw.w13).data, C<T>(lw.w2).data, V<T>(a.h).data, V<T>(a.a).data,
            V<T>(a.f).data}},
          {{C<T>(st.dx).data, V<T>(st.dn).data, V<T>(st.da).data, V<T>(st.dh).data, V<T>(lg.w13).data,
            V<T>(lg.w2).data}},
          d, ctx);
    }
    st.dx2.Resize(dt, {nt, d});
    Copy<T>(C<T>(st.dx), V<T>(st.dx2));
    kernels::RmsNormBackward<T>(C<T>(st.dn), C<T>(a.x2), C<T>(lw.ffn_norm), C<T>(a.rstd2), V<T>(st.dx2),
                                V<T>(lg.ffn_norm), ctx);
    // Attention: dx = dx2 + RMSNorm'(Wq' RoPE'(dq) + Wk' RoPE'(dk) + Wv' dv).
    st.datt.Resize(dt, {nt, h * dh}, true);
    kernels::LinearBackward<T>(C<T>(st.dx2), C<T>(a.att), C<T>(lw.wo), V<T>(st.datt), V<T>(lg.wo), ctx);
    st.dq.Resize(dt, {nt, h * dh}, true);
    st.dk.Resize(dt, {nt, hkv * dh}, true);
    st.dv.Resize(dt, {nt, hkv * dh}, true);
    const int64_t bb = b.batch, ss = b.seq;
    kernels::AttentionBackward<T>(C<T>(a.q).Reshape({bb, ss, h, dh}), C<T>(a.k).Reshape({bb, ss, hkv, dh}),
                                  C<T>(a.v).Reshape({bb, ss, hkv, dh}), C<T>(a.att).Reshape({bb, ss, h, dh}),
                                  C<T>(a.lse), C<T>(st.datt).Reshape({bb, ss, h, dh}), 0, scale,
                                  V<T>(st.dq).Reshape({bb, ss, h, dh}), V<T>(st.dk).Reshape({bb, ss, hkv, dh}),
                                  V<T>(st.dv).Reshape({bb, ss, hkv, dh}), ctx);
    // RoPE backward into fresh buffers (reuse datt for q: same size).
    st.datt.Resize(dt, {nt, h * dh}, true);
    kernels::RopeBackward<T>(C<T>(st.dq).Reshape({nt, h, dh}), pos, rope_, pairing, 0,
                             V<T>(st.datt).Reshape({nt, h, dh}), ctx);
    st.tmp.Resize(dt, {nt, hkv * dh}, true);
    kernels::RopeBackward<T>(C<T>(st.dk).Reshape({nt, hkv, dh}), pos, rope_, pairing, 0,
                             V<T>(st.tmp).Reshape({nt, hkv, dh}), ctx);
    st.dn.Resize(dt, {nt, d}, true);
    kernels::LinearBackward<T>(C<T>(st.datt), C<T>(a.n1), C<T>(lw.wq), V<T>(st.dn), V<T>(lg.wq), ctx);
    kernels::LinearBackward<T>(C<T>(st.tmp), C<T>(a.n1), C<T>(lw.wk), V<T>(st.dn), V<T>(lg.wk), ctx);
    kernels::LinearBackward<T>(C<T>(st.dv), C<T>(a.n1), C<T>(lw.wv), V<T>(st.dn), V<T>(lg.wv), ctx);
    Copy<T>(C<T>(st.dx2), V<T>(st.dx));
    kernels::RmsNormBackward<T>(C<T>(st.dn), C<T>(a.x), C<T>(lw.attn_norm), C<T>(a.rstd1), V<T>(st.dx),
                                V<T>(lg.attn_norm), ctx);
  }
  kernels::EmbeddingBackward<T>(C<T>(st.dx), CView<int32_t>(b.tokens.data(), {nt}), V<T>(grad.embed), ctx);
}

void KvCache::Allocate(const ModelConfig& cfg, int64_t max_tokens) {
  MOE_CHECK(max_tokens >= 1 && max_tokens <= cfg.max_seq, "model", "KV cache of {} tokens: must be in 1..max_seq ({})",
            max_tokens, cfg.max_seq);
  k.clear();
  v.clear();
  const MlaConfig& m = cfg.mla;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (m.enabled()) {  // the latent: keys [c | k_pe], values c (one head)
      k.push_back(Tensor::LazyZeros(DType::kF32, {max_tokens, 1, m.kv_lora_rank + m.qk_rope_head_dim}));
      v.push_back(Tensor::LazyZeros(DType::kF32, {max_tokens, 1, m.kv_lora_rank}));
    } else {
      // Pages become resident as each head's rows fill: a short chat holds little of a long context.
      k.push_back(Tensor::LazyZeros(DType::kF32, {cfg.n_kv_heads, max_tokens, cfg.head_dim}));
      v.push_back(Tensor::LazyZeros(DType::kF32, {cfg.n_kv_heads, max_tokens, cfg.v_head_dim()}));
    }
  }
  length = 0;
  capacity = max_tokens;
  committed = 0;
  latent = m.enabled();
}

void KvCache::Reserve(int64_t tokens) {
  tokens = std::min(tokens, capacity);
  if (tokens <= committed) return;
  // Each tensor is [outer, capacity, row] (head-major: outer = kv heads) or [capacity, 1, row]
  // (MLA's latent): positions [committed, tokens) of each outer slice.
  auto reserve = [&](Tensor& t) {
    const Shape& s = t.shape();
    const int64_t outer = latent ? 1 : s[0];
    const auto row = static_cast<size_t>(s[2]) * sizeof(float);
    for (int64_t o = 0; o < outer; ++o)
      t.Prefault(static_cast<size_t>(o * capacity + committed) * row,
                 static_cast<size_t>(tokens - committed) * row);
  };
  for (Tensor& t : k) reserve(t);
  for (Tensor& t : v) reserve(t);
  committed = tokens;
}

// Multi-head latent attention against the latent cache (DeepSeek-V2/V3). Each head's key is
// [k_nope, k_pe] with k_nope = W_uk c (W_uk: the head's Dn key rows of kv_b, [Dn, R]) and its value
// W_uv c (the head's Dv value rows), c = RMSNorm of the compressed kv. So q . k = (W_uk^T q_nope) .
// c
// + q_pe . k_pe, and the output is W_uv (sum_j p_j c_j): attention of H query heads over ONE cached
// head of keys [c | k_pe] (R + Dr) and values c (R), with kv_b applied to the queries before and
// to the outputs after. The cache holds 2R + Dr floats per token and layer instead of
// H (Dn + Dr + Dv), and each step reads that much per cached token.
void Transformer::InferLatentAttention(const LayerWeights& lw, int64_t n, int64_t pos0, Tensor& kt,
                                       Tensor& vt, InferState& st, Context& ctx) const {
  const ModelConfig& c = cfg_;
  const MlaConfig& m = c.mla;
  const int64_t h = c.n_heads, dk = c.head_dim, dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim,
                dv = m.v_head_dim, rkv = m.kv_lora_rank, lk = rkv + dr;
  constexpr DType dt = DType::kF32;
  MOE_CHECK(kt.shape().rank == 3 && kt.shape()[1] == 1 && kt.shape()[2] == lk &&
                vt.shape().rank == 3 && vt.shape()[2] == rkv,
            "model",
            "KV cache k {} v {} is not the latent cache of this MLA model ([T, 1, {}], [T, 1, {}])",
            kt.shape().str(), vt.shape().str(), lk, rkv);
  const CView<int32_t> pos(st.positions.data(), {n});
  const auto eps = static_cast<float>(m.latent_norm_eps);
  if (m.q_lora_rank > 0) {
    st.lat.Resize(dt, {n, m.q_lora_rank});
    kernels::WeightMatMul(C<float>(st.n), lw.wq_a, V<float>(st.lat), ctx);
    st.rstd_qk.Resize(dt, {n});
    kernels::RmsNormForward<float>(C<float>(st.lat), C<float>(lw.q_a_norm), eps, V<float>(st.lat),
                                   V<float>(st.rstd_qk), ctx);
    kernels::WeightMatMul(C<float>(st.lat), lw.wq_b, V<float>(st.q), ctx);
  } else {
    kernels::WeightMatMul(C<float>(st.n), lw.wq, V<float>(st.q), ctx);
  }
  const View<float> q3 = V<float>(st.q).Reshape({n, h, dk});
  kernels::RopeForward<float>(q3, pos, rope_, c.rope_pairing, c.rope_offset(), q3, ctx);

  // [c, k_pe] = x Wkv_a^T; c normalised, k_pe rotated (shared by all heads); both appended to the
  // cache: keys [c | k_pe], values c.
  st.lat.Resize(dt, {n, lk});
  kernels::WeightMatMul(C<float>(st.n), lw.wkv_a, V<float>(st.lat), ctx);
  st.lat_n.Resize(dt, {n, rkv});
  st.kpe.Resize(dt, {n, 1, dr});
  for (int64_t t = 0; t < n; ++t) {
    const float* src = C<float>(st.lat).row(t);
    std::memcpy(V<float>(st.lat_n).row(t), src, static_cast<size_t>(rkv) * sizeof(float));
    std::memcpy(V<float>(st.kpe).data + t * dr, src + rkv, static_cast<size_t>(dr) * sizeof(float));
  }
  st.rstd_qk.Resize(dt, {n});
  kernels::RmsNormForward<float>(C<float>(st.lat_n), C<float>(lw.kv_a_norm), eps,
                                 V<float>(st.lat_n), V<float>(st.rstd_qk), ctx);
  kernels::RopeForward<float>(C<float>(st.kpe), pos, rope_, c.rope_pairing, 0, V<float>(st.kpe),
                              ctx);
  float* kc = kt.view<float>().data + pos0 * lk;
  float* vc = vt.view<float>().data + pos0 * rkv;
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(kc + t * lk, C<float>(st.lat_n).row(t), static_cast<size_t>(rkv) * sizeof(float));
    std::memcpy(kc + t * lk + rkv, C<float>(st.kpe).data + t * dr,
                static_cast<size_t>(dr) * sizeof(float));
    std::memcpy(vc + t * rkv, C<float>(st.lat_n).row(t), static_cast<size_t>(rkv) * sizeof(float));
  }

  // Queries in the latent space: qc[t, head] = [q_nope W_uk, q_pe]. With the derived W_uk^T
  // (DeriveInferenceWeights) one Linear per head, all heads in one WeightMatMul; otherwise GEMMs
  // against f32 wkv_b's column blocks.
  const float* q = C<float>(st.q).data;
  st.kv.Resize(dt, {n, h * lk});
  float* qc = V<float>(st.kv).data;
  // Per-head contiguous scratch: [H][n][Dn] queries in, [H][n][R] latent queries out.
  st.lat_n.Resize(dt, {h * n, dn + rkv});
  float* qn = V<float>(st.lat_n).data;
  float* ql = qn + h * n * dn;
  ToHeadMajor(q, dk, qn, n, h, dn);
  if (lw.wkv_b_kt.defined()) {
    const kernels::WeightRef kt_all = kernels::AsWeight(lw.wkv_b_kt, "wkv_b_kt");
    MOE_CHECK(kt_all.n == h * rkv && kt_all.k == dn, "model", "MLA wkv_b_kt {} is not [{}, {}]",
              lw.wkv_b_kt.shape().str(), h * rkv, dn);
    std::vector<kernels::WeightProduct> products;
    for (int64_t hh = 0; hh < h; ++hh)
      products.push_back({qn + hh * n * dn, n, WeightRows(kt_all, hh * rkv, rkv), ql + hh * n * rkv});
    kernels::WeightMatMul(products, ctx);
  } else {
    MOE_CHECK(lw.wkv_b.dtype() == DType::kF32, "model",
              "MLA wkv_b is {} and wkv_b_kt is missing (DeriveInferenceWeights)",
              DTypeName(lw.wkv_b.dtype()));
    const float* kvb = C<float>(lw.wkv_b).data;
    ParallelFor(h, ctx, [&](int64_t hh, int) {
      kernels::Gemm<float>(false, false, n, rkv, dn, 1.0f, qn + hh * n * dn, dn,
                           kvb + hh * (dn + dv) * rkv, rkv, 0.0f, ql + hh * n * rkv, rkv);
    });
  }
  ToTokenMajor(ql, qc, lk, n, h, rkv);
  for (int64_t th = 0; th < n * h; ++th)
    std::memcpy(qc + th * lk + rkv, q + th * dk + dn, static_cast<size_t>(dr) * sizeof(float));
  // Attention of the H heads over the one latent head, then each head's output through its W_uv
  // rows of wkv_b (as stored: f32 or quantised), all heads in one WeightMatMul.
  const int64_t total = pos0 + n;
  st.lat.Resize(dt, {n, h * rkv});
  kernels::AttentionForward<float>(C<float>(st.kv).Reshape({1, n, h, lk}),
                                   CView<float>(kt.view<float>().data, {1, total, 1, lk}),
                                   CView<float>(vt.view<float>().data, {1, total, 1, rkv}), pos0,
                                   static_cast<float>(c.softmax_scale()),
                                   V<float>(st.lat).Reshape({1, n, h, rkv}), View<float>(), ctx,
                                   c.sliding_window);
  const float* olat = C<float>(st.lat).data;
  // [H][n][R] outputs in, [H][n][Dv] out (reusing the query scratch).
  st.lat_n.Resize(dt, {h * n, rkv + dv});
  float* on = V<float>(st.lat_n).data;
  float* oh = on + h * n * rkv;
  ToHeadMajor(olat, rkv, on, n, h, rkv);
  const kernels::WeightRef kvb_all = kernels::AsWeight(lw.wkv_b, "wkv_b");
  MOE_CHECK(kvb_all.n == h * (dn + dv) && kvb_all.k == rkv, "model", "MLA wkv_b {} is not [{}, {}]",
            lw.wkv_b.shape().str(), h * (dn + dv), rkv);
  std::vector<kernels::WeightProduct> outs;
  for (int64_t hh = 0; hh < h; ++hh)
    outs.push_back({on + hh * n * rkv, n, WeightRows(kvb_all, hh * (dn + dv) + dn, dv),
                    oh + hh * n * dv});
  kernels::WeightMatMul(outs, ctx);
  ToTokenMajor(oh, V<float>(st.att).data, dv, n, h, dv);
}

void Transformer::InferAttention(const LayerWeights& lw, int64_t layer, int64_t n, int64_t pos0,
                                 KvCache& cache, InferState& st, Context& ctx) const {
  const ModelConfig& c = cfg_;
  const int64_t d = c.d_model, h = c.n_heads, hkv = c.n_kv_heads, dk = c.head_dim,
                dv = c.v_head_dim();
  constexpr DType dt = DType::kF32;
  const CView<int32_t> pos(st.positions.data(), {n});
  Tensor& kt = cache.k[static_cast<size_t>(layer)];
  Tensor& vt = cache.v[static_cast<size_t>(layer)];
  st.q.Resize(dt, {n, h * dk});
  const View<float> q3 = V<float>(st.q).Reshape({n, h, dk});
  st.att.Resize(dt, {n, h * dv});
  if (c.mla.enabled()) {
    InferLatentAttention(lw, n, pos0, kt, vt, st, ctx);
  } else {
    // This call's keys and values, token-major: stored into the head-major cache after RoPE.
    st.kn.Resize(dt, {n, hkv * dk});
    st.vn.Resize(dt, {n, hkv * dv});
    const View<float> kview = V<float>(st.kn), vview = V<float>(st.vn);
    const kernels::WeightProduct qkv[] = {
        {C<float>(st.n).data, n, kernels::AsWeight(lw.wq, "wq"), V<float>(st.q).data},
        {C<float>(st.n).data, n, kernels::AsWeight(lw.wk, "wk"), kview.data},
        {C<float>(st.n).data, n, kernels::AsWeight(lw.wv, "wv"), vview.data}};
    MOE_CHECK(qkv[0].w.n == h * dk && qkv[1].w.n == hkv * dk && qkv[2].w.n == hkv * dv &&
                  qkv[0].w.k == d && qkv[1].w.k == d && qkv[2].w.k == d,
              "model", "q/k/v weights {} {} {} do not fit the config", lw.wq.shape().str(),
              lw.wk.shape().str(), lw.wv.shape().str());
    kernels::WeightMatMul(qkv, ctx);
    if (c.qkv_bias) {
      AddBias(V<float>(st.q), C<float>(lw.bq));
      AddBias(kview, C<float>(lw.bk));
      AddBias(vview, C<float>(lw.bv));
    }
    if (c.qk_norm != QkNorm::kNone) {
      // Per head: rows of Dh; full width: rows of H*Dh / Hkv*Dh (in place).
      const bool per_head = c.qk_norm == QkNorm::kPerHead;
      const View<float> qr = per_head ? V<float>(st.q).Reshape({n * h, dk}) : V<float>(st.q);
      const View<float> kr = per_head ? kview.Reshape({n * hkv, dk}) : kview;
      const auto eps = static_cast<float>(c.norm_eps);
      st.rstd_qk.Resize(dt, {qr.rows()});
      kernels::RmsNormForward<float>(qr, C<float>(lw.q_norm), eps, qr, V<float>(st.rstd_qk), ctx);
      st.rstd_qk.Resize(dt, {kr.rows()});
      kernels::RmsNormForward<float>(kr, C<float>(lw.k_norm), eps, kr, V<float>(st.rstd_qk), ctx);
    }
    if (c.clip_qkv > 0) {
      const auto cl = static_cast<float>(c.clip_qkv);
      Clamp(V<float>(st.q), cl);
      Clamp(kview, cl);
      Clamp(vview, cl);
    }
    const View<float> k3 = kview.Reshape({n, hkv, dk});
    kernels::RopeForward<float>(q3, pos, rope_, c.rope_pairing, 0, q3, ctx);
    kernels::RopeForward<float>(k3, pos, rope_, c.rope_pairing, 0, k3, ctx);
    const int64_t cap = kt.shape()[1];
    float* kc = kt.view<float>().data;
    float* vc = vt.view<float>().data;
    for (int64_t g = 0; g < hkv; ++g)
      for (int64_t i = 0; i < n; ++i) {
        std::memcpy(kc + (g * cap + pos0 + i) * dk, kview.row(i) + g * dk, sizeof(float) * dk);
        std::memcpy(vc + (g * cap + pos0 + i) * dv, vview.row(i) + g * dv, sizeof(float) * dv);
      }
    kernels::AttentionForward<float>(
        C<float>(st.q).Reshape({1, n, h, dk}), CView<float>(kc, {1, hkv, cap, dk}),
        CView<float>(vc, {1, hkv, cap, dv}), pos0, static_cast<float>(c.softmax_scale()),
        V<float>(st.att).Reshape({1, n, h, dv}), View<float>(), ctx, c.sliding_window,
        kernels::KvLayout::kHeadMajor);
  }
  st.x2.Resize(dt, {n, d});
  kernels::WeightMatMul(C<float>(st.att), lw.wo, V<float>(st.x2), ctx);
  if (c.o_bias) AddBias(V<float>(st.x2), C<float>(lw.bo));
}

void Transformer::Infer(const ModelWeights& w, const int32_t* tokens, int64_t n, KvCache& cache, InferState& st,
                        Context& ctx, bool all_logits) const {
  const ModelConfig& c = cfg_;
  const int64_t d = c.d_model, pos0 = cache.length;
  MOE_CHECK(n >= 1, "model", "Infer needs at least one token");
  MOE_CHECK(static_cast<int64_t>(cache.k.size()) == c.n_layers, "model", "KV cache is not allocated for this model");
  MOE_CHECK(pos0 + n <= cache.capacity, "model", "context full: {} cached + {} new tokens exceed the cache of {}",
            pos0, n, cache.capacity);
  for (int64_t i = 0; i < n; ++i)
    MOE_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, "model",
              "token {} = {} not in 0..vocab_size-1 ({})", i, tokens[i], c.vocab_size - 1);
  constexpr DType dt = DType::kF32;
  st.positions.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    st.positions[static_cast<size_t>(i)] = static_cast<int32_t>(pos0 + i);
  st.x.Resize(dt, {n, d});
  if (IsQuantized(w.embed.dtype())) {
    // A quantised table (GGUF token_embd): dequantise the rows of these tokens only.
    const kernels::QuantType qt = kernels::QuantTypeOf(w.embed.dtype());
    MOE_CHECK(w.embed.shape() == Shape({c.vocab_size, d}), "model", "embedding {} expected [{},{}]",
              w.embed.shape().str(), c.vocab_size, d);
    const int64_t row_bytes = kernels::QuantRowBytes(qt, d);
    const auto* table = static_cast<const uint8_t*>(w.embed.raw());
    for (int64_t i = 0; i < n; ++i)
      kernels::Dequantize(qt, table + tokens[i] * row_bytes, V<float>(st.x).row(i), d);
  } else {
    kernels::EmbeddingForward<float>(C<float>(w.embed), CView<int32_t>(tokens, {n}), V<float>(st.x),
                                     ctx);
  }
  const RunOptions causal{.training = false, .seed = 0, .causal_routing = true};
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    st.n.Resize(dt, {n, d});
    st.rstd.Resize(dt, {n});
    kernels::RmsNormForward<float>(C<float>(st.x), C<float>(lw.attn_norm), static_cast<float>(c.norm_eps),
                                   V<float>(st.n), V<float>(st.rstd), ctx);
    InferAttention(lw, l, n, pos0, cache, st, ctx);
    Add<float>(C<float>(st.x2), C<float>(st.x), V<float>(st.x2), ctx);
    kernels::RmsNormForward<float>(C<float>(st.x2), C<float>(lw.ffn_norm), static_cast<float>(c.norm_eps),
                                   V<float>(st.n), V<float>(st.rstd), ctx);
    st.f.Resize(dt, {n, d});
    if (lw.is_moe) {
      mixture::MoeForward<float>(MoeFor(causal), lw.moe, C<float>(st.n), V<float>(st.f), st.moe, ctx);
      if (st.on_route) st.on_route(l, st.moe.plan);
    } else {
      DenseFfnForward<float>(lw, c.dense_d_ff, C<float>(st.n), st.h, st.a, V<float>(st.f), ctx);
    }
    Add<float>(C<float>(st.x2), C<float>(st.f), V<float>(st.x), ctx);
  }
  cache.length = pos0 + n;
  const int64_t rows = all_logits ? n : 1;
  const CView<float> xs(C<float>(st.x).data + (n - rows) * d, {rows, d});
  st.n.Resize(dt, {rows, d});
  st.rstd.Resize(dt, {rows});
  kernels::RmsNormForward<float>(xs, C<float>(w.final_norm), static_cast<float>(c.norm_eps), V<float>(st.n),
                                 V<float>(st.rstd), ctx);
  const Tensor& head = w.lm_head.defined() ? w.lm_head : w.embed;
  st.logits.Resize(dt, {rows, c.vocab_size});
  kernels::WeightMatMul(C<float>(st.n), head, V<float>(st.logits), ctx);
}

template double Transformer::Forward<float>(const ModelWeights&, const Batch&, ForwardState<float>&, Context&,
                                            const RunOptions&) const;
template double Transformer::Forward<double>(const ModelWeights&, const Batch&, ForwardState<double>&, Context&,
                                             const RunOptions&) const;
template void Transformer::Backward<float>(const ModelWeights&, const Batch&, ForwardState<float>&, ModelWeights&,
                                           Context&, const RunOptions&, double) const;
template void Transformer::Backward<double>(const ModelWeights&, const Batch&, ForwardState<double>&, ModelWeights&,
                                            Context&, const RunOptions&, double) const;

}  // namespace moe::model
