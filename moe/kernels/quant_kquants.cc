// Quantize for the K-quants (Q4_K, Q5_K, Q6_K). Method, per 256-value super-block:
//  1. Each sub-block gets its own real scale (and min) by a small search: a set of candidate
//     inverse scales around nmax / range; for each, the values are rounded to the grid and the
//     scale (and min) re-fitted by least squares given those integers; the fit with the lowest
//     squared error wins.
//  2. The sub-block scales (and mins) are quantised against the super-block's f16 d (and dmin):
//     6-bit unsigned for Q4_K/Q5_K, int8 for Q6_K.
//  3. Each sub-block tries its quantised scale (and min) +-1, re-rounding every value with the
//     effective scale the reader computes (d * sc, dmin * m), and keeps the best.
// Unweighted squared error throughout. Measured NMSE on N(0, 1) data: docs/QUANT.md.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "moe/core/dtype.h"
#include "moe/kernels/isa/quant_ops.h"

namespace moe::kernels {
namespace {

inline int Round(float v) { return static_cast<int>(std::lrintf(v)); }

struct Fit {
  float scale = 0;  // value = scale * q + min
  float min = 0;    // <= 0 (type-1 formats) or 0 (type-0)
};

// Type-1: x ~ scale * q + min with q in [0, nmax], scale >= 0, min <= 0 (ggml stores -min).
Fit FitScaleMin(const float* x, int n, int nmax) {
  float lo = 0, hi = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (!(hi > lo)) return {0.0f, lo};  // constant (<= 0) sub-block: the min alone is exact
  Fit best{(hi - lo) / static_cast<float>(nmax), lo};
  double best_err = std::numeric_limits<double>::infinity();
  int q[256];
  for (int step = -10; step <= 10; ++step) {
    const float iscale = (static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / (hi - lo);
    double sq = 0, sx = 0, sqq = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      q[i] = std::clamp(Round((x[i] - lo) * iscale), 0, nmax);
      sq += q[i];
      sx += x[i];
      sqq += static_cast<double>(q[i]) * q[i];
      sqx += q[i] * static_cast<double>(x[i]);
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) continue;
    double a = (n * sqx - sq * sx) / det;
    double b = (sqq * sx - sq * sqx) / det;
    if (b > 0) {
      b = 0;
      a = sqx / sqq;
    }
    if (a <= 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = a * q[i] + b - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = err;
      best = {static_cast<float>(a), static_cast<float>(b)};
    }
  }
  return best;
}

// Type-0: x ~ scale * q with q in [-nneg, npos] (Q6_K: [-32, 31]); the scale may be negative so
// that the value of largest magnitude can use the long (-32) end.
Fit FitScale(const float* x, int n, int nneg, int npos) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax == 0) return {};
  double sxx = 0;
  for (int i = 0; i < n; ++i) sxx += static_cast<double>(x[i]) * x[i];
  Fit best{max / static_cast<float>(-nneg), 0};
  double best_err = std::numeric_limits<double>::infinity();
  for (int side = 0; side < 2; ++side) {
    const float top = side == 0 ? -static_cast<float>(nneg) : static_cast<float>(npos);
    for (int step = -9; step <= 9; ++step) {
      const float iscale = (top + (side == 0 ? -0.1f : 0.1f) * static_cast<float>(step)) / max;
      double sqq = 0, sqx = 0;
      for (int i = 0; i < n; ++i) {
        const int q = std::clamp(Round(x[i] * iscale), -nneg, npos);
        sqq += static_cast<double>(q) * q;
        sqx += q * static_cast<double>(x[i]);
      }
      if (sqq <= 0) continue;
      const double err = sxx - sqx * sqx / sqq;
      if (err < best_err) {
        best_err = err;
        best = {static_cast<float>(sqx / sqq), 0};
      }
    }
  }
  return best;
}

// Rounds x to the grid of effective scale a and offset -mo (value = a * q - mo) with q in
// [qmin, qmax]; returns the squared error (reader's float arithmetic) and fills q.
double RoundToGrid(const float* x, int n, float a, float mo, int qmin, int qmax, int* q) {
  double err = 0;
  const float ia = a != 0 ? 1.0f / a : 0.0f;
  for (int i = 0; i < n; ++i) {
    q[i] = a != 0 ? std::clamp(Round((x[i] + mo) * ia), qmin, qmax) : std::clamp(0, qmin, qmax);
    const double e = static_cast<double>(a * static_cast<float>(q[i]) - mo) - x[i];
    err += e * e;
  }
  return err;
}

// Least-squares scale and min (<= 0) of x ~ scale * q + min for fixed integers q.
Fit RefitScaleMin(const float* x, const int* q, int n, Fit fallback) {
  double sq = 0, sx = 0, sqq = 0, sqx = 0;
  for (int i = 0; i < n; ++i) {
    sq += q[i];
    sx += x[i];
    sqq += static_cast<double>(q[i]) * q[i];
    sqx += q[i] * static_cast<double>(x[i]);
  }
  const double det = n * sqq - sq * sq;
  if (det <= 0) return fallback;
  double a = (n * sqx - sq * sx) / det, b = (sqq * sx - sq * sqx) / det;
  if (b > 0) {
    b = 0;
    a = sqx / sqq;
  }
  if (a <= 0) return fallback;
  return {static_cast<float>(a), static_cast<float>(b)};
}

struct Type1Code {
  uint16_t dh = 0, dminh = 0;
  int sc[8] = {}, m[8] = {}, q[256] = {};
  double err = std::numeric_limits<double>::infinity();
};

// Steps 2 and 3 for Q4_K/Q5_K: quantises the sub-block fits against f16 d and dmin, tries each
// quantised scale and min +-1, and rounds the values with what the reader will compute.
Type1Code EncodeType1(const float* x, int nmax, const Fit fits[8]) {
  Type1Code c;
  float max_scale = 0, max_min = 0;
  for (int s = 0; s < 8; ++s) {
    max_scale = std::max(max_scale, fits[s].scale);
    max_min = std::max(max_min, -fits[s].min);
  }
  c.dh = ToF16(max_scale / 63.0f);
  c.dminh = ToF16(max_min / 63.0f);
  const float d = FromF16(c.dh), dmin = FromF16(c.dminh);
  c.err = 0;
  for (int s = 0; s < 8; ++s) {
    const int sc0 = d > 0 ? std::clamp(Round(fits[s].scale / d), 0, 63) : 0;
    const int m0 = dmin > 0 ? std::clamp(Round(-fits[s].min / dmin), 0, 63) : 0;
    double best = std::numeric_limits<double>::infinity();
    int qt[32];
    for (int dsc = -1; dsc <= 1; ++dsc) {
      for (int dm = -1; dm <= 1; ++dm) {
        const int sct = sc0 + dsc, mt = m0 + dm;
        if (sct < 0 || sct > 63 || mt < 0 || mt > 63) continue;
        const float a = d * static_cast<float>(sct), mo = dmin * static_cast<float>(mt);
        const double err = RoundToGrid(x + 32 * s, 32, a, mo, 0, nmax, qt);
        if (err < best) {
          best = err;
          c.sc[s] = sct;
          c.m[s] = mt;
          std::copy(qt, qt + 32, c.q + 32 * s);
        }
      }
    }
    c.err += best;
  }
  return c;
}

// Steps 1-3, then two rounds of: re-fit each sub-block's scale and min to the chosen integers by
// least squares and encode again, keeping the best code.
Type1Code QuantizeType1(const float* x, int nmax) {
  Fit fits[8];
  for (int s = 0; s < 8; ++s) fits[s] = FitScaleMin(x + 32 * s, 32, nmax);
  Type1Code best = EncodeType1(x, nmax, fits);
  for (int round = 0; round < 2; ++round) {
    for (int s = 0; s < 8; ++s) fits[s] = RefitScaleMin(x + 32 * s, best.q + 32 * s, 32, fits[s]);
    Type1Code c = EncodeType1(x, nmax, fits);
    if (!(c.err < best.err)) break;
    best = c;
  }
  return best;
}

void PackScalesK4(const int sc[8], const int m[8], uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

}  // namespace

void QuantizeQ4K(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += qk::kQK, y += qk::kQ4_KBytes) {
    const Type1Code c = QuantizeType1(x, 15);
    const int* q = c.q;
    std::memcpy(y, &c.dh, 2);
    std::memcpy(y + 2, &c.dminh, 2);
    PackScalesK4(c.sc, c.m, y + 4);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        y[16 + 32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void QuantizeQ5K(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += qk::kQK, y += qk::kQ5_KBytes) {
    const Type1Code c = QuantizeType1(x, 31);
    const int* q = c.q;
    std::memcpy(y, &c.dh, 2);
    std::memcpy(y + 2, &c.dminh, 2);
    PackScalesK4(c.sc, c.m, y + 4);
    uint8_t* qh = y + 16;
    uint8_t* qs = y + 48;
    std::memset(qh, 0, 32);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        qh[l] = static_cast<uint8_t>(qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

void QuantizeQ6K(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += qk::kQK, y += qk::kQ6_KBytes) {
    Fit fits[16];
    float amax = 0;
    for (int s = 0; s < 16; ++s) {
      fits[s] = FitScale(x + 16 * s, 16, 32, 31);
      amax = std::max(amax, std::fabs(fits[s].scale));
    }
    const uint16_t dh = ToF16(amax / 127.0f);
    const float d = FromF16(dh);
    int sc[16], q[256], qt[16];
    for (int s = 0; s < 16; ++s) {
      const int sc0 = d > 0 ? std::clamp(Round(fits[s].scale / d), -128, 127) : 0;
      double best = std::numeric_limits<double>::infinity();
      for (int ds = -1; ds <= 1; ++ds) {
        const int sct = sc0 + ds;
        if (sct < -128 || sct > 127) continue;
        const double err =
            RoundToGrid(x + 16 * s, 16, d * static_cast<float>(sct), 0.0f, -32, 31, qt);
        if (err < best) {
          best = err;
          sc[s] = sct;
          std::copy(qt, qt + 16, q + 16 * s);
        }
      }
    }
    uint8_t* ql = y;
    uint8_t* qh = y + 128;
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 32; ++l) {
        const int* qq = q + 128 * h + l;
        const int q1 = qq[0] + 32, q2 = qq[32] + 32, q3 = qq[64] + 32, q4 = qq[96] + 32;
        ql[64 * h + l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
        ql[64 * h + 32 + l] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
        qh[32 * h + l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) |
                                              ((q4 >> 4) << 6));
      }
    }
    for (int s = 0; s < 16; ++s) y[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(sc[s]));
    std::memcpy(y + 208, &dh, 2);
  }
}

}  // namespace moe::kernels
