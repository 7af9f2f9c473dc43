#include <algorithm>
#include <cmath>

#include "moe/core/error.h"
#include "moe/kernels/isa/row_ops.h"

namespace moe::kernels {
namespace {

void SwiGlu(const float* g, const float* u, float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void SwiGluBackward(const float* g, const float* u, const float* da, float* dg, float* du,
                    int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-g[i]));
    const float silu = g[i] * s;
    du[i] = da[i] * silu;
    dg[i] = da[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}

void MatMulNtSmall(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ldw, int64_t n,
                   int64_t k, float* y, int64_t ldy, bool accumulate) {
  for (int64_t j = 0; j < n; ++j) {
    const float* wj = w + j * ldw;
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * ldx;
      float acc = 0.0f;
      for (int64_t p = 0; p < k; ++p) acc += xi[p] * wj[p];
      y[i * ldy + j] = accumulate ? y[i * ldy + j] + acc : acc;
    }
  }
}

void MatMulNnSmall(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ldw, int64_t k,
                   int64_t n, float* y, int64_t ldy, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    float* yi = y + i * ldy;
    if (!accumulate) std::fill(yi, yi + n, 0.0f);
    for (int64_t p = 0; p < k; ++p) {
      const float a = x[i * ldx + p];
      const float* wp = w + p * ldw;
      for (int64_t j = 0; j < n; ++j) yi[j] += a * wp[j];
    }
  }
}

float Sum(const float* x, int64_t n) {
  float a[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) a[j] += x[i + j];
  for (; i < n; ++i) a[0] += x[i];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

float Softmax(float* s, int64_t n, float scale) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    s[j] *= scale;
    mx = std::max(mx, s[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
  return mx + std::log(sum);
}

}  // namespace

const RowOps& ScalarRowOps() {
  static const RowOps ops{Isa::kScalar, SwiGlu, SwiGluBackward, MatMulNtSmall, MatMulNnSmall, Sum, Softmax};
  return ops;
}

const RowOps& RowOpsFor(Isa isa) {
  MOE_CHECK(static_cast<int>(isa) <= static_cast<int>(ActiveIsa()), "cpu",
            "ISA {} is not available on this CPU (best: {})", IsaName(isa), IsaName(ActiveIsa()));
  switch (isa) {
    case Isa::kAvx512: return Avx512RowOps();
    case Isa::kAvx2: return Avx2RowOps();
    case Isa::kScalar: break;
  }
  return ScalarRowOps();
}

const RowOps& ActiveRowOps() {
  static const RowOps& ops = RowOpsFor(ActiveIsa());
  return ops;
}

}  // namespace moe::kernels
