// bf16 matrix product with f32 accumulation: the inputs (f32) are rounded to bf16 while they are
// packed into panels and multiplied with AVX512-BF16 vdpbf16ps. Lives in its own ISA translation unit
// (gemm_bf16_avx512.cc); moe::kernels::GemmBf16 (matmul.h) checks HasBf16Matmul() and calls it.
#pragma once

#include <cstdint>

namespace moe::kernels {

// Serial C[m,n] = alpha * op(A) op(B) + beta * C, row-major with leading dims, as Gemm<float>;
// m, n, k >= 1. beta == 0 ignores the old C. Only call on a CPU with AVX512-BF16.
void GemmBf16Avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc);

}  // namespace moe::kernels
