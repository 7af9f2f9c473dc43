#include "moe/kernels/quant_repack.h"

#include <cmath>
#include <cstring>

#include "moe/core/cpu.h"
#include "moe/core/error.h"

namespace moe::kernels {
namespace {

constexpr int64_t kTileBlockBytes = kQ4_0x16Rows * qk::kQ4_0Bytes;  // 288

void CheckDims(const char* op, int64_t n, int64_t k) {
  MOE_CHECK(n >= 0 && k >= 0 && n % kQ4_0x16Rows == 0 && k % 32 == 0, "quant",
            "{}: a [{}, {}] matrix cannot be tiled as Q4_0x16 (rows a multiple of 16, columns of "
            "32)",
            op, n, k);
}

// Byte offsets of row r's block b parts inside a tile-block: d at 2r, bytes 4v..4v+3 at
// 32 + 64v + 4r.
template <bool kToTiles>
void Move(const uint8_t* src, int64_t n, int64_t k, uint8_t* dst) {
  const int64_t nb = k / 32, row_bytes = nb * qk::kQ4_0Bytes;
  for (int64_t t = 0; t < n / kQ4_0x16Rows; ++t)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t tile = (t * nb + b) * kTileBlockBytes;
      for (int64_t r = 0; r < kQ4_0x16Rows; ++r) {
        const int64_t blk = (t * kQ4_0x16Rows + r) * row_bytes + b * qk::kQ4_0Bytes;
        for (int64_t v = 0; v < 5; ++v) {  // v = 4: the d
          const int64_t in_block = v < 4 ? 2 + 4 * v : 0, in_tile = v < 4 ? 32 + 64 * v + 4 * r : 2 * r;
          const int64_t len = v < 4 ? 4 : 2;
          if constexpr (kToTiles)
            std::memcpy(dst + tile + in_tile, src + blk + in_block, static_cast<size_t>(len));
          else
            std::memcpy(dst + blk + in_block, src + tile + in_tile, static_cast<size_t>(len));
        }
      }
    }
}

}  // namespace

void RepackQ4_0x16(const void* src, int64_t n, int64_t k, void* dst) {
  CheckDims("RepackQ4_0x16", n, k);
  Move<true>(static_cast<const uint8_t*>(src), n, k, static_cast<uint8_t*>(dst));
}

void UnpackQ4_0x16(const void* src, int64_t n, int64_t k, void* dst) {
  CheckDims("UnpackQ4_0x16", n, k);
  Move<false>(static_cast<const uint8_t*>(src), n, k, static_cast<uint8_t*>(dst));
}

void Q4_0x16DotScalar(const uint8_t* w, int64_t k, int64_t t0, int64_t t1, const QuantActs& a,
                      int64_t m, float* y, int64_t ldy) {
  const int64_t nb = k / 32;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t r = 0; r < kQ4_0x16Rows; ++r)
      for (int64_t i = 0; i < m; ++i) {
        const int8_t* x = a.qs(i);
        const float* dx = a.d(i);
        const int32_t* sx = a.sums(i);
        float acc[2] = {0.0f, 0.0f};
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* tile = w + (t * nb + b) * kTileBlockBytes;
          int32_t isum = 0;
          for (int64_t v = 0; v < 4; ++v)
            for (int64_t u = 0; u < 4; ++u) {
              const uint8_t q = tile[32 + 64 * v + 4 * r + u];
              isum += (q & 0x0F) * x[32 * b + 4 * v + u] + (q >> 4) * x[32 * b + 16 + 4 * v + u];
            }
          isum -= 8 * sx[b];
          uint16_t h;
          std::memcpy(&h, tile + 2 * r, 2);
          const float scale = FromF16(h) * dx[b];
          acc[b % 2] = std::fma(static_cast<float>(isum), scale, acc[b % 2]);
        }
        y[i * ldy + t * kQ4_0x16Rows + r] = acc[0] + acc[1];
      }
}

Q4_0x16DotFn Q4_0x16Kernel() {
  const CpuFeatures& f = GetCpuFeatures();
  if (ActiveIsa() == Isa::kAvx512 && f.avx512vnni) return &Q4_0x16DotAvx512Vnni;
  return nullptr;
}

}  // namespace moe::kernels
