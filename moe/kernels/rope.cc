#include "moe/kernels/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace moe::kernels {

RopeScalingKind ParseRopeScalingKind(std::string_view name) {
  if (name == "none" || name == "default") return RopeScalingKind::kNone;
  if (name == "linear") return RopeScalingKind::kLinear;
  if (name == "yarn") return RopeScalingKind::kYarn;
  if (name == "llama3") return RopeScalingKind::kLlama3;
  if (name == "freq_factors") return RopeScalingKind::kFreqFactors;
  Fail("rope", "unknown rope scaling '{}' (expected none, default, linear, yarn, llama3 or freq_factors)",
       name);
}

std::string_view RopeScalingKindName(RopeScalingKind kind) {
  switch (kind) {
    case RopeScalingKind::kNone:
      return "none";
    case RopeScalingKind::kLinear:
      return "linear";
    case RopeScalingKind::kYarn:
      return "yarn";
    case RopeScalingKind::kLlama3:
      return "llama3";
    case RopeScalingKind::kFreqFactors:
      return "freq_factors";
  }
  return "?";
}

double YarnMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

namespace {

void Validate(const RopeConfig& c) {
  MOE_CHECK(c.rotary_dim > 0 && c.rotary_dim % 2 == 0, "rope",
            "rotary_dim {} must be even and positive", c.rotary_dim);
  MOE_CHECK(std::isfinite(c.theta) && c.theta > 1.0, "rope", "theta {} must be > 1", c.theta);
  MOE_CHECK(c.cached_positions >= 0 && c.cached_positions <= (int64_t{1} << 24), "rope",
            "cached_positions {} must be in [0, 2^24]", c.cached_positions);
  const RopeScaling& s = c.scaling;
  const std::string_view kind = RopeScalingKindName(s.kind);
  if (s.kind == RopeScalingKind::kNone) return;
  if (s.kind == RopeScalingKind::kFreqFactors) {
    MOE_CHECK(static_cast<int64_t>(s.freq_factors.size()) == c.rotary_dim / 2, "rope",
              "freq_factors scaling: {} factors for rotary_dim {} (need {})", s.freq_factors.size(),
              c.rotary_dim, c.rotary_dim / 2);
    for (size_t i = 0; i < s.freq_factors.size(); ++i)
      MOE_CHECK(std::isfinite(s.freq_factors[i]) && s.freq_factors[i] > 0, "rope",
                "freq_factors scaling: factor {} = {} must be finite and > 0", i, s.freq_factors[i]);
    return;
  }
  MOE_CHECK(std::isfinite(s.factor) && s.factor > 0, "rope", "{} scaling: factor {} must be > 0",
            kind, s.factor);
  if (s.kind == RopeScalingKind::kLinear) return;
  MOE_CHECK(s.original_max_position_embeddings > 0, "rope",
            "{} scaling: original_max_position_embeddings {} must be > 0", kind,
            s.original_max_position_embeddings);
  if (s.kind == RopeScalingKind::kYarn) {
    MOE_CHECK(s.beta_fast > 0 && s.beta_slow > 0, "rope",
              "yarn scaling: beta_fast {} and beta_slow {} must be > 0", s.beta_fast, s.beta_slow);
    MOE_CHECK(std::isfinite(s.mscale) && std::isfinite(s.mscale_all_dim), "rope",
              "yarn scaling: mscale {} and mscale_all_dim {} must be finite", s.mscale,
              s.mscale_all_dim);
  } else {
    MOE_CHECK(s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor, "rope",
              "llama3 scaling: need 0 < low_freq_factor ({}) < high_freq_factor ({})",
              s.low_freq_factor, s.high_freq_factor);
  }
}

// YaRN: the (fractional) dim index whose frequency turns n_rot times over L positions.
double YarnCorrectionDim(double n_rot, double r, double theta, double l) {
  return r * std::log(l / (n_rot * 2.0 * std::numbers::pi)) / (2.0 * std::log(theta));
}

}  // namespace

RopeTable::RopeTable(const RopeConfig& config) : config_(config) {
  Validate(config_);
  const int64_t r = config_.rotary_dim, nf = r / 2;
  const RopeScaling& s = config_.scaling;
  inv_freq_.resize(static_cast<size_t>(nf));
  for (int64_t i = 0; i < nf; ++i)
    inv_freq_[static_cast<size_t>(i)] =
        1.0 / std::pow(config_.theta, static_cast<double>(2 * i) / static_cast<double>(r));

  switch (s.kind) {
    case RopeScalingKind::kNone:
      break;
    case RopeScalingKind::kLinear:
      for (double& f : inv_freq_) f /= s.factor;
      break;
    case RopeScalingKind::kYarn: {
      const double l = static_cast<double>(s.original_max_position_embeddings);
      const double rd = static_cast<double>(r);
      const double low =
          std::max(std::floor(YarnCorrectionDim(s.beta_fast, rd, config_.theta, l)), 0.0);
      double high =
          std::min(std::ceil(YarnCorrectionDim(s.beta_slow, rd, config_.theta, l)), rd - 1.0);
      if (low == high) high += 0.001;
      for (int64_t i = 0; i < nf; ++i) {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        double& f = inv_freq_[static_cast<size_t>(i)];
        f = f / s.factor * ramp + f * (1.0 - ramp);
      }
      cos_sin_scale_ = YarnMscale(s.factor, s.mscale) / YarnMscale(s.factor, s.mscale_all_dim);
      break;
    }
    case RopeScalingKind::kLlama3: {
      const double l = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = l / s.low_freq_factor, high_wavelen = l / s.high_freq_factor;
      for (double& f : inv_freq_) {
        const double wavelen = 2.0 * std::numbers::pi / f;
        if (wavelen < high_wavelen) continue;
        if (wavelen > low_wavelen) {
          f /= s.factor;
        } else {
          const double smooth =
              (l / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
          f = (1.0 - smooth) * f / s.factor + smooth * f;
        }
      }
      break;
    }
    case RopeScalingKind::kFreqFactors:
      for (int64_t i = 0; i < nf; ++i) inv_freq_[static_cast<size_t>(i)] /= s.freq_factors[static_cast<size_t>(i)];
      break;
  }

  const int64_t np = config_.cached_positions;
  cos_.resize(static_cast<size_t>(np * nf));
  sin_.resize(static_cast<size_t>(np * nf));
  for (int64_t p = 0; p < np; ++p) Compute(p, cos_.data() + p * nf, sin_.data() + p * nf);
}

std::vector<double> RopeFreqFactors(int64_t rotary_dim, double theta, const RopeScaling& s) {
  MOE_CHECK(s.kind != RopeScalingKind::kYarn, "rope",
            "yarn scaling also scales cos/sin; it has no frequency-factor form");
  RopeConfig base{.rotary_dim = rotary_dim, .theta = theta, .scaling = {}, .cached_positions = 0};
  RopeConfig scaled = base;
  scaled.scaling = s;
  const RopeTable a(base), b(scaled);
  std::vector<double> f(static_cast<size_t>(a.n_freqs()));
  for (size_t i = 0; i < f.size(); ++i) f[i] = a.inv_freq()[i] / b.inv_freq()[i];
  return f;
}

double RopeTable::SoftmaxScaleMultiplier() const {
  if (config_.scaling.kind != RopeScalingKind::kYarn) return 1.0;
  const double m = YarnMscale(config_.scaling.factor, config_.scaling.mscale_all_dim);
  return m * m;
}

void RopeTable::CosSin(int64_t pos, double* cos, double* sin) const {
  const int64_t nf = n_freqs();
  if (pos < config_.cached_positions) {
    std::copy_n(cos_.data() + pos * nf, nf, cos);
    std::copy_n(sin_.data() + pos * nf, nf, sin);
    return;
  }
  Compute(pos, cos, sin);
}

void RopeTable::Compute(int64_t pos, double* cos, double* sin) const {
  const double p = static_cast<double>(pos);
  for (int64_t i = 0; i < n_freqs(); ++i) {
    const double angle = p * inv_freq_[static_cast<size_t>(i)];
    cos[i] = cos_sin_scale_ * std::cos(angle);
    sin[i] = cos_sin_scale_ * std::sin(angle);
  }
}

namespace {

// Rotates one head's slice src[0, r) into dst[0, r) (forward: R, backward: R^T, accumulating).
// Each pair is read before it is written, so dst may equal src in the forward.
template <typename T, bool kBackward>
inline void RotateSlice(const T* src, T* dst, const T* c, const T* s, int64_t nf,
                        RopePairing pairing) {
  const int64_t stride = pairing == RopePairing::kHalf ? 1 : 2;
  const int64_t partner = pairing == RopePairing::kHalf ? nf : 1;
  for (int64_t i = 0; i < nf; ++i) {
    const int64_t ia = i * stride, ib = ia + partner;
    const T a = src[ia], b = src[ib];
    if constexpr (kBackward) {
      dst[ia] += a * c[i] + b * s[i];
      dst[ib] += b * c[i] - a * s[i];
    } else {
      dst[ia] = a * c[i] - b * s[i];
      dst[ib] = b * c[i] + a * s[i];
    }
  }
}

template <typename T, bool kBackward>
void RopeApply(CView<T> src, CView<int32_t> positions, const RopeTable& table, RopePairing pairing,
               int64_t offset, View<T> dst, Context& ctx) {
  const char* what = kBackward ? "RopeBackward" : "RopeForward";
  MOE_CHECK(src.rank() == 3, "rope", "{}: {} must be [T,H,Dh], got {}", what,
            kBackward ? "dy" : "x", src.shape.str());
  MOE_CHECK(dst.shape == src.shape, "rope", "{}: {} {} must have the shape of {} {}", what,
            kBackward ? "dx" : "y", dst.shape.str(), kBackward ? "dy" : "x", src.shape.str());
  const int64_t nt = src.dim(0), nh = src.dim(1), dh = src.dim(2);
  const int64_t r = table.rotary_dim(), nf = r / 2;
  MOE_CHECK(positions.numel() == nt, "rope", "{}: positions {} must be [{}] (one per row of {})",
            what, positions.shape.str(), nt, src.shape.str());
  MOE_CHECK(offset >= 0 && offset + r <= dh, "rope",
            "{}: rotated dims [{}, {}) do not fit in head dim {} of {}", what, offset, offset + r,
            dh, src.shape.str());
  for (int64_t t = 0; t < nt; ++t)
    MOE_CHECK(positions[t] >= 0, "rope", "{}: positions[{}] = {} is negative", what, t,
              positions[t]);
  const bool disjoint = dst.data + dst.numel() <= src.data || src.data + src.numel() <= dst.data;
  if (kBackward) {
    MOE_CHECK(disjoint, "rope", "RopeBackward: dx overlaps dy (dx accumulates)");
  } else {
    MOE_CHECK(disjoint || dst.data == src.data, "rope",
              "RopeForward: y overlaps x without being x");
  }

  const int workers = ctx.threads();
  std::vector<double> dscratch(static_cast<size_t>(workers * 2 * nf));
  std::vector<T> scratch(static_cast<size_t>(workers * 2 * nf));
  ParallelFor(nt, ctx, [&](int64_t t, int w) {
    double* dc = dscratch.data() + w * 2 * nf;
    T* c = scratch.data() + w * 2 * nf;
    T* s = c + nf;
    table.CosSin(positions[t], dc, dc + nf);
    for (int64_t i = 0; i < 2 * nf; ++i) c[i] = static_cast<T>(dc[i]);
    for (int64_t h = 0; h < nh; ++h) {
      const T* xs = src.data + (t * nh + h) * dh;
      T* xd = dst.data + (t * nh + h) * dh;
      RotateSlice<T, kBackward>(xs + offset, xd + offset, c, s, nf, pairing);
      if (xd == xs) continue;  // in-place forward: the pass-through dims are already there
      for (const auto& [b, e] : {std::pair{int64_t{0}, offset}, std::pair{offset + r, dh}}) {
        for (int64_t j = b; j < e; ++j) {
          if constexpr (kBackward) {
            xd[j] += xs[j];
          } else {
            xd[j] = xs[j];
          }
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void RopeForward(CView<T> x, CView<int32_t> positions, const RopeTable& table, RopePairing pairing,
                 int64_t offset, View<T> y, Context& ctx) {
  RopeApply<T, false>(x, positions, table, pairing, offset, y, ctx);
}

template <typename T>
void RopeBackward(CView<T> dy, CView<int32_t> positions, const RopeTable& table,
                  RopePairing pairing, int64_t offset, View<T> dx, Context& ctx) {
  RopeApply<T, true>(dy, positions, table, pairing, offset, dx, ctx);
}

#define MOE_INSTANTIATE(T)                                                                        \
  template void RopeForward<T>(CView<T>, CView<int32_t>, const RopeTable&, RopePairing, int64_t,  \
                               View<T>, Context&);                                                \
  template void RopeBackward<T>(CView<T>, CView<int32_t>, const RopeTable&, RopePairing, int64_t, \
                                View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
