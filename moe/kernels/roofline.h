// Machine ceilings measured in the same run as a benchmark, so results are reported as fractions
// of what this machine does right now (this machine is noisy: compare ratios from one run).
#pragma once

#include <cstdint>
#include <span>

#include "moe/core/context.h"

namespace moe::kernels {

struct Roofline {
  double sgemm_gflops = 0;   // f32 GEMM on all pool threads (our split, single-threaded BLAS)
  double bandwidth_gbs = 0;  // streaming read bandwidth, all pool threads
};

// f32 GEMM rate: C[m,n] = A[m,k] B[n,k]^T split over the pool like the experts are. Best of reps.
double MeasureSgemmGflops(Context& ctx, int64_t m = 2048, int64_t n = 2048, int64_t k = 2048,
                          int reps = 5);
// Read bandwidth over a buffer much larger than the last-level cache. Best of reps.
double MeasureReadBandwidthGBs(Context& ctx, int64_t bytes = int64_t{1} << 30, int reps = 5);
// The same probe over a caller's buffer of n floats (so it can be repeated between other timed
// work without re-allocating); the buffer should have been written by the pool's workers in
// ParallelForRange chunks (first-touch placement). Best of reps.
double MeasureReadBandwidthGBs(Context& ctx, const float* buf, int64_t n, int reps);

// A region of memory to read (any alignment, any content).
struct ByteRegion {
  const void* data = nullptr;
  int64_t bytes = 0;
};

// Read bandwidth over given memory, e.g. the weights of a model where they live: the same prefix
// fraction of every region (at least a cache line of each), about max_bytes in all, split over the pool by bytes and combined
// with integer ORs (so any bytes, quantised or not, read at the same cost). Best of reps. On a
// virtual machine whose memory comes at different speeds from allocation to allocation, this is
// the ceiling for reading those particular pages, which a fresh buffer need not share.
double MeasureRegionReadBandwidthGBs(Context& ctx, std::span<const ByteRegion> regions,
                                     int64_t max_bytes = int64_t{1} << 30, int reps = 3);

Roofline MeasureRoofline(Context& ctx);

// Monotonic wall time in seconds.
double NowSeconds();

}  // namespace moe::kernels
