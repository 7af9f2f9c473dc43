// Matrix products. f32 goes through OpenBLAS sgemm (single-threaded inside our pool) except for
// few-row products, where our own kernel reads each weight row once (decode path); f64 (gradient
// checks) goes through dgemm.
#pragma once

#include <cstdint>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

// Serial C[M,N] = alpha * op(A) * op(B) + beta * C on row-major pointers with leading dims.
template <typename T>
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Serial y[m, n] (+)= x[m, k] * w[n, k]^T (w in the PyTorch Linear [out, in] layout).
template <typename T>
void MatMulNT(const T* x, int64_t ldx, int64_t m, const T* w, int64_t ldw, int64_t n, int64_t k,
              T* y, int64_t ldy, bool accumulate);

// y[T, N] = x[T, K] * w[N, K]^T, split over the pool.
template <typename T>
void LinearForward(CView<T> x /*[T,K]*/, CView<T> w /*[N,K]*/, View<T> y /*[T,N]*/, Context& ctx);

// dx[T, K] += dy[T, N] * w[N, K];  dw[N, K] += dy^T * x. An empty dx or dw is skipped.
template <typename T>
void LinearBackward(CView<T> dy /*[T,N]*/, CView<T> x /*[T,K]*/, CView<T> w /*[N,K]*/,
                    View<T> dx /*[T,K]*/, View<T> dw /*[N,K]*/, Context& ctx);

}  // namespace moe::kernels
