#include "moe/mixture/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "moe/kernels/activations.h"
#include "moe/mixture/experts.h"

namespace moe::mixture {

void MoeWeights::Allocate(const MoeConfig& cfg, DType dtype, bool storage) {
  auto make = [&](Shape shape) {
    return storage ? Tensor(dtype, shape) : Tensor::ShapeOnly(dtype, shape);
  };
  cfg.Validate();
  const int64_t d = cfg.d_model, f = cfg.d_ff, e = cfg.n_experts;
  router = make({e, d});
  bias = cfg.selection_bias ? make({e}) : Tensor();
  w13 = make({e, 2 * f, d});
  w2 = make({e, d, f});
  if (cfg.shared_d_ff > 0) {
    shared_w13 = make({2 * cfg.shared_d_ff, d});
    shared_w2 = make({d, cfg.shared_d_ff});
  } else {
    shared_w13 = Tensor();
    shared_w2 = Tensor();
  }
  shared_gate = cfg.shared_gate ? make({1, d}) : Tensor();
}

namespace {
template <typename T>
void FillNormal(Tensor& t, Rng& rng, double std) {
  auto v = t.view<T>();
  for (int64_t i = 0; i < v.numel(); ++i) v[i] = static_cast<T>(rng.Normal() * std);
}
}  // namespace

void MoeWeights::InitRandom(const MoeConfig& cfg, DType dtype, Rng& rng, double std) {
  Allocate(cfg, dtype);
  const double in_d = std > 0 ? std : 1.0 / std::sqrt(static_cast<double>(cfg.d_model));
  const double in_f = std > 0 ? std : 1.0 / std::sqrt(static_cast<double>(cfg.d_ff));
  const double in_fs = std > 0 ? std : 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, cfg.shared_d_ff)));
  auto fill = [&](Tensor& t, double s) {
    if (!t.defined()) return;
    if (t.dtype() == DType::kF64) FillNormal<double>(t, rng, s);
    else FillNormal<float>(t, rng, s);
  };
  fill(router, in_d);
  fill(w13, in_d);
  fill(w2, in_f);
  fill(shared_w13, in_d);
  fill(shared_w2, in_fs);
  fill(shared_gate, in_d);
}

double MoeForwardFlops(const MoeConfig& cfg, int64_t tokens, int64_t assignments) {
  const double d = static_cast<double>(cfg.d_model);
  double flops = 2.0 * static_cast<double>(tokens) * d * static_cast<double>(cfg.n_experts);
  flops += 2.0 * static_cast<double>(assignments) * 3.0 * d * static_cast<double>(cfg.d_ff);
  flops += 2.0 * static_cast<double>(tokens) * 3.0 * d * static_cast<double>(cfg.shared_d_ff);
  return flops;
}

namespace {

template <typename T>
void CheckWeights(const MoeConfig& cfg, const MoeWeights& w) {
  const int64_t d = cfg.d_model, f = cfg.d_ff, e = cfg.n_experts;
  constexpr DType dt = DTypeOf<T>();
  auto check = [&](const Tensor& t, const char* name, Shape want) {
    MOE_CHECK(t.defined(), "moe", "weight '{}' is missing (expected {})", name, want.str());
    MOE_CHECK(t.dtype() == dt, "moe", "weight '{}' is {}, expected {}", name, DTypeName(t.dtype()),
              DTypeName(dt));
    MOE_CHECK(t.shape() == want, "moe", "weight '{}' has shape {}, expected {}", name,
              t.shape().str(), want.str());
  };
  check(w.router, "router", {e, d});
  if (cfg.selection_bias) check(w.bias, "bias", {e});
  if (w.inference_layout()) {
    MOE_CHECK(dt == DType::kF32, "moe",
              "the inference layout (per-expert matrices) runs in f32 only, not {}", DTypeName(dt));
    MOE_CHECK(static_cast<int64_t>(w.experts.size()) == e, "moe", "{} expert matrices for {} experts",
              w.experts.size(), e);
    // Runs every forward: names are formatted only for the message of a failing check.
    auto mat = [&](const Tensor& t, const char* owner, int64_t expert, const char* part,
                   Shape want) {
      auto name = [&] {
        return expert < 0 ? fmt::format("{}.{}", owner, part)
                          : fmt::format("{}.{}.{}", owner, expert, part);
      };
      MOE_CHECK(t.defined(), "moe", "weight '{}' is missing (expected {})", name(), want.str());
      MOE_CHECK(t.dtype() == DType::kF32 || IsQuantized(t.dtype()), "moe",
                "weight '{}' is {}: expected F32 or a block-quantised type", name(),
                DTypeName(t.dtype()));
      MOE_CHECK(t.shape() == want, "moe", "weight '{}' has shape {}, expected {}", name(),
                t.shape().str(), want.str());
    };
    auto ffn = [&](const FfnMatrices& m, const char* owner, int64_t expert, int64_t width) {
      mat(m.gate, owner, expert, "gate", {width, d});
      mat(m.up, owner, expert, "up", {width, d});
      mat(m.down, owner, expert, "down", {d, width});
    };
    for (int64_t i = 0; i < e; ++i) ffn(w.experts[static_cast<size_t>(i)], "experts", i, f);
    if (cfg.shared_d_ff > 0) ffn(w.shared, "shared", -1, cfg.shared_d_ff);
    if (cfg.shared_gate) check(w.shared_gate, "shared_gate", {1, d});
    return;
  }
  check(w.w13, "w13", {e, 2 * f, d});
  check(w.w2, "w2", {e, d, f});
  if (cfg.shared_d_ff > 0) {
    check(w.shared_w13, "shared_w13", {2 * cfg.shared_d_ff, d});
    check(w.shared_w2, "shared_w2", {d, cfg.shared_d_ff});
  }
  if (cfg.shared_gate) check(w.shared_gate, "shared_gate", {1, d});
}

template <typename T>
CView<T> OptView(const Tensor& t) {
  return t.defined() ? t.view<T>() : CView<T>();
}

}  // namespace

template <typename T>
void MoeForward(const MoeConfig& cfg, const MoeWeights& w, CView<T> x, View<T> y, MoeState<T>& st,
                Context& ctx, const MoeForwardOptions& opts) {
  cfg.Validate();
  CheckWeights<T>(cfg, w);
  const int64_t nt = x.rows(), d = cfg.d_model, f = cfg.d_ff, fs = cfg.shared_d_ff;
  MOE_CHECK(x.rank() == 2 && x.cols() == d, "moe", "input x {} expected [T,{}] (d_model = {})",
            x.shape.str(), d, d);
  MOE_CHECK(y.rank() == 2 && y.rows() == nt && y.cols() == d, "moe", "output {} expected [{},{}]",
            y.shape.str(), nt, d);
  constexpr DType dt = DTypeOf<T>();

  RouteForward<T>(cfg, x, w.router.view<T>(), OptView<T>(w.bias), {opts.training, opts.seed},
                  st.router, st.plan, ctx);
  const RoutingPlan<T>& plan = st.plan;
  const int64_t n = plan.size();

  // Gather the rows of each expert (contiguous per expert). One token (decode) in the inference
  // layout needs no copies: every expert reads x itself, so its activations are quantised once
  // for all of them.
  const bool gather = !(w.inference_layout() && nt == 1);
  st.xp.Resize(dt, {gather ? n : 0, d});
  st.h.Resize(dt, {n, 2 * f});
  st.a.Resize(dt, {n, f});
  st.yp.Resize(dt, {n, d});
  auto xp = Mut<T>(st.xp);
  if (gather) {
    ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i)
        std::memcpy(xp.row(i), x.row(plan.token[static_cast<size_t>(i)]),
                    static_cast<size_t>(d) * sizeof(T));
    }, 64);
  }

  if (fs > 0 && nt > 0) {
    st.sh_h.Resize(dt, {nt, 2 * fs});
    st.sh_a.Resize(dt, {nt, fs});
    st.sh_y.Resize(dt, {nt, d});
  }
  if (w.inference_layout()) {
    if constexpr (std::is_same_v<T, float>) {
      std::vector<FfnInferGroup> ig;
      for (int64_t e = 0; e < cfg.n_experts; ++e) {
        const int64_t off = plan.expert_offsets[e], m = plan.count(e);
        if (m == 0) continue;
        ig.push_back({m, gather ? xp.data + off * d : x.data, &w.experts[static_cast<size_t>(e)],
                      Mut<T>(st.h).data + off * 2 * f, Mut<T>(st.a).data + off * f,
                      Mut<T>(st.yp).data + off * d});
      }
      if (fs > 0 && nt > 0) {
        ig.push_back({nt, x.data, &w.shared, Mut<T>(st.sh_h).data, Mut<T>(st.sh_a).data,
                      Mut<T>(st.sh_y).data});
      }
      SwiGluInfer(ig, ctx);
    }
  } else {
    std::vector<FfnGroup<T>> groups;
    const T* w13 = w.w13.view<T>().data;
    const T* w2 = w.w2.view<T>().data;
    for (int64_t e = 0; e < cfg.n_experts; ++e) {
      const int64_t off = plan.expert_offsets[e], m = plan.count(e);
      if (m == 0) continue;
      groups.push_back({m, f, xp.data + off * d, w13 + e * 2 * f * d, w2 + e * d * f,
                        Mut<T>(st.h).data + off * 2 * f, Mut<T>(st.a).data + off * f,
                        Mut<T>(st.yp).data + off * d});
    }
    if (fs > 0 && nt > 0) {
      groups.push_back({nt, fs, x.data, w.shared_w13.view<T>().data, w.shared_w2.view<T>().data,
                        Mut<T>(st.sh_h).data, Mut<T>(st.sh_a).data, Mut<T>(st.sh_y).data});
    }
    GroupedSwiGluForward<T>(groups, d, ctx);
  }

  // Shared expert gate.
  if (cfg.shared_gate) {
    st.sg.Resize(dt, {nt});
    auto sg = Mut<T>(st.sg);
    const T* wg = w.shared_gate.view<T>().data;
    ParallelFor(nt, ctx, [&](int64_t t, int) {
      T z = 0;
      const T* xr = x.row(t);
      for (int64_t j = 0; j < d; ++j) z += xr[j] * wg[j];
      sg[t] = kernels::Sigmoid(z);
    });
  }

  // Combine: y[t] = sum over the token's assignments of gate * expert output (+ shared).
  auto yp = Const<T>(st.yp);
  ParallelForRange(nt, ctx, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      T* yr = y.row(t);
      if (fs > 0) {
        const T s = cfg.shared_gate ? Const<T>(st.sg)[t] : T(1);
        const T* sy = Const<T>(st.sh_y).row(t);
        for (int64_t j = 0; j < d; ++j) yr[j] = s * sy[j];
      } else {
        std::fill(yr, yr + d, T(0));
      }
      for (int64_t a = plan.token_offsets[t]; a < plan.token_offsets[t + 1]; ++a) {
        const int32_t i = plan.token_assign[static_cast<size_t>(a)];
        const T g = plan.gate[static_cast<size_t>(i)];
        const T* src = yp.row(i);
        for (int64_t j = 0; j < d; ++j) yr[j] += g * src[j];
      }
    }
  }, 16);

  // Statistics.
  MoeStats& s = st.stats;
  s.tokens_per_expert.resize(static_cast<size_t>(cfg.n_experts));
  for (int64_t e = 0; e < cfg.n_experts; ++e) s.tokens_per_expert[static_cast<size_t>(e)] = plan.count(e);
  s.selected_per_expert = plan.selected;
  s.assignments = n;
  s.dropped = plan.dropped;
  s.max_load = static_cast<double>(*std::max_element(s.tokens_per_expert.begin(), s.tokens_per_expert.end()));
  s.mean_load = static_cast<double>(n) / static_cast<double>(cfg.n_experts);
  s.imbalance = s.mean_load > 0 ? s.max_load / s.mean_load : 0.0;
  s.entropy = st.router.entropy;
  s.aux_loss = st.router.aux_loss;
  s.z_loss = st.router.z_loss;
}

template <typename T>
void MoeBackward(const MoeConfig& cfg, const MoeWeights& w, CView<T> x, CView<T> dy,
                 MoeState<T>& st, MoeWeights& grad, View<T> dx, Context& ctx, double loss_scale) {
  MOE_CHECK(!w.inference_layout(), "moe",
            "the backward needs the training layout (w13/w2); these weights hold per-expert "
            "inference matrices (e.g. a quantised or mapped GGUF model)");
  CheckWeights<T>(cfg, w);
  CheckWeights<T>(cfg, grad);
  const int64_t nt = x.rows(), d = cfg.d_model, f = cfg.d_ff, fs = cfg.shared_d_ff;
  const RoutingPlan<T>& plan = st.plan;
  const int64_t n = plan.size();
  MOE_CHECK(plan.num_tokens == nt, "moe", "backward for {} tokens after a forward of {}", nt,
            plan.num_tokens);
  MOE_CHECK(dy.shape == x.shape && dx.shape == x.shape, "moe", "dy {} / dx {} expected {}",
            dy.shape.str(), dx.shape.str(), x.shape.str());
  constexpr DType dt = DTypeOf<T>();

  // Combine backward: d(expert out) = gate * dy[token], d(gate) = dy[token] . expert out.
  Tensor& dyp_t = st.dyp;
  dyp_t.Resize(dt, {n, d});
  auto dyp = dyp_t.view<T>();
  auto yp = Const<T>(st.yp);
  std::vector<T> dgate(static_cast<size_t>(n));
  ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const T* g = dy.row(plan.token[static_cast<size_t>(i)]);
      const T gate = plan.gate[static_cast<size_t>(i)];
      const T* o = yp.row(i);
      T* out = dyp.row(i);
      T dot = 0;
      for (int64_t j = 0; j < d; ++j) {
        out[j] = gate * g[j];
        dot += g[j] * o[j];
      }
      dgate[static_cast<size_t>(i)] = dot;
    }
  }, 16);

  // Shared expert gate backward and the shared expert's dy.
  Tensor &dys_t = st.dys, &dxs_t = st.dxs, &das_t = st.das, &dhs_t = st.dhs;
  if (fs > 0) {
    dys_t.Resize(dt, {nt, d});
    dxs_t.Resize(dt, {nt, d});
    das_t.Resize(dt, {nt, fs});
    dhs_t.Resize(dt, {nt, 2 * fs});
    auto dys = dys_t.view<T>();
    if (cfg.shared_gate) {
      auto sg = Const<T>(st.sg);
      auto sy = Const<T>(st.sh_y);
      const T* wg = w.shared_gate.view<const T>().data;
      std::vector<T> dz(static_cast<size_t>(nt));
      ParallelFor(nt, ctx, [&](int64_t t, int) {
        T dot = 0;
        for (int64_t j = 0; j < d; ++j) {
          dys.row(t)[j] = sg[t] * dy.row(t)[j];
          dot += dy.row(t)[j] * sy.row(t)[j];
        }
        dz[static_cast<size_t>(t)] = dot * sg[t] * (T(1) - sg[t]);
        for (int64_t j = 0; j < d; ++j) dx.row(t)[j] += dz[static_cast<size_t>(t)] * wg[j];
      });
      T* dwg = grad.shared_gate.view<T>().data;
      for (int64_t t = 0; t < nt; ++t)
        for (int64_t j = 0; j < d; ++j) dwg[j] += dz[static_cast<size_t>(t)] * x.row(t)[j];
    } else {
      std::memcpy(dys.data, dy.data, static_cast<size_t>(nt * d) * sizeof(T));
    }
  }

  // Experts backward.
  Tensor &dxp_t = st.dxp, &da_t = st.da, &dh_t = st.dh;
  dxp_t.Resize(dt, {n, d});
  da_t.Resize(dt, {n, f});
  dh_t.Resize(dt, {n, 2 * f});
  std::vector<FfnGroup<T>> groups;
  std::vector<FfnGroupGrad<T>> grads;
  T* gw13 = grad.w13.view<T>().data;
  T* gw2 = grad.w2.view<T>().data;
  const T* w13 = w.w13.view<T>().data;
  const T* w2 = w.w2.view<T>().data;
  for (int64_t e = 0; e < cfg.n_experts; ++e) {
    const int64_t off = plan.expert_offsets[e], m = plan.count(e);
    if (m == 0) continue;
    groups.push_back({m, f, Mut<T>(st.xp).data + off * d, w13 + e * 2 * f * d, w2 + e * d * f,
                      Mut<T>(st.h).data + off * 2 * f, Mut<T>(st.a).data + off * f,
                      Mut<T>(st.yp).data + off * d});
    grads.push_back({dyp.data + off * d, dxp_t.view<T>().data + off * d, da_t.view<T>().data + off * f,
                     dh_t.view<T>().data + off * 2 * f, gw13 + e * 2 * f * d, gw2 + e * d * f});
  }
  if (fs > 0 && nt > 0) {
    groups.push_back({nt, fs, x.data, w.shared_w13.view<T>().data, w.shared_w2.view<T>().data,
                      Mut<T>(st.sh_h).data, Mut<T>(st.sh_a).data, Mut<T>(st.sh_y).data});
    grads.push_back({dys_t.view<T>().data, dxs_t.view<T>().data, das_t.view<T>().data,
                     dhs_t.view<T>().data, grad.shared_w13.view<T>().data,
                     grad.shared_w2.view<T>().data});
  }
  GroupedSwiGluBackward<T>(groups, grads, d, ctx);

  // Scatter the experts' input gradients back to tokens (per token, fixed order).
  auto dxp = dxp_t.view<const T>();
  ParallelForRange(nt, ctx, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      T* out = dx.row(t);
      if (fs > 0) {
        const T* s = dxs_t.view<const T>().row(t);
        for (int64_t j = 0; j < d; ++j) out[j] += s[j];
      }
      for (int64_t a = plan.token_offsets[t]; a < plan.token_offsets[t + 1]; ++a) {
        const T* src = dxp.row(plan.token_assign[static_cast<size_t>(a)]);
        for (int64_t j = 0; j < d; ++j) out[j] += src[j];
      }
    }
  }, 16);

  // Router (gates, balance loss, z-loss).
  RouteBackward<T>(cfg, x, w.router.view<T>(), st.router, plan, dgate, static_cast<T>(loss_scale),
                   dx, grad.router.view<T>(), ctx);
}

void UpdateSelectionBias(const MoeConfig& cfg, const std::vector<int64_t>& selected, Tensor& bias) {
  MOE_CHECK(cfg.selection_bias, "moe", "UpdateSelectionBias needs selection_bias = true");
  MOE_CHECK(static_cast<int64_t>(selected.size()) == cfg.n_experts && bias.numel() == cfg.n_experts,
            "moe", "bias update with {} loads and {} biases for {} experts", selected.size(),
            bias.numel(), cfg.n_experts);
  double mean = 0;
  for (int64_t v : selected) mean += static_cast<double>(v);
  mean /= static_cast<double>(cfg.n_experts);
  auto update = [&](auto b) {
    for (int64_t e = 0; e < cfg.n_experts; ++e) {
      const double load = static_cast<double>(selected[static_cast<size_t>(e)]);
      const double sign = load < mean ? 1.0 : (load > mean ? -1.0 : 0.0);
      b[e] += static_cast<std::remove_reference_t<decltype(b[e])>>(cfg.bias_update_rate * sign);
    }
  };
  if (bias.dtype() == DType::kF64) update(bias.view<double>());
  else update(bias.view<float>());
}

#define MOE_INSTANTIATE(T)                                                                        \
  template void MoeForward<T>(const MoeConfig&, const MoeWeights&, CView<T>, View<T>,            \
                              MoeState<T>&, Context&, const MoeForwardOptions&);                  \
  template void MoeBackward<T>(const MoeConfig&, const MoeWeights&, CView<T>, CView<T>,          \
                               MoeState<T>&, MoeWeights&, View<T>, Context&, double);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::mixture
