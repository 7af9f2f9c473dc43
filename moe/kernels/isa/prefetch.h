// Software prefetch shared by the SIMD kernels that stream memory (quantised weight products,
// decode attention's key and value rows).
#pragma once

#include <cstdint>

namespace moe::kernels {

// How far ahead of the data being computed the kernels prefetch. A call's rows are one ascending
// stream, yet the hardware prefetcher alone left one core well below its read rate from memory
// with most kernels (e.g. mapped Q5_K and tiled Q5_Kx16 at ~1/3, mapped Q4_0 / Q8_0 at ~1/2 with
// one activation row; every kernel at 15-25% with eight rows; decode attention's scores and
// values at 40-75%); with it, ~85-100% (docs/QUANT.md "Prefetching"; gains level off from ~4 KiB).
inline constexpr int64_t kPrefetchAheadBytes = 6144;

// Prefetches the lines `kPrefetchAheadBytes` past [p, p + bytes), up to `end` (past it lie another
// thread's rows or another matrix).
inline __attribute__((always_inline)) void PrefetchAhead(const uint8_t* p, int64_t bytes,
                                                         const uint8_t* end) {
  for (const uint8_t* q = p + kPrefetchAheadBytes; q < p + kPrefetchAheadBytes + bytes && q < end;
       q += 64)
    __builtin_prefetch(q, 0, 3);
}

// For rows `stride_bytes` apart (a head's keys or values): how many bytes ahead the row about
// kPrefetchAheadBytes later starts (at least the next row; a stride of 0, from empty operands,
// stays 0). Computed once per call.
inline int64_t PrefetchRowDistance(int64_t stride_bytes) {
  if (stride_bytes <= 0 || stride_bytes >= kPrefetchAheadBytes) return stride_bytes;
  return kPrefetchAheadBytes / stride_bytes * stride_bytes;
}

// Prefetches [p + distance, p + distance + bytes) (the same columns of a later row), if that row
// starts before `end` (past the last row).
inline __attribute__((always_inline)) void PrefetchRowAhead(const uint8_t* p, int64_t bytes,
                                                            int64_t distance, const uint8_t* end) {
  const uint8_t* q = p + distance;
  if (q >= end) return;
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(q + b, 0, 3);
}

}  // namespace moe::kernels
