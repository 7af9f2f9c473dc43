#include "moe/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "moe/kernels/isa/row_ops.h"
#include "moe/kernels/matmul.h"

namespace moe::kernels {
namespace {

constexpr int64_t kBlock = 64;             // query and key block for the dk/dv pass
constexpr int64_t kScoreBudget = 1 << 18;  // scores per worker in the full-row passes

// [B, T, H, D] of a rank-4 view, or of a rank-3 one as B = 1.
struct Dims {
  int64_t b, t, h, d;
};
Dims Dims4(const Shape& s) {
  if (s.rank == 4) return {s[0], s[1], s[2], s[3]};
  return {1, s[0], s[1], s[2]};
}

struct Geometry {
  int64_t b, t, s, h, hkv, dk, dv, pos0;
  bool head_major = false;  // k, v as [B, Hkv, S, D]
  int64_t group() const { return h / hkv; }
  // Element offsets of (b, t, h) rows and their leading dims.
  int64_t Q(int64_t bi, int64_t ti, int64_t hi) const { return ((bi * t + ti) * h + hi) * dk; }
  int64_t O(int64_t bi, int64_t ti, int64_t hi) const { return ((bi * t + ti) * h + hi) * dv; }
  int64_t K(int64_t bi, int64_t si, int64_t gi) const { return KvRow(bi, si, gi) * dk; }
  int64_t V(int64_t bi, int64_t si, int64_t gi) const { return KvRow(bi, si, gi) * dv; }
  int64_t L(int64_t bi, int64_t hi, int64_t ti) const { return (bi * h + hi) * t + ti; }
  int64_t ldq() const { return h * dk; }
  int64_t ldo() const { return h * dv; }
  int64_t ldk() const { return head_major ? dk : hkv * dk; }
  int64_t ldv() const { return head_major ? dv : hkv * dv; }
  // Row index of key/value (bi, si, gi) in units of the head dim.
  int64_t KvRow(int64_t bi, int64_t si, int64_t gi) const {
    return head_major ? (bi * hkv + gi) * s + si : (bi * s + si) * hkv + gi;
  }
  // Rows of the full-row passes: bounded so that rows * keys stays within the budget.
  int64_t RowBlock() const { return std::clamp<int64_t>(kScoreBudget / (pos0 + t), 1, kBlock); }
};

Shape Make(int rank, int64_t b, int64_t x, int64_t y, int64_t z) {
  return rank == 4 ? Shape{b, x, y, z} : Shape{x, y, z};
}
Shape LseShape(int rank, int64_t b, int64_t h, int64_t t) {
  return rank == 4 ? Shape{b, h, t} : Shape{h, t};
}

template <typename T>
Geometry CheckInputs(const char* op, CView<T> q, CView<T> k, CView<T> v, int64_t pos0,
                     KvLayout layout = KvLayout::kTokenMajor) {
  const int rank = q.rank();
  const bool head_major = layout == KvLayout::kHeadMajor;
  MOE_CHECK((rank == 3 || rank == 4) && k.rank() == rank && v.rank() == rank, "attention",
            "{}: q {}, k {}, v {} must all be [B,T,H,D] or all [T,H,D]", op, q.shape.str(),
            k.shape.str(), v.shape.str());
  const Dims qd = Dims4(q.shape);
  Dims kd = Dims4(k.shape), vd = Dims4(v.shape);
  if (head_major) {  // stored [B, Hkv, S, D]: swap into the logical (S, Hkv)
    std::swap(kd.t, kd.h);
    std::swap(vd.t, vd.h);
  }
  MOE_CHECK(kd.b == qd.b && vd.b == qd.b && vd.t == kd.t && vd.h == kd.h && kd.d == qd.d,
            "attention",
            "{}: q {}, k {}, v {} do not fit (k must be {}, v {} with q's B and Dk)", op,
            q.shape.str(), k.shape.str(), v.shape.str(),
            head_major ? "[B,Hkv,S,Dk]" : "[B,S,Hkv,Dk]", head_major ? "[B,Hkv,S,Dv]" : "[B,S,Hkv,Dv]");
  MOE_CHECK(kd.h > 0 && qd.h % kd.h == 0 && qd.d > 0 && vd.d > 0, "attention",
            "{}: q {} has {} heads, not a positive multiple of k {}'s {} heads (or a head dim "
            "is 0; v {})",
            op, q.shape.str(), qd.h, k.shape.str(), kd.h, v.shape.str());
  MOE_CHECK(pos0 >= 0 && kd.t >= pos0 + qd.t, "attention",
            "{}: {} keys in k {} cannot hold pos0 {} + {} queries of q {}", op, kd.t, k.shape.str(),
            pos0, qd.t, q.shape.str());
  return Geometry{qd.b, qd.t, kd.t, qd.h, kd.h, qd.d, vd.d, pos0, head_major};
}

template <typename T>
void CheckShape(const char* op, const char* name, const Shape& got, const Shape& want) {
  MOE_CHECK(got == want, "attention", "{}: {} is {}, expected {}", op, name, got.str(), want.str());
}

// Scales row s[0, n) by `scale`, turns [0, valid) into softmax probabilities and zeroes
// [valid, n); returns the log-sum-exp of the scaled valid scores.
template <typename T>
T MaskedSoftmaxRow(T* s, int64_t valid, int64_t n, T scale) {
  if constexpr (std::is_same_v<T, float>) {
    const float l = ActiveRowOps().softmax(s, valid, scale);
    std::fill(s + valid, s + n, 0.0f);
    return l;
  }
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < valid; ++j) {
    s[j] *= scale;
    mx = std::max(mx, s[j]);
  }
  T sum = 0;
  for (int64_t j = 0; j < valid; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j < valid; ++j) s[j] *= inv;
  std::fill(s + valid, s + n, T(0));
  return mx + std::log(sum);
}

// y[m, n] (+)= x[m, k] * w[k, n] for few rows m (probabilities times value rows).
template <typename T>
void SmallNN(const T* x, int64_t ldx, int64_t m, const T* w, int64_t ldw, int64_t k, int64_t n,
             T* y, int64_t ldy, bool accumulate) {
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t r = 0; r < m; r += kSmallM)
      ActiveRowOps().matmul_nn_small(x + r * ldx, ldx, std::min(kSmallM, m - r), w, ldw, k, n,
                                     y + r * ldy, ldy, accumulate);
  } else {
    Gemm<T>(false, false, m, n, k, T(1), x, ldx, w, ldw, accumulate ? T(1) : T(0), y, ldy);
  }
}

// Decode (one query per sequence) of a single (sequence, kv head) unit, which the per-head path
// would leave on one thread: MLA's latent (all heads over one cached head) and MQA. The keys are
// cut into chunks whose length depends on the geometry only (so the result does not depend on the
// thread count); each chunk computes the scores of all heads in blocks of kDecodeKeys positions,
// its own softmax and a partial output, and a merge weights the chunks by their log-sum-exp
// (flash-decoding). One chunk writes the output directly. For several kv heads the per-head
// products read the cache as well and need no merge (measured: this path was slower there).
constexpr int64_t kDecodeKeys = 32;

template <typename T>
void DecodeAttention(CView<T> q, CView<T> k, CView<T> v, const Geometry& g, int64_t window,
                     T scale, View<T> out, View<T> lse, Context& ctx) {
  const int64_t h = g.h, max_keys = g.pos0 + 1;  // b = hkv = 1: the head group is all h heads
  const int64_t j0 = window > 0 ? std::max<int64_t>(0, g.pos0 - window + 1) : 0;
  const int64_t n = max_keys - j0;
  // Chunks long enough that the partial outputs (H * Dv per chunk) stay within ~1/8 of the key
  // and value bytes the chunk reads (MLA: many heads over one wide latent head).
  int64_t chunk = kDecodeKeys;
  while (chunk * (g.dk + g.dv) < 8 * h * g.dv) chunk *= 2;
  const int64_t nchunks = (n + chunk - 1) / chunk, span = std::min(chunk, n);
  const bool direct = nchunks == 1;
  std::vector<T> scores(static_cast<size_t>(ctx.threads() * h * span));
  // Per chunk: the partial output [H, Dv] and log-sum-exp [H].
  std::vector<T> part_out(direct ? 0 : static_cast<size_t>(nchunks * h * g.dv));
  std::vector<T> part_lse(direct ? 0 : static_cast<size_t>(nchunks * h));
  ParallelFor(nchunks, ctx, [&](int64_t c, int w) {
    const int64_t c0 = j0 + c * chunk, cn = std::min(chunk, max_keys - c0);
    T* sc = scores.data() + w * h * span;
    for (int64_t jb = 0; jb < cn; jb += kDecodeKeys) {
      const int64_t nb = std::min(kDecodeKeys, cn - jb);
      for (int64_t r = 0; r < h; r += kSmallM)
        MatMulNT<T>(q.data + g.Q(0, 0, r), g.dk, std::min(kSmallM, h - r),
                    k.data + g.K(0, c0 + jb, 0), g.ldk(), nb, g.dk, sc + r * cn + jb, cn, false);
    }
    for (int64_t i = 0; i < h; ++i) {
      const T l = MaskedSoftmaxRow<T>(sc + i * cn, cn, cn, scale);
      if (!direct)
        part_lse[static_cast<size_t>(c * h + i)] = l;
      else if (!lse.empty())
        lse[g.L(0, i, 0)] = l;
    }
    T* o = direct ? out.data + g.O(0, 0, 0) : part_out.data() + c * h * g.dv;
    for (int64_t jb = 0; jb < cn; jb += kDecodeKeys)
      SmallNN<T>(sc + jb, cn, h, v.data + g.V(0, c0 + jb, 0), g.ldv(),
                 std::min(kDecodeKeys, cn - jb), g.dv, o, g.dv, jb > 0);
  });
  if (direct) return;
  // The merge is small next to the chunks (inline unless there are many heads' worth).
  const int64_t min_heads = std::max<int64_t>(1, (1 << 15) / (nchunks * g.dv));
  ParallelForRange(h, ctx, [&](int64_t h0, int64_t h1, int) {
    for (int64_t i = h0; i < h1; ++i) {
      const T* pl = part_lse.data() + i;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t c = 0; c < nchunks; ++c) mx = std::max(mx, pl[c * h]);
      T sum = 0;
      for (int64_t c = 0; c < nchunks; ++c) sum += std::exp(pl[c * h] - mx);
      const T total = mx + std::log(sum);
      T* o = out.data + g.O(0, 0, i);
      std::fill(o, o + g.dv, T(0));
      for (int64_t c = 0; c < nchunks; ++c) {
        const T wgt = std::exp(pl[c * h] - total);
        const T* po = part_out.data() + (c * h + i) * g.dv;
        for (int64_t d = 0; d < g.dv; ++d) o[d] += wgt * po[d];
      }
      if (!lse.empty()) lse[g.L(0, i, 0)] = total;
    }
  }, min_heads);
}

}  // namespace

template <typename T>
void AttentionForward(CView<T> q, CView<T> k, CView<T> v, int64_t pos0, T scale, View<T> out,
                      View<T> lse, Context& ctx, int64_t window, KvLayout layout) {
  const Geometry g = CheckInputs("AttentionForward", q, k, v, pos0, layout);
  const int rank = q.rank();
  CheckShape<T>("AttentionForward", "out", out.shape, Make(rank, g.b, g.t, g.h, g.dv));
  if (!lse.empty())
    CheckShape<T>("AttentionForward", "lse", lse.shape, LseShape(rank, g.b, g.h, g.t));
  MOE_CHECK(window >= 0, "attention", "AttentionForward: window = {} must be >= 0", window);
  if (g.t == 0 || g.b == 0) return;

  const int64_t max_keys = pos0 + g.t;
  if (g.t == 1 && g.b * g.hkv == 1) {
    // One sequence decoding over one kv head (MLA's latent, MQA): split over the keys instead.
    DecodeAttention(q, k, v, g, window, scale, out, lse, ctx);
    return;
  }
  if (g.t == 1) {
    // One query per sequence (decode): the group of query heads that share a key/value head are
    // adjacent rows of q and out, so they run as one product against the keys and one against
    // the values, each key and value row read once for the whole group (one head without GQA),
    // through the few-row kernels (sgemm's small-matrix path was ~2x slower for the values).
    const int64_t gs = g.group(), j0 = window > 0 ? std::max<int64_t>(0, pos0 - window + 1) : 0;
    const int64_t n = max_keys - j0;
    std::vector<T> scratch(static_cast<size_t>(ctx.threads() * gs * n));
    auto run_unit = [&](int64_t unit, int w) {
      const int64_t b = unit / g.hkv, kv = unit % g.hkv, h0 = kv * gs;
      T* sc = scratch.data() + w * gs * n;
      for (int64_t r = 0; r < gs; r += kSmallM)
        MatMulNT<T>(q.data + g.Q(b, 0, h0 + r), g.dk, std::min(kSmallM, gs - r),
                    k.data + g.K(b, j0, kv), g.ldk(), n, g.dk, sc + r * n, n, false);
      for (int64_t i = 0; i < gs; ++i) {
        const T l = MaskedSoftmaxRow<T>(sc + i * n, n, n, scale);
        if (!lse.empty()) lse[g.L(b, h0 + i, 0)] = l;
      }
      SmallNN<T>(sc, n, gs, v.data + g.V(b, j0, kv), g.ldv(), n, g.dv, out.data + g.O(b, 0, h0),
                 g.dv, false);
    };
    // With several units (sequence, kv head) a thread, they are claimed one at a time: a thread
    // the machine slows down then takes fewer instead of keeping the others waiting at the end.
    // A unit's result does not depend on the thread that computes it.
    const int64_t units = g.b * g.hkv;
    if (units >= 4 * ctx.threads()) {
      ParallelForClaimed(units, ctx, run_unit);
    } else {
      ParallelFor(units, ctx, run_unit);
    }
    return;
  }
  const int64_t bq = g.RowBlock(), nqb = (g.t + bq - 1) / bq;
  std::vector<T> scratch(static_cast<size_t>(ctx.threads() * bq * max_keys));
  ParallelFor(g.b * g.h * nqb, ctx, [&](int64_t unit, int w) {
    const int64_t b = unit / (g.h * nqb), h = unit / nqb % g.h, t0 = unit % nqb * bq;
    const int64_t t1 = std::min(t0 + bq, g.t), m = t1 - t0, end = pos0 + t1;
    // Keys [j0, end): with a window, the first key the block's first query sees.
    const int64_t j0 = window > 0 ? std::max<int64_t>(0, pos0 + t0 - window + 1) : 0, n = end - j0;
    const int64_t kv = h / g.group();
    T* sc = scratch.data() + w * bq * max_keys;
    MatMulNT<T>(q.data + g.Q(b, t0, h), g.ldq(), m, k.data + g.K(b, j0, kv), g.ldk(), n, g.dk, sc,
                n, false);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t pos = pos0 + t0 + i;
      const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) - j0 : 0;
      T* row = sc + i * n;
      std::fill(row, row + lo, T(0));
      const T l = MaskedSoftmaxRow<T>(row + lo, pos + 1 - j0 - lo, n - lo, scale);
      if (!lse.empty()) lse[g.L(b, h, t0 + i)] = l;
    }
    Gemm<T>(false, false, m, g.dv, n, T(1), sc, n, v.data + g.V(b, j0, kv), g.ldv(), T(0),
            out.data + g.O(b, t0, h), g.ldo());
  });
}

template <typename T>
void AttentionBackward(CView<T> q, CView<T> k, CView<T> v, CView<T> out, CView<T> lse,
                       CView<T> dout, int64_t pos0, T scale, View<T> dq, View<T> dk, View<T> dv,
                       Context& ctx) {
  const char* op = "AttentionBackward";
  const Geometry g = CheckInputs(op, q, k, v, pos0);
  const int rank = q.rank();
  const Shape out_shape = Make(rank, g.b, g.t, g.h, g.dv);
  CheckShape<T>(op, "out", out.shape, out_shape);
  CheckShape<T>(op, "dout", dout.shape, out_shape);
  CheckShape<T>(op, "lse", lse.shape, LseShape(rank, g.b, g.h, g.t));
  const bool want_dq = !dq.empty(), want_dkv = !dk.empty() || !dv.empty();
  if (want_dq) CheckShape<T>(op, "dq", dq.shape, q.shape);
  if (want_dkv) {
    CheckShape<T>(op, "dk", dk.shape, k.shape);
    CheckShape<T>(op, "dv", dv.shape, v.shape);
  }
  if (g.t == 0 || g.b == 0) return;

  // delta[b, h, t] = dout . out, the row term of the softmax backward.
  std::vector<T> delta(static_cast<size_t>(g.b * g.h * g.t));
  ParallelFor(g.b * g.t, ctx, [&](int64_t bt, int) {
    const int64_t b = bt / g.t, t = bt % g.t;
    for (int64_t h = 0; h < g.h; ++h) {
      const T* o = out.data + g.O(b, t, h);
      const T* d = dout.data + g.O(b, t, h);
      T s = 0;
      for (int64_t c = 0; c < g.dv; ++c) s += o[c] * d[c];
      delta[static_cast<size_t>(g.L(b, h, t))] = s;
    }
  });

  // P[i, j] = exp(scale * raw - lse_i) where key j0 + j is visible to query t0 + i, else 0;
  // dS = scale * P (dP - delta). Rewrites sc into P and dp into dS.
  auto probs_and_dscores = [&](T* sc, T* dp, int64_t b, int64_t h, int64_t t0, int64_t m,
                               int64_t j0, int64_t n) {
    for (int64_t i = 0; i < m; ++i) {
      const int64_t visible = std::clamp<int64_t>(pos0 + t0 + i + 1 - j0, 0, n);
      const T l = lse[g.L(b, h, t0 + i)], di = delta[static_cast<size_t>(g.L(b, h, t0 + i))];
      T* s = sc + i * n;
      T* d = dp + i * n;
      for (int64_t j = 0; j < visible; ++j) {
        const T p = std::exp(scale * s[j] - l);
        s[j] = p;
        d[j] = scale * p * (d[j] - di);
      }
      std::fill(s + visible, s + n, T(0));
      std::fill(d + visible, d + n, T(0));
    }
  };

  if (want_dq) {
    // Pass 1: dq over (sequence, head, query block), full rows of keys.
    const int64_t bq = g.RowBlock(), nqb = (g.t + bq - 1) / bq, max_keys = pos0 + g.t;
    std::vector<T> scratch(static_cast<size_t>(ctx.threads() * 2 * bq * max_keys));
    ParallelFor(g.b * g.h * nqb, ctx, [&](int64_t unit, int w) {
      const int64_t b = unit / (g.h * nqb), h = unit / nqb % g.h, t0 = unit % nqb * bq;
      const int64_t t1 = std::min(t0 + bq, g.t), m = t1 - t0, n = pos0 + t1;
      const int64_t kv = h / g.group();
      T* sc = scratch.data() + w * 2 * bq * max_keys;
      T* dp = sc + bq * max_keys;
      MatMulNT<T>(q.data + g.Q(b, t0, h), g.ldq(), m, k.data + g.K(b, 0, kv), g.ldk(), n, g.dk, sc,
                  n, false);
      MatMulNT<T>(dout.data + g.O(b, t0, h), g.ldo(), m, v.data + g.V(b, 0, kv), g.ldv(), n, g.dv,
                  dp, n, false);
      probs_and_dscores(sc, dp, b, h, t0, m, 0, n);
      Gemm<T>(false, false, m, g.dk, n, T(1), dp, n, k.data + g.K(b, 0, kv), g.ldk(), T(1),
              dq.data + g.Q(b, t0, h), g.ldq());
    });
  }

  if (want_dkv) {
    // Pass 2: dk, dv over (sequence, kv head, key block); the group's heads and the query blocks
    // that can see the key block are visited in order.
    const int64_t keys = pos0 + g.t, nkb = (keys + kBlock - 1) / kBlock;
    std::vector<T> scratch(static_cast<size_t>(ctx.threads() * 2 * kBlock * kBlock));
    ParallelFor(g.b * g.hkv * nkb, ctx, [&](int64_t unit, int w) {
      const int64_t b = unit / (g.hkv * nkb), kv = unit / nkb % g.hkv, j0 = unit % nkb * kBlock;
      const int64_t n = std::min(j0 + kBlock, keys) - j0;
      T* sc = scratch.data() + w * 2 * kBlock * kBlock;
      T* dp = sc + kBlock * kBlock;
      for (int64_t h = kv * g.group(); h < (kv + 1) * g.group(); ++h) {
        for (int64_t t0 = std::max<int64_t>(0, j0 - pos0); t0 < g.t; t0 += kBlock) {
          const int64_t m = std::min(t0 + kBlock, g.t) - t0;
          MatMulNT<T>(q.data + g.Q(b, t0, h), g.ldq(), m, k.data + g.K(b, j0, kv), g.ldk(), n, g.dk,
                      sc, n, false);
          MatMulNT<T>(dout.data + g.O(b, t0, h), g.ldo(), m, v.data + g.V(b, j0, kv), g.ldv(), n,
                      g.dv, dp, n, false);
          probs_and_dscores(sc, dp, b, h, t0, m, j0, n);
          // dv[j0:j0+n] += P^T dout;  dk[j0:j0+n] += dS^T q
          Gemm<T>(true, false, n, g.dv, m, T(1), sc, n, dout.data + g.O(b, t0, h), g.ldo(), T(1),
                  dv.data + g.V(b, j0, kv), g.ldv());
          Gemm<T>(true, false, n, g.dk, m, T(1), dp, n, q.data + g.Q(b, t0, h), g.ldq(), T(1),
                  dk.data + g.K(b, j0, kv), g.ldk());
        }
      }
    });
  }
}

#define MOE_INSTANTIATE(T)                                                                       \
  template void AttentionForward<T>(CView<T>, CView<T>, CView<T>, int64_t, T, View<T>, View<T>,  \
                                    Context&, int64_t, KvLayout);                                \
  template void AttentionBackward<T>(CView<T>, CView<T>, CView<T>, CView<T>, CView<T>, CView<T>, \
                                     int64_t, T, View<T>, View<T>, View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
