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

inline constexpr int64_t kTileRows = 16;  // rows per tile, every tiled type
// Bytes of one tile-block of tiled type t: the 16 rows' block of its base type.
constexpr int64_t TileBlockBytes(DType t) { return kTileRows * DTypeBlockBytes(t); }

// ---- Q8_0x16 -------------------------------------------------------------------------------------
//
// Q8_0 (f16 d, 32 int8 values) in the same tiles: per tile-block (16 * 34 bytes) the 16 rows' d
// (32 B), then 8 vectors of 64 B, vector v holding in its dword r row r's values 4v..4v+3. The
// VNNI kernel flips each byte's sign bit (q + 128, unsigned) and takes off 128 * the activation
// block's sum: 8 vpdpbusd per block and activation row, no shuffles or gathers (the mapped Q8_0
// kernel rearranges 34-byte blocks with permutes and gathers the d's, and from memory one core
// read ~2/3 of what it reads of a plain stream). The reference and the f32 order are Q4_0x16's:
// isum = sum_t q[t] x[t] exactly, acc[b % 2] = fma(float(isum), d_b * dx_b, acc[b % 2]),
// y = acc[0] + acc[1].

// ---- Q6_Kx16 -------------------------------------------------------------------------------------
//
// Q6_K (256-value super-blocks: 4 low bits in ql, 2 high bits in qh, an int8 scale per 16 values,
// f16 d; see quant_ops.h) in tiles of 16 rows. Per tile and super-block (16 * 210 bytes, as the
// rows held): the 16 rows' d (32 B); the scales as [16 sub-blocks][16 rows] int8 (256 B); then
// 32 vectors L[p] of 64 B whose dword r holds row r's low 4 bits of values 4p..4p+3 (low nibbles)
// and 128+4p..128+4p+3 (high nibbles), and 16 vectors H[p] whose dword r, byte u, holds the high 2
// bits of values 4p+u (bits 0-1), 64+4p+u (2-3), 128+4p+u (4-5) and 192+4p+u (6-7), stored in the
// order the kernel reads them: for c = 0..3, H[4c..4c+3], L[4c..4c+3], L[16+4c..16+4c+3] (read
// out of order, the same block ran at a third of the mapped kernel's rate from memory). A super-block
// of a row comes to the same exact integer as in the mapped kernels, scaled in the same f32
// order: the results equal QuantMatMul's (every table) bit for bit.

// ---- Q4_Kx16, Q5_Kx16 ---------------------------------------------------------------------------
//
// Q4_K (256-value super-blocks: f16 d and dmin, 12 bytes of packed 6-bit sub-block scales and
// mins, 128 bytes of nibbles; see quant_ops.h) in tiles of 16 rows. Per tile and super-block
// (16 * 144 bytes, as the rows held): the 16 rows' d (32 B), their dmin (32 B), then the packed
// scale bytes as 3 vectors U0, U1, U2 of 64 B whose dword r holds row r's scale bytes 0-3, 4-7 and
// 8-11 (ggml's unpacking works on dwords, so it runs on all 16 rows at once), then per chunk c
// (64 values) 8 vectors Q[c][v] whose dword r holds row r's qs bytes 32c+4v..32c+4v+3 (values
// 64c+4v.. in the low nibbles, 64c+32+4v.. in the high ones), in the order the kernel reads them.
// A super-block of a row comes to the mapped kernels' exact integers, scaled in their f32 order:
// the results equal QuantMatMul's bit for bit.
// Q5_Kx16 (16 * 176 bytes): the same with Q5_K's 32 qh bytes per row as 8 vectors QH[v] after
// the scale vectors (dword r = row r's qh bytes 4v..4v+3; bit 2c of a byte is the fifth bit of
// the low-nibble value of chunk c, bit 2c + 1 of the high one), then the nibble vectors.
// The K-quant tiles' scalar references unpack each tile and run the scalar mapped kernel.

// ---- The tiled types -----------------------------------------------------------------------------

bool IsTiled(DType t);
QuantType TiledBase(DType t);  // kQ8_0x16 -> kQ8_0, kQ4_0x16 -> kQ4_0, ... kQ6_Kx16 -> kQ6_K
DType TiledOf(QuantType t);    // the reverse; DType::kF32 when t has no tiled form
// dst = the [n, k] matrix of TiledBase(t) at src in t's layout (the same number of bytes).
// n % 16 == 0 and k a multiple of the base type's block (Error otherwise).
void RepackTiled(DType t, const void* src, int64_t n, int64_t k, void* dst);
// The inverse: back to GGUF's row-major blocks.
void UnpackTiled(DType t, const void* src, int64_t n, int64_t k, void* dst);

// y[i * ldy + j] = row j of the tiled matrix w ([n, k]) . row i of the activations, for rows
// j in [16 t0, 16 t1) and i < m (1..8). acts: in the natural order (ActLayout::kNatural), 32-value
// blocks for Q8_0x16 / Q4_0x16 and 256-value ones for the K-quant tiles, a.k == k.
using TiledDotFn = void (*)(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                            const QuantActs& a, int64_t m, float* y, int64_t ldy);
// The scalar reference of t's product: what its results are.
TiledDotFn TiledScalarKernel(DType t);
// The AVX-512 VNNI kernel of t (bit-equal to the reference) when HasTiledKernels(), else null.
TiledDotFn TiledKernel(DType t);
// Whether the active ISA (MOE_ISA) is AVX-512 and the CPU has AVX512-VNNI: the only case with
// tiled kernels, so elsewhere weights keep their mapped layout.
bool HasTiledKernels();

// The VNNI kernels (isa/quant_repack_avx512vnni.cc, built with -mavx512vnni): call them through
// TiledKernel, which checks the CPU.
void Q8_0x16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy);
void Q4_0x16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy);
void Q4_Kx16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy);
void Q5_Kx16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy);
void Q6_Kx16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy);

}  // namespace moe::kernels
