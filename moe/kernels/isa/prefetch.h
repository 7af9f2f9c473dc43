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

// Rows of `row_bytes` at a stride of `stride_bytes` (the stride of a head's keys or values): the
// same [col, col + bytes) of the row about kPrefetchAheadBytes later (at least the next one), if
// it lies before `end` (past the last row). For contiguous rows this is PrefetchAhead.
inline __attribute__((always_inline)) void PrefetchRowAhead(const uint8_t* p, int64_t bytes,
                                                            int64_t stride_bytes,
                                                            const uint8_t* end) {
  const int64_t rows = stride_bytes >= kPrefetchAheadBytes ? 1 : kPrefetchAheadBytes / stride_bytes;
  const uint8_t* q = p + rows * stride_bytes;
  if (q >= end) return;
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(q + b, 0, 3);
}

}  // namespace moe::kernels
