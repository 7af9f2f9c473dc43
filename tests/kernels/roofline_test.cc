#include "moe/kernels/roofline.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace moe::kernels {
namespace {

// Odd sizes and misaligned starts, sampled and whole: under ASan any read past a region fails.
TEST(RegionBandwidth, ReadsOnlyInsideRegionsOfAnySizeAndAlignment) {
  Context ctx({.threads = 2});
  std::vector<std::unique_ptr<uint8_t[]>> owned;
  std::vector<ByteRegion> regions;
  for (int64_t n : {1, 7, 63, 64, 65, 1000, 4097, 100001}) {
    owned.push_back(std::make_unique<uint8_t[]>(static_cast<size_t>(n) + 1));
    regions.push_back({owned.back().get() + 1, n});  // start one byte in: misaligned
  }
  EXPECT_GT(MeasureRegionReadBandwidthGBs(ctx, regions), 0.0);
  EXPECT_GT(MeasureRegionReadBandwidthGBs(ctx, regions, /*max_bytes=*/5000, /*reps=*/1), 0.0);
  EXPECT_GT(MeasureRegionReadBandwidthGBs(ctx, regions, /*max_bytes=*/1, /*reps=*/1), 0.0);
}

TEST(RegionBandwidth, NothingToReadIsZero) {
  Context ctx({.threads = 2});
  EXPECT_EQ(MeasureRegionReadBandwidthGBs(ctx, {}), 0.0);
  const std::vector<ByteRegion> empty = {{nullptr, 100}, {nullptr, 0}};
  EXPECT_EQ(MeasureRegionReadBandwidthGBs(ctx, empty), 0.0);
}

}  // namespace
}  // namespace moe::kernels
