// Matrix products. f32 goes through OpenBLAS sgemm (single-threaded inside our pool) except for
// few-row products, where our own kernel reads each weight row once (decode path); f64 (gradient
// checks) goes through dgemm. With MatmulPrecision::kBf16, f32 products big enough to benefit round
// their inputs to bf16 and run our AVX512-BF16 kernel with f32 accumulation (mixed-precision
// training); the Linear ops take the precision from the Context.
#pragma once

#include <cstdint>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

// Serial C[M,N] = alpha * op(A) * op(B) + beta * C on row-major pointers with leading dims.
// precision kBf16 (f32 only; f64 ignores it): GemmBf16 when UsesBf16Kernel(m, n, k), else sgemm.
template <typename T>
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc,
          MatmulPrecision precision = MatmulPrecision::kF32);

// Serial y[m, n] (+)= x[m, k] * w[n, k]^T (w in the PyTorch Linear [out, in] layout). Few rows
// (m <= 8, decode) always run in f32.
template <typename T>
void MatMulNT(const T* x, int64_t ldx, int64_t m, const T* w, int64_t ldw, int64_t n, int64_t k,
              T* y, int64_t ldy, bool accumulate, MatmulPrecision precision = MatmulPrecision::kF32);

// The bf16 product itself, whatever the size: Gemm<float>'s contract, with op(A) and op(B) rounded
// to bf16 (round to nearest even) and multiplied with f32 accumulation (AVX512-BF16 vdpbf16ps).
// Error on a CPU without AVX512-BF16 (see HasBf16Matmul in moe/core/cpu.h).
void GemmBf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
              int64_t ldc);

// Whether Gemm<float> with kBf16 takes the bf16 kernel for this shape: at least 16 rows and 16
// columns (a 32-column panel with fewer wastes most of the kernel) and 32^3 multiply-adds; smaller
// products stay f32 (little to gain, and they keep their precision).
bool UsesBf16Kernel(int64_t m, int64_t n, int64_t k);

// y[T, N] = x[T, K] * w[N, K]^T, split over the pool.
template <typename T>
void LinearForward(CView<T> x /*[T,K]*/, CView<T> w /*[N,K]*/, View<T> y /*[T,N]*/, Context& ctx);

// dx[T, K] += dy[T, N] * w[N, K];  dw[N, K] += dy^T * x. An empty dx or dw is skipped.
template <typename T>
void LinearBackward(CView<T> dy /*[T,N]*/, CView<T> x /*[T,K]*/, CView<T> w /*[N,K]*/,
                    View<T> dx /*[T,K]*/, View<T> dw /*[N,K]*/, Context& ctx);

}  // namespace moe::kernels
