#include "moe/testing/reference_transformer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace moe::testing {
namespace {

size_t Idx(int64_t i) { return static_cast<size_t>(i); }

double Mscale(double factor, double k) {
  if (factor <= 1.0) return 1.0;
  return 1.0 + 0.1 * k * std::log(factor);
}

}  // namespace

// ---- RoPE --------------------------------------------------------------------------------------

std::vector<double> RefRopeInvFreq(int64_t rotary_dim, double theta,
                                   const kernels::RopeScaling& sc) {
  using kernels::RopeScalingKind;
  const double r = static_cast<double>(rotary_dim);
  const double pi = std::numbers::pi;
  std::vector<double> out;
  for (int64_t i = 0; 2 * i < rotary_dim; ++i) {
    // theta^(-2i/r) as exp(-2i ln(theta) / r).
    const double base = std::exp(-2.0 * static_cast<double>(i) * std::log(theta) / r);
    double f = base;
    if (sc.kind == RopeScalingKind::kLinear) {
      f = base / sc.factor;
    } else if (sc.kind == RopeScalingKind::kYarn) {
      // Dim index at which a frequency completes `turns` rotations over the original context.
      auto dim_for_turns = [&](double turns) {
        const double l = static_cast<double>(sc.original_max_position_embeddings);
        return r * std::log(l / (2.0 * pi * turns)) / (2.0 * std::log(theta));
      };
      const double lo = std::max(0.0, std::floor(dim_for_turns(sc.beta_fast)));
      double hi = std::min(r - 1.0, std::ceil(dim_for_turns(sc.beta_slow)));
      if (hi == lo) hi = lo + 0.001;
      double ramp = (static_cast<double>(i) - lo) / (hi - lo);
      ramp = ramp < 0 ? 0 : (ramp > 1 ? 1 : ramp);
      const double extrapolate = 1.0 - ramp;  // share of the unscaled frequency
      f = extrapolate * base + (1.0 - extrapolate) * (base / sc.factor);
    } else if (sc.kind == RopeScalingKind::kLlama3) {
      const double l = static_cast<double>(sc.original_max_position_embeddings);
      const double wavelength = 2.0 * pi / base;
      if (wavelength > l / sc.low_freq_factor) {
        f = base / sc.factor;  // long wavelengths: interpolate
      } else if (wavelength >= l / sc.high_freq_factor) {
        const double s =
            (l / wavelength - sc.low_freq_factor) / (sc.high_freq_factor - sc.low_freq_factor);
        f = base * ((1.0 - s) / sc.factor + s);
      }
    }
    out.push_back(f);
  }
  return out;
}

double RefRopeCosSinScale(const kernels::RopeScaling& sc) {
  if (sc.kind != kernels::RopeScalingKind::kYarn) return 1.0;
  return Mscale(sc.factor, sc.mscale) / Mscale(sc.factor, sc.mscale_all_dim);
}

std::vector<double> RefRopeMatrix(const RefRopeSpec& spec, int64_t dh, int64_t pos) {
  std::vector<double> m(Idx(dh * dh), 0.0);
  for (int64_t i = 0; i < dh; ++i) m[Idx(i * dh + i)] = 1.0;
  const int64_t half = spec.rotary_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t a = spec.offset + (spec.interleaved ? 2 * i : i);
    const int64_t b = spec.offset + (spec.interleaved ? 2 * i + 1 : i + half);
    const double angle = static_cast<double>(pos) * spec.inv_freq[Idx(i)];
    const double c = spec.scale * std::cos(angle), s = spec.scale * std::sin(angle);
    // [a'; b'] = [c -s; s c] [a; b]
    m[Idx(a * dh + a)] = c;
    m[Idx(a * dh + b)] = -s;
    m[Idx(b * dh + a)] = s;
    m[Idx(b * dh + b)] = c;
  }
  return m;
}

namespace {

std::vector<double> ApplyRopeMatrices(const double* x, int64_t t, int64_t h, int64_t dh,
                                      const int32_t* positions, const RefRopeSpec& spec,
                                      bool transpose) {
  std::vector<double> y(Idx(t * h * dh), 0.0);
  for (int64_t ti = 0; ti < t; ++ti) {
    const std::vector<double> m = RefRopeMatrix(spec, dh, positions[ti]);
    for (int64_t hi = 0; hi < h; ++hi) {
      const double* xr = x + (ti * h + hi) * dh;
      double* yr = y.data() + (ti * h + hi) * dh;
      for (int64_t i = 0; i < dh; ++i)
        for (int64_t j = 0; j < dh; ++j)
          yr[i] += (transpose ? m[Idx(j * dh + i)] : m[Idx(i * dh + j)]) * xr[j];
    }
  }
  return y;
}

}  // namespace

std::vector<double> RefRope(const double* x, int64_t t, int64_t h, int64_t dh,
                            const int32_t* positions, const RefRopeSpec& spec) {
  return ApplyRopeMatrices(x, t, h, dh, positions, spec, false);
}

std::vector<double> RefRopeBackward(const double* dy, int64_t t, int64_t h, int64_t dh,
                                    const int32_t* positions, const RefRopeSpec& spec) {
  return ApplyRopeMatrices(dy, t, h, dh, positions, spec, true);
}

// ---- attention ---------------------------------------------------------------------------------

namespace {

// Probabilities p[s] of query (b, t, h) over all S keys (0 where masked); returns the lse.
double AttentionRow(const double* q, const double* k, const RefAttentionShape& d, double scale,
                    int64_t b, int64_t t, int64_t h, std::vector<double>& p) {
  const int64_t g = h / (d.h / d.hkv);
  const double* qr = q + ((b * d.t + t) * d.h + h) * d.dk;
  p.assign(Idx(d.s), 0.0);
  const int64_t last = d.pos0 + t;  // keys 0..last are visible
  double mx = -HUGE_VAL;
  for (int64_t s = 0; s <= last; ++s) {
    const double* kr = k + ((b * d.s + s) * d.hkv + g) * d.dk;
    double dot = 0;
    for (int64_t c = 0; c < d.dk; ++c) dot += qr[c] * kr[c];
    p[Idx(s)] = scale * dot;
    mx = std::max(mx, p[Idx(s)]);
  }
  double z = 0;
  for (int64_t s = 0; s <= last; ++s) z += std::exp(p[Idx(s)] - mx);
  const double lse = mx + std::log(z);
  for (int64_t s = 0; s <= last; ++s) p[Idx(s)] = std::exp(p[Idx(s)] - lse);
  return lse;
}

}  // namespace

RefAttentionOut RefAttention(const double* q, const double* k, const double* v,
                             const RefAttentionShape& d, double scale) {
  RefAttentionOut r;
  r.out.assign(Idx(d.b * d.t * d.h * d.dv), 0.0);
  r.lse.assign(Idx(d.b * d.h * d.t), 0.0);
  std::vector<double> p;
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t t = 0; t < d.t; ++t)
      for (int64_t h = 0; h < d.h; ++h) {
        const int64_t g = h / (d.h / d.hkv);
        r.lse[Idx((b * d.h + h) * d.t + t)] = AttentionRow(q, k, d, scale, b, t, h, p);
        double* o = r.out.data() + ((b * d.t + t) * d.h + h) * d.dv;
        for (int64_t s = 0; s < d.s; ++s)
          for (int64_t c = 0; c < d.dv; ++c)
            o[c] += p[Idx(s)] * v[((b * d.s + s) * d.hkv + g) * d.dv + c];
      }
  return r;
}

RefAttentionGrads RefAttentionBackward(const double* q, const double* k, const double* v,
                                       const double* dout, const RefAttentionShape& d,
                                       double scale) {
  RefAttentionGrads gr;
  gr.dq.assign(Idx(d.b * d.t * d.h * d.dk), 0.0);
  gr.dk.assign(Idx(d.b * d.s * d.hkv * d.dk), 0.0);
  gr.dv.assign(Idx(d.b * d.s * d.hkv * d.dv), 0.0);
  std::vector<double> p, dp;
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t t = 0; t < d.t; ++t)
      for (int64_t h = 0; h < d.h; ++h) {
        const int64_t g = h / (d.h / d.hkv);
        AttentionRow(q, k, d, scale, b, t, h, p);
        const double* dor = dout + ((b * d.t + t) * d.h + h) * d.dv;
        const double* qr = q + ((b * d.t + t) * d.h + h) * d.dk;
        // out = sum_s p_s v_s:  dv_s += p_s dout;  dp_s = dout . v_s
        dp.assign(Idx(d.s), 0.0);
        for (int64_t s = 0; s < d.s; ++s) {
          const double* vr = v + ((b * d.s + s) * d.hkv + g) * d.dv;
          double* dvr = gr.dv.data() + ((b * d.s + s) * d.hkv + g) * d.dv;
          for (int64_t c = 0; c < d.dv; ++c) {
            dvr[c] += p[Idx(s)] * dor[c];
            dp[Idx(s)] += dor[c] * vr[c];
          }
        }
        // softmax Jacobian: dscore_s = sum_u dp_u p_u (delta_us - p_s)
        double pdp = 0;
        for (int64_t s = 0; s < d.s; ++s) pdp += p[Idx(s)] * dp[Idx(s)];
        for (int64_t s = 0; s < d.s; ++s) {
          const double ds = p[Idx(s)] * (dp[Idx(s)] - pdp) * scale;  // d/d(q . k_s)
          const double* kr = k + ((b * d.s + s) * d.hkv + g) * d.dk;
          double* dkr = gr.dk.data() + ((b * d.s + s) * d.hkv + g) * d.dk;
          double* dqr = gr.dq.data() + ((b * d.t + t) * d.h + h) * d.dk;
          for (int64_t c = 0; c < d.dk; ++c) {
            dqr[c] += ds * kr[c];
            dkr[c] += ds * qr[c];
          }
        }
      }
  return gr;
}

// ---- cross-entropy -----------------------------------------------------------------------------

RefCrossEntropyOut RefCrossEntropy(const double* logits, const int32_t* targets, int64_t t,
                                   int64_t v) {
  RefCrossEntropyOut r;
  r.row_loss.assign(Idx(t), 0.0);
  double total = 0;
  for (int64_t i = 0; i < t; ++i) {
    if (targets[i] < 0) continue;
    const double* x = logits + i * v;
    const double mx = *std::max_element(x, x + v);
    double z = 0;
    for (int64_t j = 0; j < v; ++j) z += std::exp(x[j] - mx);
    // -log softmax(x)[target]
    r.row_loss[Idx(i)] = -(x[targets[i]] - mx - std::log(z));
    total += r.row_loss[Idx(i)];
    ++r.count;
  }
  r.loss = r.count ? total / static_cast<double>(r.count) : 0.0;
  return r;
}

std::vector<double> RefCrossEntropyBackward(const double* logits, const int32_t* targets, int64_t t,
                                            int64_t v, double scale) {
  std::vector<double> d(Idx(t * v), 0.0);
  for (int64_t i = 0; i < t; ++i) {
    if (targets[i] < 0) continue;
    const double* x = logits + i * v;
    const double mx = *std::max_element(x, x + v);
    double z = 0;
    for (int64_t j = 0; j < v; ++j) z += std::exp(x[j] - mx);
    for (int64_t j = 0; j < v; ++j)
      d[Idx(i * v + j)] = scale * (std::exp(x[j] - mx) / z - (j == targets[i] ? 1.0 : 0.0));
  }
  return d;
}

// ---- embedding ---------------------------------------------------------------------------------

std::vector<double> RefEmbedding(const double* table, const int32_t* ids, int64_t t, int64_t d) {
  std::vector<double> y(Idx(t * d));
  for (int64_t i = 0; i < t; ++i)
    for (int64_t c = 0; c < d; ++c) y[Idx(i * d + c)] = table[ids[i] * d + c];
  return y;
}

std::vector<double> RefEmbeddingBackward(const double* dy, const int32_t* ids, int64_t t, int64_t v,
                                         int64_t d) {
  std::vector<double> dt(Idx(v * d), 0.0);
  for (int64_t i = 0; i < t; ++i)
    for (int64_t c = 0; c < d; ++c) dt[Idx(ids[i] * d + c)] += dy[i * d + c];
  return dt;
}

// ---- AdamW -------------------------------------------------------------------------------------

void RefAdamWStep(double* param, const double* grad, double* m, double* v, int64_t n,
                  const kernels::AdamWOptions& o, int64_t step) {
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
  for (int64_t i = 0; i < n; ++i) {
    param[i] -= o.lr * o.weight_decay * param[i];
    m[i] = o.beta1 * m[i] + (1.0 - o.beta1) * grad[i];
    v[i] = o.beta2 * v[i] + (1.0 - o.beta2) * grad[i] * grad[i];
    const double m_hat = m[i] / bc1;
    const double v_hat = v[i] / bc2;
    // torch adds eps to sqrt(v_hat), not to v_hat.
    param[i] -= o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
  }
}

double RefGlobalNorm(const std::vector<std::vector<double>>& grads) {
  double s = 0;
  for (const auto& g : grads)
    for (double x : g) s += x * x;
  return std::sqrt(s);
}

}  // namespace moe::testing
