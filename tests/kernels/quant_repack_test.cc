// Tiled layouts (moe/kernels/quant_repack.h). Q4_0x16 and Q8_0x16: the repack is a lossless
// permutation of the bytes, the scalar kernel equals QuantMatMul on the original layout up to float summation
// order (the same integer sums and scales) and the dequantise-then-multiply reference within the
// activation rounding, and the AVX-512 VNNI kernel equals the scalar one bit for bit. Q4_Kx16,
// Q5_Kx16 and Q6_Kx16: lossless permutations, and both kernels equal QuantMatMul on the original
// rows bit for bit.
#include "moe/kernels/quant_repack.h"

#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <vector>

#include "moe/kernels/quant.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

// n rows of k values quantised as t.
std::vector<uint8_t> RandomRows(Rng& rng, QuantType t, int64_t n, int64_t k) {
  std::vector<uint8_t> w(static_cast<size_t>(QuantMatrixBytes(t, n, k)));
  const int64_t rb = QuantRowBytes(t, k);
  for (int64_t j = 0; j < n; ++j) {
    const std::vector<float> row = RandomNormal<float>(rng, k);
    Quantize(t, row.data(), w.data() + j * rb, k);
  }
  return w;
}

// The [n, k] matrix w (rows of blocks) regrouped as tiled type t.
std::vector<uint8_t> Packed(DType t, const std::vector<uint8_t>& w, int64_t n, int64_t k) {
  std::vector<uint8_t> packed(w.size());
  RepackTiled(t, w.data(), n, k, packed.data());
  return packed;
}

// x (m rows of k values) quantised by the scalar table in blocks of `block`, in natural order.
const QuantActs& ScalarActs(QuantActsBuffer& buf, const std::vector<float>& x, int64_t m, int64_t k,
                            int block) {
  const QuantActs& a = buf.Reset(m, k, block, ActLayout::kNatural);
  ScalarQuantOps().quantize_acts(x.data(), 0, m, a);
  return a;
}

// The 32-value tiled types with their base types.
const std::pair<QuantType, DType> k32Tiled[] = {{QuantType::kQ4_0, DType::kQ4_0x16},
                                                {QuantType::kQ8_0, DType::kQ8_0x16}};

// Every byte of the quants random (Q8_0: -128 too, which the quantiser never writes but a file
// may hold); the f16 scales as quantised.
void RandomQuants(QuantType t, std::vector<uint8_t>& w, int64_t n, int64_t k) {
  Rng bytes(95);
  const int64_t bb = QuantRowBytes(t, 32);
  for (int64_t j = 0; j < n * k / 32; ++j)
    for (int64_t i = 2; i < bb; ++i) w[static_cast<size_t>(j * bb + i)] = static_cast<uint8_t>(bytes.Next());
}

TEST(QuantRepack, RepackIsALosslessPermutation) {
  Rng rng(91);
  for (const auto& [base, tiled] : k32Tiled)
    for (const auto& [n, k] : {std::pair<int64_t, int64_t>{16, 32}, {32, 96}, {48, 1024}}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(tiled) << " " << n << "x" << k);
      std::vector<uint8_t> w = RandomRows(rng, base, n, k);
      RandomQuants(base, w, n, k);
      std::vector<uint8_t> packed(w.size()), back(w.size());
      RepackTiled(tiled, w.data(), n, k, packed.data());
      UnpackTiled(tiled, packed.data(), n, k, back.data());
      EXPECT_EQ(back, w);
      EXPECT_NE(packed, w);
      // Tile t starts where row 16 t started (the same bytes per 16 rows).
      const int64_t rb = QuantRowBytes(base, k);
      uint16_t d_row16, d_tile1;
      std::memcpy(&d_row16, w.data() + 16 * rb * (n / 16 - 1), 2);
      std::memcpy(&d_tile1, packed.data() + 16 * rb * (n / 16 - 1), 2);
      EXPECT_EQ(d_row16, d_tile1);
    }
  std::vector<uint8_t> buf(4096);
  for (const auto& [base, tiled] : k32Tiled) {
    EXPECT_THROW(RepackTiled(tiled, buf.data(), 15, 32, buf.data() + 2048), Error);
    EXPECT_THROW(RepackTiled(tiled, buf.data(), 16, 48, buf.data() + 2048), Error);
    EXPECT_THROW(UnpackTiled(tiled, buf.data(), 16, 40, buf.data() + 2048), Error);
  }
}

TEST(QuantRepack, KernelsMatchTheMappedLayoutAndEachOther) {
  Rng rng(92);
  Context ctx({.threads = 1});
  for (const auto& [base, tiled] : k32Tiled) {
    const TiledDotFn simd = TiledKernel(tiled);
    if (!simd) std::printf("[ info ] no AVX-512 VNNI here: the SIMD kernel is not compared\n");
    // k: one block (odd count), odd and even block counts, the benchmark shapes' widths.
    for (const int64_t k : {32, 96, 512, 704, 1024}) {
      const int64_t n = 48;
      std::vector<uint8_t> w = RandomRows(rng, base, n, k);
      if (k == 96) RandomQuants(base, w, n, k);  // the ends of the int8 range
      const std::vector<uint8_t> packed = Packed(tiled, w, n, k);
      for (int64_t m = 1; m <= 8; ++m) {
        SCOPED_TRACE(::testing::Message() << DTypeName(tiled) << " k=" << k << " m=" << m);
        const std::vector<float> x = RandomNormal<float>(rng, m * k);
        QuantActsBuffer buf;
        const QuantActs& a = ScalarActs(buf, x, m, k, 32);
        // Tiles 1..2 only: rows outside [16, 48) stay untouched.
        std::vector<float> y(static_cast<size_t>(m * n), -7.0f), ys = y;
        TiledScalarKernel(tiled)(packed.data(), k, 1, 3, a, m, y.data(), n);
        std::vector<float> mapped(static_cast<size_t>(m * n));
        QuantMatMulWith(ScalarQuantOps(), base, w.data(), n, k, x.data(), m, mapped.data(), ctx);
        // The dequantised weights times x in double.
        std::vector<float> wf(static_cast<size_t>(n * k));
        Dequantize(base, w.data(), wf.data(), n * k);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            const float got = y[static_cast<size_t>(i * n + j)];
            if (j < 16) {
              EXPECT_EQ(got, -7.0f);
              continue;
            }
            double want = 0, scale = 0, wsum = 0, xmax = 0;
            for (int64_t p = 0; p < k; ++p) {
              const double wv = wf[static_cast<size_t>(j * k + p)], xv = x[static_cast<size_t>(i * k + p)];
              want += wv * xv;
              scale += std::fabs(wv * xv);
              wsum += std::fabs(wv);
              xmax = std::max(xmax, std::fabs(xv));
            }
            // Same integer sums and scales as the mapped kernel: only the f32 summation order
            // differs.
            EXPECT_NEAR(got, mapped[static_cast<size_t>(i * n + j)], 1e-6 * scale + 1e-6)
                << i << "," << j;
            // Activations rounded to 8 bits: each within half a step, amax / 254, of its value.
            EXPECT_NEAR(got, want, wsum * xmax / 254 + 1e-5) << i << "," << j;
          }
        if (simd) {
          simd(packed.data(), k, 1, 3, a, m, ys.data(), n);
          EXPECT_EQ(0, std::memcmp(ys.data(), y.data(), sizeof(float) * y.size()));
        }
      }
    }
  }
}

// The K-quant tiled types with their base types.
const std::pair<QuantType, DType> kKTiled[] = {{QuantType::kQ4_K, DType::kQ4_Kx16},
                                               {QuantType::kQ5_K, DType::kQ5_Kx16},
                                               {QuantType::kQ6_K, DType::kQ6_Kx16}};

TEST(QuantRepack, KQuantRepackIsALosslessPermutation) {
  Rng rng(93);
  for (const auto& [base, tiled] : kKTiled) {
    // The bytes of a block that are not its f16 scales (Q4_K, Q5_K: d, dmin first; Q6_K: d last).
    const bool q6 = base == QuantType::kQ6_K;
    const int64_t bb = QuantRowBytes(base, 256), first = q6 ? 0 : 4, last = q6 ? 208 : bb;
    for (const auto& [n, k] : {std::pair<int64_t, int64_t>{16, 256}, {32, 512}, {48, 1024}}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(tiled) << " " << n << "x" << k);
      std::vector<uint8_t> w = RandomRows(rng, base, n, k);
      // Every bit pattern of the quants and scales travels (random bytes, finite f16 scales).
      Rng bytes(94);
      const int64_t rb = QuantRowBytes(base, k);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t b = 0; b < k / 256; ++b)
          for (int64_t i = first; i < last; ++i)
            w[static_cast<size_t>(j * rb + b * bb + i)] = static_cast<uint8_t>(bytes.Next());
      std::vector<uint8_t> packed(w.size()), back(w.size());
      RepackTiled(tiled, w.data(), n, k, packed.data());
      UnpackTiled(tiled, packed.data(), n, k, back.data());
      EXPECT_EQ(back, w);
      EXPECT_NE(packed, w);
    }
    std::vector<uint8_t> buf(1 << 16);
    EXPECT_THROW(RepackTiled(tiled, buf.data(), 15, 256, buf.data() + 32768), Error);
    EXPECT_THROW(RepackTiled(tiled, buf.data(), 16, 128, buf.data() + 32768), Error);
  }
  std::vector<uint8_t> buf(1 << 16);
  EXPECT_THROW(UnpackTiled(DType::kQ4_Kx16, buf.data(), 16, 300, buf.data() + 32768), Error);
  EXPECT_THROW(UnpackTiled(DType::kQ6_Kx16, buf.data(), 17, 256, buf.data() + 32768), Error);
}

TEST(QuantRepack, KQuantKernelsEqualTheMappedKernels) {
  Rng rng(95);
  Context ctx({.threads = 1});
  for (const auto& [base, tiled] : kKTiled) {
    const TiledDotFn simd = TiledKernel(tiled);
    const TiledDotFn scalar = TiledScalarKernel(tiled);
    for (const int64_t k : {256, 768, 1024}) {  // one, odd and even super-block counts
      const int64_t n = 48;
      const std::vector<uint8_t> w = RandomRows(rng, base, n, k);
      const std::vector<uint8_t> packed = Packed(tiled, w, n, k);
      for (int64_t m = 1; m <= 8; ++m) {
        SCOPED_TRACE(::testing::Message() << DTypeName(tiled) << " k=" << k << " m=" << m);
        const std::vector<float> x = RandomNormal<float>(rng, m * k);
        QuantActsBuffer buf;
        const QuantActs& a = ScalarActs(buf, x, m, k, 256);
        std::vector<float> mapped(static_cast<size_t>(m * n));
        QuantMatMulWith(ScalarQuantOps(), base, w.data(), n, k, x.data(), m, mapped.data(), ctx);
        std::vector<float> y(static_cast<size_t>(m * n), -7.0f), ys = y;
        scalar(packed.data(), k, 1, 3, a, m, y.data(), n);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            const size_t at = static_cast<size_t>(i * n + j);
            if (j < 16) {
              EXPECT_EQ(y[at], -7.0f);
            } else {
              EXPECT_EQ(y[at], mapped[at]) << i << "," << j;
            }
          }
        if (simd) {
          simd(packed.data(), k, 1, 3, a, m, ys.data(), n);
          EXPECT_EQ(0, std::memcmp(ys.data(), y.data(), sizeof(float) * y.size()));
        }
      }
    }
  }
}

}  // namespace
}  // namespace moe::kernels
