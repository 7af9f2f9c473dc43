// Machine ceilings measured in the same run as a benchmark, so results are reported as fractions
// of what this machine does right now (this machine is noisy: compare ratios from one run).
#pragma once

#include <cstdint>

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

Roofline MeasureRoofline(Context& ctx);

// Monotonic wall time in seconds.
double NowSeconds();

}  // namespace moe::kernels
