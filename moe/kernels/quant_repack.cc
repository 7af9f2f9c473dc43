#include "moe/kernels/quant_repack.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "moe/core/cpu.h"
#include "moe/core/error.h"

namespace moe::kernels {
namespace {

// Moves an [n, k] matrix of `block_bytes` blocks (`block_values` values each) between rows and
// 16-row tiles (a tile-block holds the 16 rows' block b). For each tile, block and row r,
// parts(r, piece) names every part of the row's block: piece(offset in the block, offset in the
// tile-block, bytes). Q8_0, Q4_0 and the K-quants move whole bytes this way (Q6_K re-packs its
// bits).
template <bool kToTiles, typename Parts>
void MoveBlocks(const uint8_t* src, int64_t n, int64_t k, int64_t block_values, int64_t block_bytes,
                uint8_t* dst, Parts&& parts) {
  const int64_t nb = k / block_values, row_bytes = nb * block_bytes,
                tile_bytes = kTileRows * block_bytes;
  for (int64_t t = 0; t < n / kTileRows; ++t)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t tile = (t * nb + b) * tile_bytes;
      for (int64_t r = 0; r < kTileRows; ++r) {
        const int64_t blk = (t * kTileRows + r) * row_bytes + b * block_bytes;
        parts(r, [&](int64_t in_block, int64_t in_tile, int64_t len) {
          if constexpr (kToTiles)
            std::memcpy(dst + tile + in_tile, src + blk + in_block, static_cast<size_t>(len));
          else
            std::memcpy(dst + blk + in_block, src + tile + in_tile, static_cast<size_t>(len));
        });
      }
    }
}

// Q4_0x16 and Q8_0x16: row r's d at 2r of the tile-block, its quant bytes 4v..4v+3 at
// 32 + 64v + 4r (v < 4 for Q4_0's 16 bytes, v < 8 for Q8_0's 32).
template <bool kToTiles, bool kQ8>
void Move(const uint8_t* src, int64_t n, int64_t k, uint8_t* dst) {
  const int64_t block_bytes = kQ8 ? qk::kQ8_0Bytes : qk::kQ4_0Bytes;
  MoveBlocks<kToTiles>(src, n, k, 32, block_bytes, dst, [](int64_t r, const auto& piece) {
    piece(0, 2 * r, 2);
    for (int64_t v = 0; v < (kQ8 ? 8 : 4); ++v) piece(2 + 4 * v, 32 + 64 * v + 4 * r, 4);
  });
}

// The Q4_0x16 / Q8_0x16 reference (quant_repack.h): its own f32 order. Value 4v + u of row r's
// block is byte 32 + 64v + 4r + u of the tile-block for Q8_0 (int8); for Q4_0 the low nibble of
// byte 32 + 64v + 4r + u (v < 4), the high nibble of byte 32 + 64(v - 4) + 4r + u (v >= 4),
// minus 8.
template <bool kQ8>
void Q32x16DotScalar(const uint8_t* w, int64_t k, int64_t t0, int64_t t1, const QuantActs& a,
                     int64_t m, float* y, int64_t ldy) {
  const int64_t nb = k / 32, tile_block = TileBlockBytes(kQ8 ? DType::kQ8_0x16 : DType::kQ4_0x16);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t r = 0; r < kTileRows; ++r)
      for (int64_t i = 0; i < m; ++i) {
        const int8_t* x = a.qs(i);
        const float* dx = a.d(i);
        float acc[2] = {0.0f, 0.0f};
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* tile = w + (t * nb + b) * tile_block;
          int32_t isum = 0;
          for (int64_t v = 0; v < 8; ++v)
            for (int64_t u = 0; u < 4; ++u) {
              int32_t q;
              if constexpr (kQ8) {
                q = static_cast<int8_t>(tile[32 + 64 * v + 4 * r + u]);
              } else {
                const uint8_t byte = tile[32 + 64 * (v % 4) + 4 * r + u];
                q = (v < 4 ? byte & 0x0F : byte >> 4) - 8;
              }
              isum += q * x[32 * b + 4 * v + u];
            }
          uint16_t h;
          std::memcpy(&h, tile + 2 * r, 2);
          const float scale = FromF16(h) * dx[b];
          acc[b % 2] = std::fma(static_cast<float>(isum), scale, acc[b % 2]);
        }
        y[i * ldy + t * kTileRows + r] = acc[0] + acc[1];
      }
}

}  // namespace

}  // namespace moe::kernels

// ---- Q6_Kx16 -------------------------------------------------------------------------------------

namespace moe::kernels {
namespace {

constexpr int64_t kQ6TileBytes = TileBlockBytes(DType::kQ6_Kx16);  // 3360
constexpr int64_t kQ6Scales = 32;
// Vectors in the order the kernel reads them: chunk c (0..3) = H[4c..4c+3], L[4c..4c+3],
// L[16+4c..16+4c+3] (768 bytes each, after the d's and the scales).
constexpr int64_t Q6High(int p) { return 288 + 768 * (p / 4) + 64 * (p % 4); }
constexpr int64_t Q6Low(int p) {
  return p < 16 ? 288 + 768 * (p / 4) + 256 + 64 * (p % 4)
                : 288 + 768 * ((p - 16) / 4) + 512 + 64 * (p % 4);
}

// Value e (0..255) of a Q6_K block: its ql byte / nibble shift and qh byte / bit shift.
struct Q6Pos {
  int ql, ql_shift, qh, qh_shift;
};
Q6Pos Q6At(int e) {
  const int h = e / 128, quad = e % 128 / 32, l = e % 32;
  return {64 * h + l + (quad % 2) * 32, quad >= 2 ? 4 : 0, 128 + 32 * h + l, 2 * quad};
}

template <bool kToTiles>
void MoveQ6(const uint8_t* src, int64_t n, int64_t k, uint8_t* dst) {
  const int64_t nb = k / qk::kQK, row_bytes = nb * qk::kQ6_KBytes;
  for (int64_t t = 0; t < n / kTileRows; ++t)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t tile = (t * nb + b) * kQ6TileBytes;
      for (int64_t r = 0; r < kTileRows; ++r) {
        const int64_t blk = (t * kTileRows + r) * row_bytes + b * qk::kQ6_KBytes;
        if constexpr (kToTiles) {
          const uint8_t* in = src + blk;
          uint8_t* out = dst + tile;
          std::memcpy(out + 2 * r, in + 208, 2);
          for (int s = 0; s < 16; ++s) out[kQ6Scales + 16 * s + r] = in[192 + s];
          // Group g (values 4g..4g+3) has consecutive ql and qh bytes with one shift each: its 4
          // low nibbles and 4 high bit pairs as one dword each, then whole dwords of the tile.
          const auto bits = [&](int g, bool high) {
            const Q6Pos q = Q6At(4 * g);
            uint32_t v;
            std::memcpy(&v, in + (high ? q.qh : q.ql), 4);
            return high ? (v >> q.qh_shift) & 0x03030303u : (v >> q.ql_shift) & 0x0F0F0F0Fu;
          };
          for (int p = 0; p < 32; ++p) {
            const uint32_t l = bits(p, false) | bits(p + 32, false) << 4;
            std::memcpy(out + Q6Low(p) + 4 * r, &l, 4);
          }
          for (int p = 0; p < 16; ++p) {
            const uint32_t h = bits(p, true) | bits(p + 16, true) << 2 | bits(p + 32, true) << 4 |
                               bits(p + 48, true) << 6;
            std::memcpy(out + Q6High(p) + 4 * r, &h, 4);
          }
        } else {
          const uint8_t* in = src + tile;
          uint8_t* out = dst + blk;
          std::memset(out, 0, 208);
          std::memcpy(out + 208, in + 2 * r, 2);
          for (int s = 0; s < 16; ++s) out[192 + s] = in[kQ6Scales + 16 * s + r];
          for (int e = 0; e < 256; ++e) {
            const int g = e / 4, u = e % 4;
            const uint8_t l = in[Q6Low(g % 32) + 4 * r + u];
            const uint8_t lo = g < 32 ? l & 0xF : l >> 4;
            const uint8_t hi = (in[Q6High(g % 16) + 4 * r + u] >> (2 * (g / 16))) & 3;
            const Q6Pos q = Q6At(e);
            out[q.ql] = static_cast<uint8_t>(out[q.ql] | (lo << q.ql_shift));
            out[q.qh] = static_cast<uint8_t>(out[q.qh] | (hi << q.qh_shift));
          }
        }
      }
    }
}

}  // namespace

}  // namespace moe::kernels

// ---- Q4_Kx16 and Q5_Kx16 -------------------------------------------------------------------------

namespace moe::kernels {
namespace {

// Q5_K adds its 32 qh bytes per row as 8 vectors after the scales (kHigh); the rest is Q4_K's.
template <bool kHigh>
constexpr int64_t KBlockBytes() { return kHigh ? qk::kQ5_KBytes : qk::kQ4_KBytes; }
// Byte offsets inside a tile-block (2304 / 2816 bytes) of row r's parts: d, dmin, scale dword u
// (0..2), qh dword v (Q5_K), and qs dword (c, v) of chunk c (0..3), vector v (0..7).
constexpr int64_t KD(int64_t r) { return 2 * r; }
constexpr int64_t KDmin(int64_t r) { return 32 + 2 * r; }
constexpr int64_t KScales(int64_t u, int64_t r) { return 64 + 64 * u + 4 * r; }
constexpr int64_t KQh(int64_t v, int64_t r) { return 256 + 64 * v + 4 * r; }
template <bool kHigh>
constexpr int64_t KQs(int64_t c, int64_t v, int64_t r) {
  return (kHigh ? 768 : 256) + 512 * c + 64 * v + 4 * r;
}

template <bool kToTiles, bool kHigh>
void MoveK(const uint8_t* src, int64_t n, int64_t k, uint8_t* dst) {
  const auto parts = [](int64_t r, const auto& piece) {
    piece(0, KD(r), 2);
    piece(2, KDmin(r), 2);
    for (int64_t u = 0; u < 3; ++u) piece(4 + 4 * u, KScales(u, r), 4);
    if constexpr (kHigh)
      for (int64_t v = 0; v < 8; ++v) piece(16 + 4 * v, KQh(v, r), 4);
    const int64_t qs = kHigh ? 48 : 16;
    for (int64_t c = 0; c < 4; ++c)
      for (int64_t v = 0; v < 8; ++v) piece(qs + 32 * c + 4 * v, KQs<kHigh>(c, v, r), 4);
  };
  MoveBlocks<kToTiles>(src, n, k, qk::kQK, KBlockBytes<kHigh>(), dst, parts);
}

// The K-quant tiles' references: each tile unpacked and run through the scalar mapped kernel
// (whose results the VNNI kernels equal).
template <DType kTiled>
void UnpackedDotScalar(const uint8_t* w, int64_t k, int64_t t0, int64_t t1, const QuantActs& a,
                       int64_t m, float* y, int64_t ldy) {
  const int64_t tile_bytes = k / qk::kQK * TileBlockBytes(kTiled);
  std::vector<uint8_t> rows(static_cast<size_t>(tile_bytes));
  for (int64_t t = t0; t < t1; ++t) {
    UnpackTiled(kTiled, w + t * tile_bytes, kTileRows, k, rows.data());
    QuantDotRows(ScalarQuantOps(), TiledBase(kTiled), rows.data(), tile_bytes / kTileRows, 0,
                 kTileRows, a, m, y + t * kTileRows, ldy);
  }
}

// Repacks (kToTiles) or unpacks [n, k] of tiled type t, after checking the shape.
template <bool kToTiles>
void MoveTiled(const char* op, DType t, const void* src, int64_t n, int64_t k, void* dst) {
  const int64_t block = DTypeBlockValues(t);
  MOE_CHECK(IsTiled(t), "quant", "{}: {} is not a tiled type", op, DTypeName(t));
  MOE_CHECK(n >= 0 && k >= 0 && n % kTileRows == 0 && k % block == 0, "quant",
            "{}: a [{}, {}] matrix cannot be tiled as {} (rows a multiple of 16, columns of {})",
            op, n, k, DTypeName(t), block);
  const auto* from = static_cast<const uint8_t*>(src);
  auto* to = static_cast<uint8_t*>(dst);
  switch (t) {
    case DType::kQ4_0x16: return Move<kToTiles, false>(from, n, k, to);
    case DType::kQ8_0x16: return Move<kToTiles, true>(from, n, k, to);
    case DType::kQ4_Kx16: return MoveK<kToTiles, false>(from, n, k, to);
    case DType::kQ5_Kx16: return MoveK<kToTiles, true>(from, n, k, to);
    default: return MoveQ6<kToTiles>(from, n, k, to);
  }
}

}  // namespace

bool IsTiled(DType t) {
  return t == DType::kQ8_0x16 || t == DType::kQ4_0x16 || t == DType::kQ4_Kx16 ||
         t == DType::kQ5_Kx16 || t == DType::kQ6_Kx16;
}

QuantType TiledBase(DType t) {
  MOE_CHECK(IsTiled(t), "quant", "{} is not a tiled type", DTypeName(t));
  switch (t) {
    case DType::kQ8_0x16: return QuantType::kQ8_0;
    case DType::kQ4_0x16: return QuantType::kQ4_0;
    case DType::kQ4_Kx16: return QuantType::kQ4_K;
    case DType::kQ5_Kx16: return QuantType::kQ5_K;
    default: return QuantType::kQ6_K;
  }
}

DType TiledOf(QuantType t) {
  switch (t) {
    case QuantType::kQ8_0: return DType::kQ8_0x16;
    case QuantType::kQ4_0: return DType::kQ4_0x16;
    case QuantType::kQ4_K: return DType::kQ4_Kx16;
    case QuantType::kQ5_K: return DType::kQ5_Kx16;
    case QuantType::kQ6_K: return DType::kQ6_Kx16;
    default: return DType::kF32;
  }
}

void RepackTiled(DType t, const void* src, int64_t n, int64_t k, void* dst) {
  MoveTiled<true>("RepackTiled", t, src, n, k, dst);
}

void UnpackTiled(DType t, const void* src, int64_t n, int64_t k, void* dst) {
  MoveTiled<false>("UnpackTiled", t, src, n, k, dst);
}

TiledDotFn TiledScalarKernel(DType t) {
  switch (t) {
    case DType::kQ8_0x16: return &Q32x16DotScalar<true>;
    case DType::kQ4_0x16: return &Q32x16DotScalar<false>;
    case DType::kQ4_Kx16: return &UnpackedDotScalar<DType::kQ4_Kx16>;
    case DType::kQ5_Kx16: return &UnpackedDotScalar<DType::kQ5_Kx16>;
    case DType::kQ6_Kx16: return &UnpackedDotScalar<DType::kQ6_Kx16>;
    default: Fail("quant", "{} is not a tiled type", DTypeName(t));
  }
}

bool HasTiledKernels() {
  return ActiveIsa() == Isa::kAvx512 && GetCpuFeatures().avx512vnni;
}

TiledDotFn TiledKernel(DType t) {
  if (!HasTiledKernels()) return nullptr;
  switch (t) {
    case DType::kQ8_0x16: return &Q8_0x16DotAvx512Vnni;
    case DType::kQ4_0x16: return &Q4_0x16DotAvx512Vnni;
    case DType::kQ4_Kx16: return &Q4_Kx16DotAvx512Vnni;
    case DType::kQ5_Kx16: return &Q5_Kx16DotAvx512Vnni;
    case DType::kQ6_Kx16: return &Q6_Kx16DotAvx512Vnni;
    default: return nullptr;
  }
}

}  // namespace moe::kernels
