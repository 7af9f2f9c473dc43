// Causal scaled-dot-product attention with grouped-query heads (MHA, GQA, MQA, and DeepSeek MLA's
// Dv != Dk).
//
// Shapes (B sequences; a rank-3 view is one sequence, B = 1, with lse [H, T]):
//   q [B, T, H, Dk]   k [B, S, Hkv, Dk]   v [B, S, Hkv, Dv]   out [B, T, H, Dv]   lse [B, H, T]
// H % Hkv == 0 and query head h reads kv head h / (H / Hkv). Query t of every sequence sits at
// absolute position pos0 + t (pos0 = tokens already cached before the queries) and attends keys
// 0 .. pos0 + t:
//   out[b, t, h] = sum_{s <= pos0 + t} softmax_s(scale * q[b, t, h] . k[b, s, g]) v[b, s, g]
// Training is pos0 = 0, S = T; prefill/decode with a KV cache is pos0 = cached tokens and
// S >= pos0 + T (keys at index >= pos0 + T are never read, so k/v may be a whole cache buffer).
// All sequences of a batch share T, S and pos0; sequences with different cache lengths are
// separate calls.
//
// Saved for the backward: lse[b, h, t] = log sum_s exp(scale * q . k_s) per query row (flash
// style). Storing the probabilities would take B*H*T*S values (T = S = 2048, H = 32: 128M floats
// per layer); lse is B*H*T and the backward recomputes the scores block by block.
//
// Work is split over (sequence, head, query block) in the forward; the backward runs two passes,
// each writing disjoint outputs (no atomics, no per-thread partials): dq over (sequence, head,
// query block), then dk/dv over (sequence, kv head, key block), looping over the group's heads in
// order. Both recompute the scores (7 GEMMs per block pair instead of 5). Results are bitwise
// identical for any thread count. Blocks go through moe::kernels::Gemm / MatMulNT.
#pragma once

#include <cstdint>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

// How k and v are stored. kTokenMajor: [B, S, Hkv, D], as above (training, the tests).
// kHeadMajor: [B, Hkv, S, D] (rank 3: [Hkv, S, D]), each kv head's keys and values contiguous:
// the inference KV cache. Decode reads one kv head's keys at a time, and a token-major cache
// would give it D of every Hkv * D floats, a pattern the hardware prefetchers do not follow
// (measured on a Zen 4: ~8 GB/s against ~21 GB/s for a contiguous read on one core); head-major,
// each head's keys are one sequential stream. Same results, bit for bit, in either layout.
enum class KvLayout { kTokenMajor, kHeadMajor };

// out = attention(q, k, v); lse (saved for the backward) may be empty (inference).
// window > 0 is sliding-window attention (Mistral): the query at position p attends keys
// max(0, p - window + 1) .. p only, the last `window` positions including its own (Hugging Face's
// mask); the backward does not take a window (training refuses sliding windows).
template <typename T>
void AttentionForward(CView<T> q /*[B,T,H,Dk]*/, CView<T> k /*[B,S,Hkv,Dk]*/,
                      CView<T> v /*[B,S,Hkv,Dv]*/, int64_t pos0, T scale,
                      View<T> out /*[B,T,H,Dv]*/, View<T> lse /*[B,H,T], saved*/, Context& ctx,
                      int64_t window = 0, KvLayout layout = KvLayout::kTokenMajor);

// Accumulates (+=) into dq, dk and dv; the caller zeroes them. out and lse are the forward's.
// An empty dq skips the query gradient; dk and dv are both given or both empty.
template <typename T>
void AttentionBackward(CView<T> q /*[B,T,H,Dk]*/, CView<T> k /*[B,S,Hkv,Dk]*/,
                       CView<T> v /*[B,S,Hkv,Dv]*/, CView<T> out /*[B,T,H,Dv]*/,
                       CView<T> lse /*[B,H,T]*/, CView<T> dout /*[B,T,H,Dv]*/, int64_t pos0,
                       T scale, View<T> dq /*[B,T,H,Dk]*/, View<T> dk /*[B,S,Hkv,Dk]*/,
                       View<T> dv /*[B,S,Hkv,Dv]*/, Context& ctx);

}  // namespace moe::kernels
