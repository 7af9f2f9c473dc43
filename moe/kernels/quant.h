// Quantised weight formats of GGUF/ggml (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), byte for byte as ggml lays
// them out, and the products that read them. docs/QUANT.md describes the block layouts, the
// activation formats, the kernels and the measured error and speed.
//
// Weights are rows of blocks: a row of k values is k / block_size blocks of block_bytes each, and a
// matrix [N, K] is N such rows back to back (the GGUF tensor layout of a Linear weight [out, in]).
#pragma once

#include <cstdint>
#include <string_view>

#include "moe/core/context.h"
#include "moe/core/dtype.h"

namespace moe::kernels {

enum class QuantType : uint8_t { kQ8_0, kQ4_0, kQ4_K, kQ5_K, kQ6_K };
inline constexpr int kNumQuantTypes = 5;
inline constexpr QuantType kAllQuantTypes[] = {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kQ4_K,
                                               QuantType::kQ5_K, QuantType::kQ6_K};

struct QuantTypeInfo {
  std::string_view name;  // "Q4_K", as GGUF and llama.cpp spell it
  int64_t block_size;     // values per block: 32 (Q8_0, Q4_0) or 256 (K-quants)
  int64_t block_bytes;    // bytes per block: 34, 18, 144, 176, 210
  int ggml_type;          // the ggml_type / GGUF tensor type id: 8, 2, 12, 13, 14
  DType dtype;            // the tensor dtype holding such blocks (DType::kQ4_K, ...)
};

const QuantTypeInfo& QuantInfo(QuantType t);
std::string_view QuantTypeName(QuantType t);
int64_t QuantBlockSize(QuantType t);
int64_t QuantBlockBytes(QuantType t);
// The QuantType of a ggml_type id; throws Error for ids this engine does not read.
QuantType QuantTypeFromGgml(int ggml_type);
// The tensor dtype of a quant type, and back (Error for a dtype that is not block-quantised).
DType ToDType(QuantType t);
QuantType QuantTypeOf(DType t);

// Bytes of a row of n values. Throws Error("[quant] ...") naming n when n is negative or not a
// multiple of the block size.
int64_t QuantRowBytes(QuantType t, int64_t n);
// Bytes of a [rows, n] matrix (rows * QuantRowBytes(t, n)); the same errors, and rows >= 0.
int64_t QuantMatrixBytes(QuantType t, int64_t rows, int64_t n);

// dst[0, n) = the values the blocks at src encode, exactly as ggml's dequantize_row_* computes them
// (the same float operations in the same order). n must be a multiple of the block size.
void Dequantize(QuantType t, const void* src, float* dst, int64_t n);

// Encodes src[0, n) as n / block_size blocks at dst (QuantRowBytes(t, n) bytes). Round to nearest
// for Q8_0 and Q4_0 (ggml's reference rule); a least-squares scale (and min) search per sub-block
// for the K-quants. Not bit-identical to llama.cpp's quantizer, but a valid encoding that any ggml
// reader decodes to the same values Dequantize gives. Values must be finite.
void Quantize(QuantType t, const float* src, void* dst, int64_t n);

// y[i, j] = sum_p x[i, p] * W[j, p] for i < m, j < n, where W [n, k] is stored as n quantised rows
// of type t at w (QuantMatrixBytes(t, n, k) bytes). x [m, k] and y [m, n] are row-major f32.
//
// x is quantised once per call to 8-bit blocks (per 32 values for Q8_0/Q4_0 weights, per 256 with
// 16-value sums for the K-quants), then every (weight row, x row) pair is an integer dot product
// scaled by the block scales. Each weight row is read once for up to 8 rows of x; larger m is
// tiled so that the weight tile and the quantised x rows stay in cache. Work is split over the
// output columns (weight rows) with ParallelFor. Results are bitwise identical for every thread
// count and every ISA level (scalar, AVX2, AVX-512 with or without VNNI): the integer sums are
// exact and the float scaling is done in one fixed order everywhere. x must be finite.
void QuantMatMul(QuantType t, const void* w /*[n, k] quantised*/, int64_t n, int64_t k,
                 const float* x /*[m, k]*/, int64_t m, float* y /*[m, n]*/, Context& ctx);

}  // namespace moe::kernels
