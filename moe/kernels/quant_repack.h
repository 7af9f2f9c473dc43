// Q4_0 weights repacked for the AVX-512 VNNI few-row kernel ("Q4_0x16"): a step towards running
// Q4_0 decode at the memory bandwidth in both of this machine's memory states (docs/STATUS.md).
//
// GGUF's Q4_0 keeps each row's blocks together (f16 d, 16 bytes of nibbles: byte t holds weights
// t and t + 16). A few-row kernel over that layout needs, per block, byte permutes to line the
// nibbles up with the activations and a horizontal reduction per row; per core it computes
// ~24 GB/s of weights in cache, below one core's read rate in the fast state. Q4_0x16 regroups
// the same bytes per tile of 16 rows and per block: the 16 rows' d (32 bytes), then 4 vectors
// of 64 bytes, vector v holding in its dword r the 4 bytes 4v..4v+3 of row r's block (weights
// 4v..4v+3 in the low nibbles, 16 + 4v..16 + 4v + 3 in the high ones). One vpdpbusd of a vector's
// low (or high) nibbles with the matching 4 activation bytes broadcast adds 4 products to each of
// the 16 rows' sums: no permutes, no horizontal reductions (measured in a prototype: ~1.5x the
// mapped kernel in cache, and one core's full read rate from memory). A tile of one block is
// 16 * 18 bytes, so the repacked matrix has exactly the bytes of the original and tile t starts
// at the byte where row 16 t started.
//
// Results are defined by the scalar reference (bit for bit the same in the VNNI kernel): per row
// of weights j and row of activations i, for each block b the exact integer
// isum = sum_t q[t] x[t] - 8 sum_t x[t], then acc[b % 2] = fma(float(isum), d_b * dx_b, acc[b % 2])
// in f32, and y = acc[0] + acc[1]. (Not the same rounding as QuantMatMul's mapped kernels, whose
// canonical order is another; both are checked against dequantise-then-multiply.)
#pragma once

#include <cstdint>

#include "moe/kernels/isa/quant_ops.h"

namespace moe::kernels {

inline constexpr int64_t kQ4_0x16Rows = 16;

// dst = the [n, k] Q4_0 matrix at src (QuantMatrixBytes(kQ4_0, n, k) bytes) in the Q4_0x16
// layout (the same number of bytes). n % 16 == 0, k % 32 == 0 (Error otherwise).
void RepackQ4_0x16(const void* src, int64_t n, int64_t k, void* dst);
// The inverse: back to GGUF's row-major Q4_0.
void UnpackQ4_0x16(const void* src, int64_t n, int64_t k, void* dst);

// y[i * ldy + j] = row j of the Q4_0x16 matrix w ([n, k]) . row i of the activations, for rows
// j in [16 t0, 16 t1) and i < m (1..8). acts: 32-value blocks in the natural order
// (quantize_acts of the scalar table), a.k == k.
using Q4_0x16DotFn = void (*)(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                              const QuantActs& a, int64_t m, float* y, int64_t ldy);
void Q4_0x16DotScalar(const uint8_t* w, int64_t k, int64_t t0, int64_t t1, const QuantActs& a,
                      int64_t m, float* y, int64_t ldy);
// AVX-512 VNNI (call only when the CPU has it: Q4_0x16Kernel() picks).
void Q4_0x16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy);
// The VNNI kernel when the active ISA (MOE_ISA) is AVX-512 and the CPU has AVX512-VNNI, else null
// (callers keep the mapped layout then).
Q4_0x16DotFn Q4_0x16Kernel();

}  // namespace moe::kernels
