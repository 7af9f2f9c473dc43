// WeightMatMul: products against F32 and block-quantised weights run alone or several together.
// Quantised products equal QuantMatMul bit for bit (the same integer kernels, whatever the split
// over threads and products); f32 products match a double reference; mixed lists of products give
// each product's own result; bad weights are clear errors.
#include "moe/kernels/weight_matmul.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/error.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/quant_repack.h"
#include "moe/testing/compare.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using ::testing::HasSubstr;

const testing::Tolerance kF32Tol{.atol = 1e-5, .rtol = 1e-4, .nmse = 1e-10};

using moe::testing::ErrorOf;

// A weight [n, k] stored as `dtype` (quantised row by row from random values).
struct TestWeight {
  DType dtype;
  int64_t n, k;
  std::vector<float> f32;  // the values (F32) or the dequantised values (quantised)
  std::vector<uint8_t> q;
  Tensor tensor;

  TestWeight(DType dt, int64_t rows, int64_t cols, Rng& rng) : dtype(dt), n(rows), k(cols) {
    f32 = RandomNormal<float>(rng, n * k, 0.1);
    if (dtype == DType::kF32) {
      tensor = Tensor(DType::kF32, {n, k});
      std::memcpy(tensor.raw(), f32.data(), f32.size() * sizeof(float));
      return;
    }
    const QuantType t = QuantTypeOf(dtype);
    const int64_t rb = QuantRowBytes(t, k);
    q.resize(static_cast<size_t>(n * rb));
    for (int64_t r = 0; r < n; ++r) {
      Quantize(t, f32.data() + r * k, q.data() + r * rb, k);
      Dequantize(t, q.data() + r * rb, f32.data() + r * k, k);
    }
    // Borrowed, like a weight inside a mapped GGUF file.
    tensor = Tensor::Borrow(dtype, {n, k}, q.data(), nullptr);
  }
  WeightRef ref() const { return AsWeight(tensor); }
};

// y = x W^T in double from the stored (dequantised) values.
std::vector<double> Reference(const std::vector<float>& x, int64_t m, const TestWeight& w) {
  std::vector<double> y(static_cast<size_t>(m * w.n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < w.n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < w.k; ++p)
        s += static_cast<double>(x[static_cast<size_t>(i * w.k + p)]) *
             w.f32[static_cast<size_t>(j * w.k + p)];
      y[static_cast<size_t>(i * w.n + j)] = s;
    }
  return y;
}

// The product alone through the type's own kernel: QuantMatMul, or y = x W^T in double for f32.
std::vector<float> Alone(const std::vector<float>& x, int64_t m, const TestWeight& w,
                         Context& ctx) {
  std::vector<float> y(static_cast<size_t>(m * w.n));
  if (w.dtype == DType::kF32) {
    const std::vector<double> r = Reference(x, m, w);
    for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<float>(r[i]);
  } else {
    QuantMatMul(QuantTypeOf(w.dtype), w.q.data(), w.n, w.k, x.data(), m, y.data(), ctx);
  }
  return y;
}

const DType kTypes[] = {DType::kF32,  DType::kQ8_0, DType::kQ4_0,
                        DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// WeightMatMul against `weight` (w as stored, or regrouped in tiles) for each row count of x in
// `ms` at 1-3 threads equals w's product alone through its own kernel: bit for bit when
// quantised (the same integer kernel), close to the double reference for f32.
void ExpectAloneForAnyRowsAndThreads(const TestWeight& w, const Tensor& weight,
                                     std::initializer_list<int64_t> ms, Rng& rng) {
  for (int64_t m : ms) {
    const std::vector<float> x = RandomNormal<float>(rng, m * w.k);
    Context one({.threads = 1});
    const std::vector<float> want = Alone(x, m, w, one);
    for (int threads : {1, 2, 3}) {
      Context ctx({.threads = threads});
      std::vector<float> y(static_cast<size_t>(m * w.n), -1.0f);
      WeightMatMul(CView<float>(x.data(), {m, w.k}), weight, View<float>(y.data(), {m, w.n}), ctx);
      const std::string what = std::string(DTypeName(weight.dtype())) + " m=" + std::to_string(m) +
                               " threads=" + std::to_string(threads);
      if (w.dtype == DType::kF32) {
        EXPECT_TRUE(testing::ExpectClose(y.data(), want.data(), Size(y), kF32Tol, what));
      } else {
        EXPECT_EQ(y, want) << what;
      }
    }
  }
}

TEST(WeightMatMul, EachTypeMatchesItsKernelForAnyRowsAndThreads) {
  Rng rng(3);
  for (DType dt : kTypes) {
    const TestWeight w(dt, 37, 512, rng);
    ExpectAloneForAnyRowsAndThreads(w, w.tensor, {1, 3, 8, 9, 21}, rng);
  }
}

// w's blocks regrouped as an owned tensor of the tiled type (w's type's).
Tensor Repacked(const TestWeight& w, DType tiled) {
  Tensor t(tiled, {w.n, w.k});
  RepackTiled(tiled, w.q.data(), w.n, w.k, t.raw());
  return t;
}

TEST(WeightMatMul, Q4_0x16AndQ8_0x16MatchTheirMappedTypeForAnyRowsAndThreads) {
  if (!HasTiledKernels()) GTEST_SKIP() << "no AVX-512 VNNI: tiled weights are never made here";
  Rng rng(6);
  for (const DType tiled : {DType::kQ4_0x16, DType::kQ8_0x16}) {
    const TestWeight w(ToDType(TiledBase(tiled)), 48, 512, rng);
    const Tensor x16 = Repacked(w, tiled);
    const TestWeight other(DType::kQ8_0, 24, 512, rng);
    for (int64_t m : {1, 3, 8, 9, 21}) {  // few rows share a region; 9 and 21 run alone
      const std::vector<float> x = RandomNormal<float>(rng, m * w.k);
      Context one({.threads = 1});
      std::vector<float> mapped(static_cast<size_t>(m * w.n)), first;
      WeightMatMul(CView<float>(x.data(), {m, w.k}), w.tensor, View<float>(mapped.data(), {m, w.n}),
                   one);
      const std::vector<double> ref = Reference(x, m, w);
      for (int threads : {1, 2, 3}) {
        Context ctx({.threads = threads});
        std::vector<float> y(static_cast<size_t>(m * w.n), -1.0f);
        WeightMatMul(CView<float>(x.data(), {m, w.k}), x16, View<float>(y.data(), {m, w.n}), ctx);
        const std::string what = std::string(DTypeName(tiled)) + " m=" + std::to_string(m) +
                                 " threads=" + std::to_string(threads);
        // The same integer sums and scales as the mapped type, in another f32 order.
        EXPECT_TRUE(testing::ExpectClose(y.data(), mapped.data(), Size(y),
                                         {.atol = 1e-5, .rtol = 1e-5, .nmse = 1e-12}, what));
        if (first.empty()) first = y;
        EXPECT_EQ(y, first) << what << ": the split over threads changed bits";
        // Together with another product sharing x (quantised once per layout): the same bits.
        std::vector<float> y2(static_cast<size_t>(m * w.n), -1.0f),
            yo(static_cast<size_t>(m * other.n));
        const WeightProduct both[] = {{x.data(), m, AsWeight(x16), y2.data()},
                                      {x.data(), m, other.ref(), yo.data()}};
        WeightMatMul(both, ctx);
        EXPECT_EQ(y2, first) << what << " (with a Q8_0 product)";
        EXPECT_EQ(yo, Alone(x, m, other, one)) << what << " (the Q8_0 product)";
      }
      double se = 0, sr = 0;
      for (size_t i = 0; i < first.size(); ++i) {
        se += (first[i] - ref[i]) * (first[i] - ref[i]);
        sr += ref[i] * ref[i];
      }
      EXPECT_LE(se / sr, 1e-4) << DTypeName(tiled) << " m=" << m;
    }
  }
  // Rows that are not whole tiles are refused.
  const TestWeight odd(DType::kQ4_0, 40, 64, rng);
  const Tensor bad = Tensor::Borrow(DType::kQ4_0x16, {40, 64}, odd.q.data(), nullptr);
  std::vector<float> x(64, 1.0f), y(40);
  Context ctx({.threads = 1});
  EXPECT_THAT(
      ErrorOf([&] {
        WeightMatMul(CView<float>(x.data(), {1, 64}), bad, View<float>(y.data(), {1, 40}), ctx);
      }),
      HasSubstr("tiles of 16"));
}

TEST(WeightMatMul, KQuantTilesEqualTheMappedBlocksForAnyRowsAndThreads) {
  if (!HasTiledKernels()) GTEST_SKIP() << "no AVX-512 VNNI: tiled weights are never made here";
  Rng rng(7);
  for (const DType tiled : {DType::kQ4_Kx16, DType::kQ5_Kx16, DType::kQ6_Kx16}) {
    const TestWeight w(ToDType(TiledBase(tiled)), 48, 768, rng);
    ExpectAloneForAnyRowsAndThreads(w, Repacked(w, tiled), {1, 5, 8, 9, 21}, rng);
  }
}

TEST(WeightMatMul, QuantisedProductsStayCloseToTheDoubleReference) {
  // What activation quantisation costs on top of the weights' own rounding (NMSE per product).
  Rng rng(4);
  Context ctx({.threads = 2});
  for (DType dt : kTypes) {
    const TestWeight w(dt, 64, 1024, rng);
    const std::vector<float> x = RandomNormal<float>(rng, 4 * w.k);
    std::vector<float> y(static_cast<size_t>(4 * w.n));
    WeightMatMul(CView<float>(x.data(), {4, w.k}), w.tensor, View<float>(y.data(), {4, w.n}), ctx);
    const std::vector<double> r = Reference(x, 4, w);
    double se = 0, sr = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      se += (y[i] - r[i]) * (y[i] - r[i]);
      sr += r[i] * r[i];
    }
    EXPECT_LE(se / sr, dt == DType::kF32 ? 1e-12 : 1e-4) << DTypeName(dt);
  }
}

// Runs the products (product i: x_of(i), holding xs[i]'s values, times ws[i]) in one WeightMatMul
// at each thread count and checks each result against the product alone.
void ExpectTogetherEqualAlone(const std::vector<std::unique_ptr<TestWeight>>& ws,
                              const std::vector<std::vector<float>>& xs,
                              const std::vector<int64_t>& rows,
                              const std::function<const float*(size_t)>& x_of,
                              std::initializer_list<int> thread_counts) {
  for (int threads : thread_counts) {
    Context ctx({.threads = threads});
    std::vector<std::vector<float>> ys(ws.size());
    std::vector<WeightProduct> products;
    for (size_t i = 0; i < ws.size(); ++i) {
      ys[i].assign(static_cast<size_t>(rows[i] * ws[i]->n), -1.0f);
      products.push_back({x_of(i), rows[i], ws[i]->ref(), ys[i].data()});
    }
    WeightMatMul(products, ctx);
    for (size_t i = 0; i < ws.size(); ++i) {
      const std::vector<float> want = Alone(xs[i], rows[i], *ws[i], ctx);
      const std::string what =
          "product " + std::to_string(i) + " threads=" + std::to_string(threads);
      if (ws[i]->dtype == DType::kF32) {
        EXPECT_TRUE(testing::ExpectClose(ys[i].data(), want.data(), Size(want), kF32Tol, what));
      } else {
        EXPECT_EQ(ys[i], want) << what;
      }
    }
  }
}

TEST(WeightMatMul, ManyProductsTogetherEqualEachAlone) {
  // Mixed types and sizes, two products sharing one x (quantised once), few and many rows.
  Rng rng(5);
  std::vector<std::unique_ptr<TestWeight>> ws;
  ws.push_back(std::make_unique<TestWeight>(DType::kQ4_K, 40, 256, rng));
  ws.push_back(std::make_unique<TestWeight>(DType::kQ6_K, 24, 256, rng));
  ws.push_back(std::make_unique<TestWeight>(DType::kF32, 33, 256, rng));
  ws.push_back(std::make_unique<TestWeight>(DType::kQ8_0, 70, 256, rng));
  ws.push_back(std::make_unique<TestWeight>(DType::kQ4_0, 5, 96, rng));
  ws.push_back(std::make_unique<TestWeight>(DType::kQ4_K, 16, 256, rng));
  const int64_t rows[] = {1, 1, 2, 8, 3, 12};
  std::vector<std::vector<float>> xs;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (i == 1) {
      xs.push_back(xs[0]);  // same values; the product below also shares the pointer
    } else {
      xs.push_back(RandomNormal<float>(rng, rows[i] * ws[i]->k));
    }
  }
  ExpectTogetherEqualAlone(ws, xs, std::vector<int64_t>(std::begin(rows), std::end(rows)),
                           [&](size_t i) { return i == 1 ? xs[0].data() : xs[i].data(); },
                           {1, 2, 4});
}

TEST(WeightMatMul, ManyF32ProductsOfManyRowsRunWholeOnEachThread) {
  // Prefill's expert products: enough F32 products of more than 8 rows that each thread takes
  // whole ones (sizes differ, so the largest-first order is not the list order), with a
  // quantised one of many rows in between. Each equals the double reference, for any threads.
  Rng rng(9);
  std::vector<std::unique_ptr<TestWeight>> ws;
  std::vector<int64_t> rows;
  for (int i = 0; i < 13; ++i) {
    const bool q = i == 6;
    ws.push_back(std::make_unique<TestWeight>(q ? DType::kQ8_0 : DType::kF32, 8 + 9 * (i % 5),
                                              64 + 32 * (i % 3), rng));
    rows.push_back(9 + 7 * ((i * 3) % 4));
  }
  std::vector<std::vector<float>> xs;
  for (size_t i = 0; i < ws.size(); ++i) xs.push_back(RandomNormal<float>(rng, rows[i] * ws[i]->k));
  ExpectTogetherEqualAlone(ws, xs, rows, [&](size_t i) { return xs[i].data(); }, {1, 2, 3});
}

TEST(WeightMatMul, EmptyProductsAndZeroWidth) {
  Context ctx({.threads = 2});
  Rng rng(6);
  const TestWeight w(DType::kQ8_0, 8, 64, rng);
  std::vector<float> y(16, 5.0f);
  const WeightProduct none{nullptr, 0, w.ref(), nullptr};
  WeightMatMul(std::span<const WeightProduct>(&none, 1), ctx);  // m = 0: nothing to do
  const std::vector<float> x(2, 1.0f);
  const WeightProduct zero_k{x.data(), 2, {DType::kF32, nullptr, 8, 0}, y.data()};
  WeightMatMul(std::span<const WeightProduct>(&zero_k, 1), ctx);
  EXPECT_EQ(y, std::vector<float>(16, 0.0f));
}

TEST(WeightMatMul, BadWeightsAreClearErrors) {
  Context ctx({.threads = 1});
  std::vector<float> x(64), y(64);
  Tensor bf(DType::kBF16, {4, 16});
  EXPECT_THAT(
      ErrorOf([&] {
        WeightMatMul(CView<float>(x.data(), {1, 16}), bf, View<float>(y.data(), {1, 4}), ctx);
      }),
      HasSubstr("BF16"));
  Tensor vec(DType::kF32, {16});
  EXPECT_THAT(
      ErrorOf([&] {
        WeightMatMul(CView<float>(x.data(), {1, 16}), vec, View<float>(y.data(), {1, 4}), ctx);
      }),
      HasSubstr("not a matrix"));
  Tensor w(DType::kF32, {4, 16});
  EXPECT_THAT(
      ErrorOf([&] {
        WeightMatMul(CView<float>(x.data(), {1, 32}), w, View<float>(y.data(), {1, 4}), ctx);
      }),
      HasSubstr("does not fit"));
  // A quantised row must be whole blocks.
  const WeightProduct odd{x.data(), 1, {DType::kQ4_K, x.data(), 1, 64}, y.data()};
  EXPECT_THAT(ErrorOf([&] { WeightMatMul(std::span<const WeightProduct>(&odd, 1), ctx); }),
              HasSubstr("n=64"));
}

}  // namespace
}  // namespace moe::kernels
