#include "moe/mixture/routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "moe/kernels/activations.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/topk.h"

namespace moe::mixture {

using kernels::Sigmoid;
using kernels::SoftmaxRow;
using kernels::TopKRow;

int64_t ExpertCapacity(const MoeConfig& cfg, int64_t num_tokens) {
  const double ideal = cfg.capacity_factor * static_cast<double>(num_tokens) *
                       static_cast<double>(cfg.top_k) / static_cast<double>(cfg.n_experts);
  if (cfg.router == RouterKind::kExpertChoice) {
    const int64_t c = static_cast<int64_t>(std::llround(ideal));
    return std::clamp<int64_t>(c, 1, num_tokens);
  }
  if (cfg.capacity_factor <= 0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(ideal - 1e-9)));
}

namespace {

// Token choice for one token: fills choice[0..K) with the selected experts in rank order.
// sel is scratch [E] holding score (+ bias); gs scratch [G]; gidx scratch [topk_groups].
template <typename T>
void SelectTokenChoice(const MoeConfig& cfg, const T* score, const T* bias, T* sel, T* gs,
                       int32_t* gidx, int32_t* choice) {
  const int64_t e_count = cfg.n_experts;
  for (int64_t e = 0; e < e_count; ++e) sel[e] = score[e] + (bias ? bias[e] : T(0));
  if (cfg.n_groups > 1) {
    const int64_t gsize = e_count / cfg.n_groups;
    for (int64_t g = 0; g < cfg.n_groups; ++g) {
      const T* s = sel + g * gsize;
      T best = s[0], second = -std::numeric_limits<T>::infinity();
      for (int64_t j = 1; j < gsize; ++j) {
        if (s[j] > best) {
          second = best;
          best = s[j];
        } else if (s[j] > second) {
          second = s[j];
        }
      }
      gs[g] = (cfg.group_score == GroupScore::kMax || gsize == 1) ? best : best + second;
    }
    TopKRow<T>(gs, cfg.n_groups, cfg.topk_groups, gidx);
    // Experts outside the chosen groups can never be selected.
    for (int64_t g = 0; g < cfg.n_groups; ++g) {
      bool keep = false;
      for (int64_t j = 0; j < cfg.topk_groups; ++j) keep |= gidx[j] == g;
      if (!keep)
        std::fill(sel + g * gsize, sel + (g + 1) * gsize, -std::numeric_limits<T>::infinity());
    }
  }
  TopKRow<T>(sel, e_count, cfg.top_k, choice);
}

template <typename T>
void BuildTokenIndex(RoutingPlan<T>& plan) {
  const int64_t n = plan.size();
  plan.token_offsets.assign(static_cast<size_t>(plan.num_tokens + 1), 0);
  for (int64_t i = 0; i < n; ++i) ++plan.token_offsets[static_cast<size_t>(plan.token[i] + 1)];
  for (int64_t t = 0; t < plan.num_tokens; ++t) plan.token_offsets[t + 1] += plan.token_offsets[t];
  plan.token_assign.resize(static_cast<size_t>(n));
  std::vector<int64_t> fill(plan.token_offsets.begin(), plan.token_offsets.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    plan.token_assign[static_cast<size_t>(fill[static_cast<size_t>(plan.token[i])]++)] =
        static_cast<int32_t>(i);
}

}  // namespace

template <typename T>
void RouteForward(const MoeConfig& cfg, CView<T> x, CView<T> w_router, CView<T> bias,
                  const RouteOptions& opts, RouterState<T>& st, RoutingPlan<T>& plan,
                  Context& ctx) {
  const int64_t nt = x.rows(), d = x.cols(), ne = cfg.n_experts, k = cfg.top_k;
  MOE_CHECK(d == cfg.d_model, "moe", "input has {} features, d_model is {}", d, cfg.d_model);
  MOE_CHECK(w_router.rows() == ne && w_router.cols() == d, "moe", "router weight {} expected [{},{}]",
            w_router.shape.str(), ne, d);
  // An undefined view has rank 0 and numel() 1, so check that it is there before its size.
  MOE_CHECK(!cfg.selection_bias || (bias.data != nullptr && bias.rank() == 1 && bias.numel() == ne),
            "moe", "selection_bias = true needs a bias of shape [{}] (n_experts), got {}", ne,
            bias.data == nullptr ? std::string("none") : bias.shape.str());
  MOE_CHECK(nt <= std::numeric_limits<int32_t>::max() / std::max<int64_t>(1, k), "moe",
            "{} tokens is too many for one call", nt);
  constexpr DType dt = DTypeOf<T>();

  // 1. Router input (optionally jittered) and logits, in the compute type (f32 or f64).
  CView<T> xr = x;
  if (opts.training && cfg.jitter > 0) {
    st.noise.Resize(dt, {nt, d});
    st.x_router.Resize(dt, {nt, d});
    Rng rng(opts.seed);
    auto nz = Mut<T>(st.noise);
    auto xj = Mut<T>(st.x_router);
    for (int64_t i = 0; i < nt * d; ++i) {
      nz[i] = static_cast<T>(rng.Uniform(1.0 - cfg.jitter, 1.0 + cfg.jitter));
      xj[i] = x[i] * nz[i];
    }
    xr = Const<T>(st.x_router);
  } else {
    st.noise = Tensor();
    st.x_router = Tensor();
  }
  st.logits.Resize(dt, {nt, ne});
  st.scores.Resize(dt, {nt, ne});
  st.lse.Resize(dt, {nt});
  auto logits = Mut<T>(st.logits);
  auto scores = Mut<T>(st.scores);
  auto lse = Mut<T>(st.lse);
  {
    // The router stays f32 in bf16 training (selective precision, as Switch Transformer): its
    // product is small and its rounding would move near-tie expert choices.
    ScopedMatmulPrecision f32(ctx, MatmulPrecision::kF32);
    kernels::LinearForward<T>(xr, w_router, logits, ctx);
  }

  // 2. Scores, logsumexp, probabilities for the balance loss and entropy (per token).
  std::vector<int> bad(static_cast<size_t>(ctx.threads()), -1);
  std::vector<double> ent_part(static_cast<size_t>(ctx.threads()), 0.0);
  std::vector<T> prob_part(static_cast<size_t>(ctx.threads() * ne), T(0));
  ParallelForRange(nt, ctx, [&](int64_t b, int64_t e, int w) {
    std::vector<T> tmp(static_cast<size_t>(ne));
    T* pp = prob_part.data() + w * ne;
    for (int64_t t = b; t < e; ++t) {
      const T* lg = logits.row(t);
      for (int64_t j = 0; j < ne; ++j)
        if (!std::isfinite(lg[j]) && bad[static_cast<size_t>(w)] < 0) bad[static_cast<size_t>(w)] = static_cast<int>(t);
      T* sc = scores.row(t);
      const T* p;
      if (cfg.score == ScoreFn::kSoftmax) {
        lse[t] = SoftmaxRow<T>(lg, sc, ne);
        p = sc;
      } else {
        lse[t] = SoftmaxRow<T>(lg, tmp.data(), ne);
        T sum = 0;
        for (int64_t j = 0; j < ne; ++j) {
          sc[j] = Sigmoid(lg[j]);
          sum += sc[j];
        }
        for (int64_t j = 0; j < ne; ++j) tmp[static_cast<size_t>(j)] = sc[j] / sum;
        p = tmp.data();
      }
      double h = 0;
      for (int64_t j = 0; j < ne; ++j) {
        pp[j] += p[j];
        if (p[j] > 0) h -= static_cast<double>(p[j]) * std::log(static_cast<double>(p[j]));
      }
      ent_part[static_cast<size_t>(w)] += h;
    }
  });
  for (int b : bad)
    MOE_CHECK(b < 0, "moe", "router logits of token {} are not finite (NaN/Inf in input or router)", b);

  // 3. Selection.
  const T* bias_ptr = cfg.selection_bias ? bias.data : nullptr;
  plan.num_tokens = nt;
  plan.num_experts = ne;
  plan.selected.assign(static_cast<size_t>(ne), 0);
  plan.expert_offsets.assign(static_cast<size_t>(ne + 1), 0);
  st.capacity = ExpertCapacity(cfg, nt);
  const T scale = static_cast<T>(cfg.route_scale);

  if (cfg.router == RouterKind::kTokenChoice) {
    st.choice.resize(static_cast<size_t>(nt * k));
    st.choice_pos.resize(static_cast<size_t>(nt * k));
    std::vector<T> wts(static_cast<size_t>(nt * k));  // gate of each choice
    ParallelForRange(nt, ctx, [&](int64_t b, int64_t e, int) {
      std::vector<T> sel(static_cast<size_t>(ne)), gs(static_cast<size_t>(cfg.n_groups));
      std::vector<int32_t> gidx(static_cast<size_t>(cfg.topk_groups));
      for (int64_t t = b; t < e; ++t) {
        int32_t* ch = st.choice.data() + t * k;
        SelectTokenChoice<T>(cfg, scores.row(t), bias_ptr, sel.data(), gs.data(), gidx.data(), ch);
        T sum = 0;
        for (int64_t j = 0; j < k; ++j) sum += scores.row(t)[ch[j]];
        const T norm = cfg.renormalize ? scale / sum : scale;
        for (int64_t j = 0; j < k; ++j) wts[static_cast<size_t>(t * k + j)] = scores.row(t)[ch[j]] * norm;
      }
    });
    // Capacity: assignments compete by rank first (all first choices before any second choice,
    // as GShard does), then by token order. Dropped ones contribute nothing.
    std::vector<int64_t> kept(static_cast<size_t>(ne), 0);
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t t = 0; t < nt; ++t) {
        const int32_t ex = st.choice[static_cast<size_t>(t * k + j)];
        ++plan.selected[static_cast<size_t>(ex)];
        if (st.capacity > 0 && kept[static_cast<size_t>(ex)] >= st.capacity) {
          st.choice_pos[static_cast<size_t>(t * k + j)] = -1;
        } else {
          ++kept[static_cast<size_t>(ex)];
          st.choice_pos[static_cast<size_t>(t * k + j)] = 0;  // kept; position assigned below
        }
      }
    }
    for (int64_t ex = 0; ex < ne; ++ex) plan.expert_offsets[ex + 1] = plan.expert_offsets[ex] + kept[ex];
    const int64_t n = plan.expert_offsets[ne];
    plan.dropped = nt * k - n;
    plan.token.resize(static_cast<size_t>(n));
    plan.expert.resize(static_cast<size_t>(n));
    plan.gate.resize(static_cast<size_t>(n));
    std::vector<int64_t> fill(plan.expert_offsets.begin(), plan.expert_offsets.end() - 1);
    for (int64_t t = 0; t < nt; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        const size_t c = static_cast<size_t>(t * k + j);
        if (st.choice_pos[c] < 0) continue;
        const int32_t ex = st.choice[c];
        const int64_t pos = fill[static_cast<size_t>(ex)]++;
        st.choice_pos[c] = static_cast<int32_t>(pos);
        plan.token[static_cast<size_t>(pos)] = static_cast<int32_t>(t);
        plan.expert[static_cast<size_t>(pos)] = ex;
        plan.gate[static_cast<size_t>(pos)] = wts[c];
      }
    }
  } else {
    // Expert choice: each expert takes its top-C tokens by (score + bias).
    const int64_t cap = st.capacity;
    st.choice.clear();
    st.choice_pos.clear();
    plan.token.resize(static_cast<size_t>(ne * cap));
    plan.expert.resize(static_cast<size_t>(ne * cap));
    plan.gate.resize(static_cast<size_t>(ne * cap));
    ParallelForRange(ne, ctx, [&](int64_t b, int64_t e, int) {
      std::vector<T> col(static_cast<size_t>(nt));
      for (int64_t ex = b; ex < e; ++ex) {
        for (int64_t t = 0; t < nt; ++t)
          col[static_cast<size_t>(t)] = scores.row(t)[ex] + (bias_ptr ? bias_ptr[ex] : T(0));
        int32_t* tok = plan.token.data() + ex * cap;
        TopKRow<T>(col.data(), nt, cap, tok);
        std::sort(tok, tok + cap);
        for (int64_t j = 0; j < cap; ++j) {
          plan.expert[static_cast<size_t>(ex * cap + j)] = static_cast<int32_t>(ex);
          plan.gate[static_cast<size_t>(ex * cap + j)] = scores.row(tok[j])[ex] * scale;
        }
      }
    });
    for (int64_t ex = 0; ex < ne; ++ex) {
      plan.expert_offsets[ex + 1] = plan.expert_offsets[ex] + cap;
      plan.selected[static_cast<size_t>(ex)] = cap;
    }
    plan.dropped = 0;
  }
  BuildTokenIndex(plan);

  // 4. Losses and entropy (fixed-order reductions).
  std::vector<double> prob_mean(static_cast<size_t>(ne), 0.0);
  double ent = 0;
  for (int w = 0; w < ctx.threads(); ++w) {
    for (int64_t j = 0; j < ne; ++j) prob_mean[static_cast<size_t>(j)] += static_cast<double>(prob_part[static_cast<size_t>(w * ne + j)]);
    ent += ent_part[static_cast<size_t>(w)];
  }
  st.entropy = nt > 0 ? ent / static_cast<double>(nt) : 0.0;
  st.aux_loss = 0;
  if (cfg.aux_loss_coef > 0 && nt > 0) {
    const double total = static_cast<double>(nt * k);
    double s = 0;
    for (int64_t j = 0; j < ne; ++j)
      s += static_cast<double>(plan.selected[static_cast<size_t>(j)]) / total *
           prob_mean[static_cast<size_t>(j)] / static_cast<double>(nt);
    st.aux_loss = cfg.aux_loss_coef * static_cast<double>(ne) * s;
  }
  st.z_loss = 0;
  if (cfg.z_loss_coef > 0 && nt > 0) {
    double s = 0;
    for (int64_t t = 0; t < nt; ++t) s += static_cast<double>(lse[t]) * static_cast<double>(lse[t]);
    st.z_loss = cfg.z_loss_coef * s / static_cast<double>(nt);
  }
}

template <typename T>
void RouteBackward(const MoeConfig& cfg, CView<T> x, CView<T> w_router, const RouterState<T>& st,
                   const RoutingPlan<T>& plan, const std::vector<T>& dgate, T loss_scale,
                   View<T> dx, View<T> dw_router, Context& ctx) {
  const int64_t nt = x.rows(), ne = cfg.n_experts, k = cfg.top_k;
  MOE_CHECK(static_cast<int64_t>(dgate.size()) == plan.size(), "moe", "dgate has {} values, plan {}",
            dgate.size(), plan.size());
  auto scores = Const<T>(st.scores);
  auto logits = Const<T>(st.logits);
  auto lse = Const<T>(st.lse);
  const T scale = static_cast<T>(cfg.route_scale);

  // f_i for the balance loss (no gradient flows through the counts).
  std::vector<T> dprob(static_cast<size_t>(ne), T(0));
  const bool aux = cfg.aux_loss_coef > 0 && nt > 0;
  if (aux) {
    for (int64_t j = 0; j < ne; ++j) {
      const double f = static_cast<double>(plan.selected[static_cast<size_t>(j)]) / static_cast<double>(nt * k);
      dprob[static_cast<size_t>(j)] = static_cast<T>(cfg.aux_loss_coef * static_cast<double>(ne) * f /
                                                     static_cast<double>(nt)) * loss_scale;
    }
  }
  const T zcoef = static_cast<T>(2.0 * cfg.z_loss_coef / std::max<double>(1.0, static_cast<double>(nt))) * loss_scale;

  Tensor dlogits_t(DTypeOf<T>(), {nt, ne});
  auto dlogits = dlogits_t.view<T>();
  ParallelForRange(nt, ctx, [&](int64_t b, int64_t e, int) {
    std::vector<T> ds(static_cast<size_t>(ne)), tmp(static_cast<size_t>(ne));
    for (int64_t t = b; t < e; ++t) {
      std::fill(ds.begin(), ds.end(), T(0));
      const T* sc = scores.row(t);
      // Gates -> scores.
      if (cfg.router == RouterKind::kTokenChoice) {
        const int32_t* ch = st.choice.data() + t * k;
        const int32_t* pos = st.choice_pos.data() + t * k;
        if (cfg.renormalize) {
          T sum = 0, dot = 0;
          for (int64_t j = 0; j < k; ++j) sum += sc[ch[j]];
          for (int64_t j = 0; j < k; ++j)
            if (pos[j] >= 0) dot += dgate[static_cast<size_t>(pos[j])] * sc[ch[j]] / sum;
          for (int64_t j = 0; j < k; ++j) {
            const T dg = pos[j] >= 0 ? dgate[static_cast<size_t>(pos[j])] : T(0);
            ds[static_cast<size_t>(ch[j])] += scale * (dg - dot) / sum;
          }
        } else {
          for (int64_t j = 0; j < k; ++j)
            if (pos[j] >= 0) ds[static_cast<size_t>(ch[j])] += scale * dgate[static_cast<size_t>(pos[j])];
        }
      } else {
        for (int64_t a = plan.token_offsets[t]; a < plan.token_offsets[t + 1]; ++a) {
          const int32_t n = plan.token_assign[static_cast<size_t>(a)];
          ds[static_cast<size_t>(plan.expert[static_cast<size_t>(n)])] += scale * dgate[static_cast<size_t>(n)];
        }
      }
      // Balance loss -> probabilities -> scores.
      if (aux) {
        if (cfg.score == ScoreFn::kSoftmax) {
          for (int64_t j = 0; j < ne; ++j) ds[static_cast<size_t>(j)] += dprob[static_cast<size_t>(j)];
        } else {
          T sum = 0;
          for (int64_t j = 0; j < ne; ++j) sum += sc[j];
          T dot = 0;
          for (int64_t j = 0; j < ne; ++j) dot += dprob[static_cast<size_t>(j)] * sc[j] / sum;
          for (int64_t j = 0; j < ne; ++j) ds[static_cast<size_t>(j)] += (dprob[static_cast<size_t>(j)] - dot) / sum;
        }
      }
      // Scores -> logits.
      T* dl = dlogits.row(t);
      if (cfg.score == ScoreFn::kSoftmax) {
        T dot = 0;
        for (int64_t j = 0; j < ne; ++j) dot += ds[static_cast<size_t>(j)] * sc[j];
        for (int64_t j = 0; j < ne; ++j) dl[j] = sc[j] * (ds[static_cast<size_t>(j)] - dot);
      } else {
        for (int64_t j = 0; j < ne; ++j) dl[j] = ds[static_cast<size_t>(j)] * sc[j] * (T(1) - sc[j]);
      }
      // z-loss: d/dlogits of beta/T * lse^2 = 2 beta/T * lse * softmax(logits).
      if (cfg.z_loss_coef > 0) {
        const T* lg = logits.row(t);
        for (int64_t j = 0; j < ne; ++j) dl[j] += zcoef * lse[t] * std::exp(lg[j] - lse[t]);
      }
    }
  });

  // logits = x_r * W_r^T with x_r = x * noise. f32 like the forward.
  ScopedMatmulPrecision f32(ctx, MatmulPrecision::kF32);
  if (st.noise.defined()) {
    Tensor dxr(DTypeOf<T>(), {nt, cfg.d_model});
    kernels::LinearBackward<T>(dlogits, Const<T>(st.x_router), w_router, dxr.view<T>(),
                               dw_router, ctx);
    auto nz = Const<T>(st.noise);
    auto g = dxr.view<const T>();
    for (int64_t i = 0; i < nt * cfg.d_model; ++i) dx[i] += g[i] * nz[i];
  } else {
    kernels::LinearBackward<T>(dlogits, x, w_router, dx, dw_router, ctx);
  }
}

#define MOE_INSTANTIATE(T)                                                                       \
  template void RouteForward<T>(const MoeConfig&, CView<T>, CView<T>, CView<T>,                  \
                                const RouteOptions&, RouterState<T>&, RoutingPlan<T>&, Context&); \
  template void RouteBackward<T>(const MoeConfig&, CView<T>, CView<T>, const RouterState<T>&,    \
                                 const RoutingPlan<T>&, const std::vector<T>&, T, View<T>,       \
                                 View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::mixture
