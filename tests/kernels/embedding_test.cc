// EmbeddingForward (an exact gather) and EmbeddingBackward (scatter-add with repeated ids) against
// the reference, bitwise equality across thread counts, gradcheck, and id errors.
#include "moe/kernels/embedding.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <vector>

#include "moe/testing/compare.h"
#include "moe/testing/gradcheck.h"
#include "moe/testing/reference.h"
#include "moe/testing/reference_transformer.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using testing::ExpectClose;
using testing::ToDouble;

std::vector<int32_t> RandomIds(Rng& rng, int64_t t, int64_t v) {
  std::vector<int32_t> ids(static_cast<size_t>(t));
  for (auto& x : ids) x = static_cast<int32_t>(rng.Below(static_cast<uint64_t>(v)));
  return ids;
}

TEST(Embedding, ForwardGathersRows) {
  Rng rng(81);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    const int64_t v = 13, d = 37, t = 50;
    const std::vector<float> table = RandomNormal<float>(rng, v * d);
    const std::vector<int32_t> ids = RandomIds(rng, t, v);
    std::vector<float> y(static_cast<size_t>(t * d), std::numeric_limits<float>::quiet_NaN());
    EmbeddingForward<float>(CViewOf(table, {v, d}), CViewOf(ids, {t}), ViewOf(y, {t, d}), ctx);
    const std::vector<double> td = ToDouble(table.data(), Size(table));
    const std::vector<double> want = testing::RefEmbedding(td.data(), ids.data(), t, d);
    EXPECT_TRUE(ExpectClose(y.data(), want.data(), Size(y), {0, 0, 0}, "y"));
  }
}

TEST(Embedding, BackwardAccumulatesReferenceBitwiseForAnyThreadCount) {
  Rng rng(82);
  const int64_t v = 9, d = 70, t = 64;  // few ids: many repeats
  const std::vector<float> dy = RandomNormal<float>(rng, t * d);
  const std::vector<int32_t> ids = RandomIds(rng, t, v);
  const std::vector<float> init = RandomNormal<float>(rng, v * d);
  const std::vector<double> dyd = ToDouble(dy.data(), Size(dy));
  std::vector<double> want = testing::RefEmbeddingBackward(dyd.data(), ids.data(), t, v, d);
  for (size_t i = 0; i < want.size(); ++i) want[i] += init[i];
  std::vector<float> first;
  for (int threads : {1, 2, 3, 5}) {
    Context ctx({.threads = threads});
    std::vector<float> dtable = init;
    EmbeddingBackward<float>(CViewOf(dy, {t, d}), CViewOf(ids, {t}), ViewOf(dtable, {v, d}), ctx);
    EXPECT_TRUE(ExpectClose(dtable.data(), want.data(), Size(dtable), {1e-5, 1e-5, 1e-12}));
    if (first.empty()) first = dtable;
    EXPECT_EQ(std::memcmp(first.data(), dtable.data(), first.size() * sizeof(float)), 0) << threads;
  }
}

TEST(Embedding, GradCheckInDouble) {
  Rng rng(83);
  Context ctx({.threads = 1});
  const int64_t v = 5, d = 6, t = 8;
  std::vector<double> table = RandomNormal<double>(rng, v * d), y(static_cast<size_t>(t * d));
  const std::vector<double> w = RandomNormal<double>(rng, t * d);
  const std::vector<int32_t> ids = RandomIds(rng, t, v);
  auto objective = [&] {
    EmbeddingForward<double>(CViewOf(table, {v, d}), CViewOf(ids, {t}), ViewOf(y, {t, d}), ctx);
    return testing::WeightedSum(y.data(), w.data(), Size(y));
  };
  std::vector<double> dtable(table.size(), 0.0);
  EmbeddingBackward<double>(CViewOf(w, {t, d}), CViewOf(ids, {t}), ViewOf(dtable, {v, d}), ctx);
  EXPECT_TRUE(testing::GradCheck(objective, {{"table", table.data(), dtable.data(), Size(table)}}));
}

TEST(Embedding, BadIdsAndShapesThrow) {
  Context ctx({.threads = 2});
  std::vector<float> table(4 * 3), y(2 * 3), dy(2 * 3), dtable(4 * 3);
  for (const std::vector<int32_t>& bad :
       {std::vector<int32_t>{0, 4}, std::vector<int32_t>{-1, 0}}) {
    try {
      EmbeddingForward<float>(CViewOf(table, {4, 3}), CViewOf(bad, {2}), ViewOf(y, {2, 3}), ctx);
      ADD_FAILURE() << "bad id accepted";
    } catch (const Error& e) {
      const std::string want = bad[1] == 4 ? "ids[1] = 4" : "ids[0] = -1";
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
    EXPECT_THROW(EmbeddingBackward<float>(CViewOf(dy, {2, 3}), CViewOf(bad, {2}),
                                          ViewOf(dtable, {4, 3}), ctx),
                 Error);
  }
  const std::vector<int32_t> ids = {0, 3};
  EXPECT_THROW(EmbeddingForward<float>(CViewOf(table, {4, 3}), CViewOf(ids, {2}),
                                       View<float>(y.data(), {3, 2}), ctx),
               Error);
  EXPECT_THROW(EmbeddingForward<float>(CViewOf(table, {4, 3}), CView<int32_t>(ids.data(), {1}),
                                       ViewOf(y, {2, 3}), ctx),
               Error);
  EXPECT_THROW(EmbeddingBackward<float>(CViewOf(dy, {2, 3}), CViewOf(ids, {2}),
                                        View<float>(dtable.data(), {3, 4}), ctx),
               Error);
}

}  // namespace
}  // namespace moe::kernels
