#include "moe/model/transformer.h"

#include <cmath>
#include <cstring>

#include "moe/kernels/attention.h"
#include "moe/kernels/cross_entropy.h"
#include "moe/kernels/embedding.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/rmsnorm.h"
#include "moe/mixture/experts.h"

namespace moe::model {

namespace {

kernels::RopeConfig MakeRope(const ModelConfig& cfg) {
  cfg.Validate();
  kernels::RopeConfig rc;
  rc.rotary_dim = cfg.head_dim;
  rc.theta = cfg.rope_theta;
  rc.cached_positions = cfg.max_seq;
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
  constexpr DType dt = DTypeOf<T>();
  const mixture::MoeConfig& mcfg = MoeFor(opt);

  st.positions.resize(static_cast<size_t>(nt));
  for (int64_t i = 0; i < nt; ++i) st.positions[static_cast<size_t>(i)] = static_cast<int32_t>(i % b.seq);
  const CView<int32_t> pos(st.positions.data(), {nt});
  const CView<int32_t> tokens(b.tokens.data(), {nt});

  st.layers.resize(static_cast<size_t>(c.n_layers));
  Tensor x(dt, {nt, d});
  kernels::EmbeddingForward<T>(C<T>(w.embed), tokens, V<T>(x), ctx);
  st.aux_loss = 0;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
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
    kernels::RopeForward<T>(q3, pos, rope_, kernels::RopePairing::kHalf, 0, q3, ctx);
    kernels::RopeForward<T>(k3, pos, rope_, kernels::RopePairing::kHalf, 0, k3, ctx);
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
      const int64_t fd = c.dense_d_ff;
      a.h.Resize(dt, {nt, 2 * fd});
      a.a.Resize(dt, {nt, fd});
      mixture::GroupedSwiGluForward<T>({{nt, fd, C<T>(a.n2).data, C<T>(lw.w13).data, C<T>(lw.w2).data,
                                         V<T>(a.h).data, V<T>(a.a).data, V<T>(a.f).data}},
                                       d, ctx);
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
  constexpr DType dt = DTypeOf<T>();
  const mixture::MoeConfig& mcfg = MoeFor(opt);
  const CView<int32_t> pos(st.positions.data(), {nt});
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));

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
    kernels::RopeBackward<T>(C<T>(st.dq).Reshape({nt, h, dh}), pos, rope_, kernels::RopePairing::kHalf, 0,
                             V<T>(st.datt).Reshape({nt, h, dh}), ctx);
    st.tmp.Resize(dt, {nt, hkv * dh}, true);
    kernels::RopeBackward<T>(C<T>(st.dk).Reshape({nt, hkv, dh}), pos, rope_, kernels::RopePairing::kHalf, 0,
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
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    k.emplace_back(DType::kF32, Shape{max_tokens, cfg.n_kv_heads, cfg.head_dim});
    v.emplace_back(DType::kF32, Shape{max_tokens, cfg.n_kv_heads, cfg.head_dim});
  }
  length = 0;
  capacity = max_tokens;
}

void Transformer::Infer(const ModelWeights& w, const int32_t* tokens, int64_t n, KvCache& cache, InferState& st,
                        Context& ctx, bool all_logits) const {
  const ModelConfig& c = cfg_;
  const int64_t d = c.d_model, h = c.n_heads, hkv = c.n_kv_heads, dh = c.head_dim, pos0 = cache.length;
  MOE_CHECK(n >= 1, "model", "Infer needs at least one token");
  MOE_CHECK(static_cast<int64_t>(cache.k.size()) == c.n_layers, "model", "KV cache is not allocated for this model");
  MOE_CHECK(pos0 + n <= cache.capacity, "model", "context full: {} cached + {} new tokens exceed the cache of {}",
            pos0, n, cache.capacity);
  constexpr DType dt = DType::kF32;
  st.positions.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) st.positions[static_cast<size_t>(i)] = static_cast<int32_t>(pos0 + i);
  const CView<int32_t> pos(st.positions.data(), {n});
  st.x.Resize(dt, {n, d});
  kernels::EmbeddingForward<float>(C<float>(w.embed), CView<int32_t>(tokens, {n}), V<float>(st.x), ctx);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
  const RunOptions causal{.training = false, .seed = 0, .causal_routing = true};
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    st.n.Resize(dt, {n, d});
    st.rstd.Resize(dt, {n});
    kernels::RmsNormForward<float>(C<float>(st.x), C<float>(lw.attn_norm), static_cast<float>(c.norm_eps),
                                   V<float>(st.n), V<float>(st.rstd), ctx);
    st.q.Resize(dt, {n, h * dh});
    kernels::LinearForward<float>(C<float>(st.n), C<float>(lw.wq), V<float>(st.q), ctx);
    float* kc = cache.k[static_cast<size_t>(l)].view<float>().data + pos0 * hkv * dh;
    float* vc = cache.v[static_cast<size_t>(l)].view<float>().data + pos0 * hkv * dh;
    kernels::LinearForward<float>(C<float>(st.n), C<float>(lw.wk), View<float>(kc, {n, hkv * dh}), ctx);
    kernels::LinearForward<float>(C<float>(st.n), C<float>(lw.wv), View<float>(vc, {n, hkv * dh}), ctx);
    const View<float> q3 = V<float>(st.q).Reshape({n, h, dh});
    const View<float> k3(kc, {n, hkv, dh});
    kernels::RopeForward<float>(q3, pos, rope_, kernels::RopePairing::kHalf, 0, q3, ctx);
    kernels::RopeForward<float>(k3, pos, rope_, kernels::RopePairing::kHalf, 0, k3, ctx);
    st.att.Resize(dt, {n, h * dh});
    const int64_t total = pos0 + n;
    kernels::AttentionForward<float>(C<float>(st.q).Reshape({1, n, h, dh}),
                                     CView<float>(cache.k[static_cast<size_t>(l)].view<float>().data, {1, total, hkv, dh}),
                                     CView<float>(cache.v[static_cast<size_t>(l)].view<float>().data, {1, total, hkv, dh}),
                                     pos0, scale, V<float>(st.att).Reshape({1, n, h, dh}), View<float>(), ctx);
    st.x2.Resize(dt, {n, d});
    kernels::LinearForward<float>(C<float>(st.att), C<float>(lw.wo), V<float>(st.x2), ctx);
    Add<float>(C<float>(st.x2), C<float>(st.x), V<float>(st.x2), ctx);
    kernels::RmsNormForward<float>(C<float>(st.x2), C<float>(lw.ffn_norm), static_cast<float>(c.norm_eps),
                                   V<float>(st.n), V<float>(st.rstd), ctx);
    st.f.Resize(dt, {n, d});
    if (lw.is_moe) {
      mixture::MoeForward<float>(MoeFor(causal), lw.moe, C<float>(st.n), V<float>(st.f), st.moe, ctx);
      if (st.on_route) st.on_route(l, st.moe.plan);
    } else {
      const int64_t fd = c.dense_d_ff;
      st.h.Resize(dt, {n, 2 * fd});
      st.a.Resize(dt, {n, fd});
      mixture::GroupedSwiGluForward<float>({{n, fd, C<float>(st.n).data, C<float>(lw.w13).data, C<float>(lw.w2).data,
                                             V<float>(st.h).data, V<float>(st.a).data, V<float>(st.f).data}},
                                           d, ctx);
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
  kernels::LinearForward<float>(C<float>(st.n), C<float>(head), V<float>(st.logits), ctx);
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
