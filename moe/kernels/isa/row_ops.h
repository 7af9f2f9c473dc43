// Row kernels with one implementation per ISA (scalar, AVX2+FMA, AVX-512), chosen at run time by
// ActiveOps(). They write (never accumulate) unless a flag says otherwise; the View-level ops in
// moe/kernels wrap them.
#pragma once

#include <cstdint>

#include "moe/core/cpu.h"

namespace moe::kernels {

struct RowOps {
  Isa isa;
  // a[i] = silu(g[i]) * u[i]
  void (*swiglu)(const float* g, const float* u, float* a, int64_t n);
  // dg[i] = da[i] * u[i] * silu'(g[i]);  du[i] = da[i] * silu(g[i])
  void (*swiglu_backward)(const float* g, const float* u, const float* da, float* dg, float* du,
                          int64_t n);
  // y[i, j] (+)= sum_k x[i, k] * w[j, k]  for i < m, j < n. Reads each row of w once for all m rows
  // of x: the decode / small-batch path (m <= kSmallM), bound by reading w.
  void (*matmul_nt_small)(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ldw,
                          int64_t n, int64_t k, float* y, int64_t ldy, bool accumulate);
  // y[i, j] (+)= sum_p x[i, p] * w[p, j]  for i < m, j < n, p < k: the rows of w are the inner
  // dimension (attention's probabilities times a block of value rows). Few rows of x (m <= 8).
  void (*matmul_nn_small)(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ldw,
                          int64_t k, int64_t n, float* y, int64_t ldy, bool accumulate);
  // sum of x[0..n): a pure streaming read (the bandwidth probe of the roofline).
  float (*sum)(const float* x, int64_t n);
  // s[0..n) = softmax(scale * s) in place (n >= 1, finite s); returns the log-sum-exp of the
  // scaled scores. The attention softmax.
  float (*softmax)(float* s, int64_t n, float scale);
};

inline constexpr int64_t kSmallM = 8;

const RowOps& ScalarRowOps();
const RowOps& Avx2RowOps();
const RowOps& Avx512RowOps();
// The best table for ActiveIsa().
const RowOps& ActiveRowOps();
// The table for a given ISA (must be supported by this CPU).
const RowOps& RowOpsFor(Isa isa);

}  // namespace moe::kernels
