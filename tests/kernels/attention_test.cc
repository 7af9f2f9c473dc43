// AttentionForward / AttentionBackward against the full-score-matrix reference (GQA, MQA,
// Dv != Dk, pos0 > 0, key ranges across blocks), by gradcheck, and by invariants: bitwise equal
// for any thread count, batched == one sequence at a time, KV-cache decode == full recompute,
// GQA == MHA with repeated kv heads.
#include "moe/kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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
using testing::RefAttentionShape;
using testing::ToDouble;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Inputs {
  std::vector<float> q, k, v;
};
Inputs RandomInputs(Rng& rng, const RefAttentionShape& s) {
  return {RandomNormal<float>(rng, s.b * s.t * s.h * s.dk),
          RandomNormal<float>(rng, s.b * s.s * s.hkv * s.dk),
          RandomNormal<float>(rng, s.b * s.s * s.hkv * s.dv)};
}
Shape QShape(const RefAttentionShape& s) { return {s.b, s.t, s.h, s.dk}; }
Shape KShape(const RefAttentionShape& s) { return {s.b, s.s, s.hkv, s.dk}; }
Shape VShape(const RefAttentionShape& s) { return {s.b, s.s, s.hkv, s.dv}; }
Shape OShape(const RefAttentionShape& s) { return {s.b, s.t, s.h, s.dv}; }
Shape LShape(const RefAttentionShape& s) { return {s.b, s.h, s.t}; }

// {b, t, s, h, hkv, dk, dv, pos0}
const RefAttentionShape kShapes[] = {
    {1, 1, 1, 1, 1, 4, 4, 0},      // one token
    {2, 7, 7, 4, 2, 8, 8, 0},      // GQA training
    {1, 5, 12, 4, 1, 16, 8, 6},    // MQA prefill after 6 cached tokens, Dv != Dk, unused keys
    {2, 70, 70, 2, 2, 16, 16, 0},  // more than one 64-block of queries and keys
    {1, 3, 80, 6, 3, 8, 12, 70},   // pos0 crosses a key block
    {1, 1, 130, 4, 2, 8, 8, 129},  // decode of one token over three key blocks
    {2, 1, 50, 8, 2, 16, 12, 40},  // batched decode, groups of 4 query heads, unused keys
    {2, 1, 40, 16, 8, 8, 8, 30},   // 16 (sequence, kv head) units: claimed one at a time
    {1, 1, 33, 8, 8, 8, 8, 32},    // no GQA, 8 units
    // Decode over one kv head (MLA's latent, MQA): split by keys, chunks merged by log-sum-exp.
    {1, 1, 300, 12, 1, 16, 24, 299},  // 12 heads (two row blocks), 5 chunks of 64, last partial
    {1, 1, 100, 3, 1, 8, 8, 70},      // 3 chunks of 32 over 71 keys, unused keys after them
    {1, 1, 20, 5, 1, 8, 8, 19},       // one chunk: written directly
};

double ScaleOf(const RefAttentionShape& s) { return 1.0 / std::sqrt(static_cast<double>(s.dk)); }

TEST(Attention, ForwardMatchesReference) {
  Rng rng(61);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const RefAttentionShape& s : kShapes) {
      SCOPED_TRACE(::testing::Message()
                   << "threads=" << threads << " b=" << s.b << " t=" << s.t << " s=" << s.s
                   << " h=" << s.h << " hkv=" << s.hkv << " pos0=" << s.pos0);
      const Inputs in = RandomInputs(rng, s);
      std::vector<float> out(static_cast<size_t>(OShape(s).numel()), kNaN);
      std::vector<float> lse(static_cast<size_t>(LShape(s).numel()), kNaN);
      const float scale = static_cast<float>(ScaleOf(s));
      AttentionForward<float>(CViewOf(in.q, QShape(s)), CViewOf(in.k, KShape(s)),
                              CViewOf(in.v, VShape(s)), s.pos0, scale, ViewOf(out, OShape(s)),
                              ViewOf(lse, LShape(s)), ctx);
      const auto qd = ToDouble(in.q.data(), Size(in.q)), kd = ToDouble(in.k.data(), Size(in.k)),
                 vd = ToDouble(in.v.data(), Size(in.v));
      const testing::RefAttentionOut want =
          testing::RefAttention(qd.data(), kd.data(), vd.data(), s, scale);
      EXPECT_TRUE(ExpectClose(out.data(), want.out.data(), Size(out), {2e-6, 1e-5, 1e-10}, "out"));
      EXPECT_TRUE(ExpectClose(lse.data(), want.lse.data(), Size(lse), {2e-6, 1e-6, 1e-12}, "lse"));
    }
  }
}

// k or v [B, S, Hkv, D] -> head-major [B, Hkv, cap, D], positions S..cap-1 NaN (never read).
template <typename T>
std::vector<T> ToHeadMajor(const std::vector<T>& x, int64_t b, int64_t s, int64_t hkv, int64_t d,
                           int64_t cap) {
  std::vector<T> y(static_cast<size_t>(b * hkv * cap * d), std::numeric_limits<T>::quiet_NaN());
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t si = 0; si < s; ++si)
      for (int64_t g = 0; g < hkv; ++g)
        std::copy_n(x.begin() + ((bi * s + si) * hkv + g) * d, d,
                    y.begin() + ((bi * hkv + g) * cap + si) * d);
  return y;
}

TEST(Attention, HeadMajorLayoutEqualsTokenMajor) {
  // The inference cache's layout: each kv head's keys contiguous, inside a buffer of more
  // positions than the keys (NaN there, so a read past the keys would show). Bitwise the same
  // outputs and lse as the token-major layout (checked against the reference above), for every
  // path: prefill, GQA decode, one-kv-head decode in chunks, batches, sliding windows.
  Rng rng(65);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const RefAttentionShape& s : kShapes) {
      for (const int64_t window : {int64_t{0}, int64_t{3}, int64_t{40}}) {
        SCOPED_TRACE(::testing::Message() << "threads=" << threads << " b=" << s.b << " t=" << s.t
                                          << " s=" << s.s << " h=" << s.h << " hkv=" << s.hkv
                                          << " pos0=" << s.pos0 << " window=" << window);
        const Inputs in = RandomInputs(rng, s);
        const int64_t cap = s.s + 5;
        const std::vector<float> kh = ToHeadMajor(in.k, s.b, s.s, s.hkv, s.dk, cap);
        const std::vector<float> vh = ToHeadMajor(in.v, s.b, s.s, s.hkv, s.dv, cap);
        const float scale = static_cast<float>(ScaleOf(s));
        std::vector<float> out(static_cast<size_t>(OShape(s).numel()), kNaN), out_h = out;
        std::vector<float> lse(static_cast<size_t>(LShape(s).numel()), kNaN), lse_h = lse;
        AttentionForward<float>(CViewOf(in.q, QShape(s)), CViewOf(in.k, KShape(s)),
                                CViewOf(in.v, VShape(s)), s.pos0, scale, ViewOf(out, OShape(s)),
                                ViewOf(lse, LShape(s)), ctx, window);
        AttentionForward<float>(CViewOf(in.q, QShape(s)), CViewOf(kh, {s.b, s.hkv, cap, s.dk}),
                                CViewOf(vh, {s.b, s.hkv, cap, s.dv}), s.pos0, scale,
                                ViewOf(out_h, OShape(s)), ViewOf(lse_h, LShape(s)), ctx, window,
                                KvLayout::kHeadMajor);
        EXPECT_EQ(0, std::memcmp(out.data(), out_h.data(), sizeof(float) * out.size()));
        EXPECT_EQ(0, std::memcmp(lse.data(), lse_h.data(), sizeof(float) * lse.size()));
      }
    }
  }
  // Rank 3 ([Hkv, cap, D]) in double.
  const RefAttentionShape s{1, 1, 40, 8, 2, 8, 6, 39};
  Context ctx({.threads = 2});
  const std::vector<double> q = RandomNormal<double>(rng, s.h * s.dk),
                            k = RandomNormal<double>(rng, s.s * s.hkv * s.dk),
                            v = RandomNormal<double>(rng, s.s * s.hkv * s.dv);
  const std::vector<double> kh = ToHeadMajor(k, 1, s.s, s.hkv, s.dk, 64),
                            vh = ToHeadMajor(v, 1, s.s, s.hkv, s.dv, 64);
  std::vector<double> out(static_cast<size_t>(s.h * s.dv)), out_h = out;
  AttentionForward<double>(CViewOf(q, {1, s.h, s.dk}), CViewOf(k, {s.s, s.hkv, s.dk}),
                           CViewOf(v, {s.s, s.hkv, s.dv}), s.pos0, 0.3, ViewOf(out, {1, s.h, s.dv}),
                           View<double>(), ctx);
  AttentionForward<double>(CViewOf(q, {1, s.h, s.dk}), CViewOf(kh, {s.hkv, 64, s.dk}),
                           CViewOf(vh, {s.hkv, 64, s.dv}), s.pos0, 0.3,
                           ViewOf(out_h, {1, s.h, s.dv}), View<double>(), ctx, 0,
                           KvLayout::kHeadMajor);
  EXPECT_EQ(0, std::memcmp(out.data(), out_h.data(), sizeof(double) * out.size()));
  // Shapes are read in the layout's order: a token-major-shaped buffer is refused as head-major
  // when the dims do not fit.
  EXPECT_THROW(AttentionForward<double>(CViewOf(q, {1, s.h, s.dk}), CViewOf(k, {s.s, s.hkv, s.dk}),
                                        CViewOf(v, {s.s, s.hkv, s.dv}), s.pos0, 0.3,
                                        ViewOf(out_h, {1, s.h, s.dv}), View<double>(), ctx, 0,
                                        KvLayout::kHeadMajor),
               Error);
}

TEST(Attention, BackwardAccumulatesReference) {
  Rng rng(62);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const RefAttentionShape& s : kShapes) {
      SCOPED_TRACE(::testing::Message() << "threads=" << threads << " b=" << s.b << " t=" << s.t
                                        << " s=" << s.s << " pos0=" << s.pos0);
      const Inputs in = RandomInputs(rng, s);
      const std::vector<float> dout = RandomNormal<float>(rng, OShape(s).numel());
      std::vector<float> out(static_cast<size_t>(OShape(s).numel()));
      std::vector<float> lse(static_cast<size_t>(LShape(s).numel()));
      const float scale = static_cast<float>(ScaleOf(s));
      AttentionForward<float>(CViewOf(in.q, QShape(s)), CViewOf(in.k, KShape(s)),
                              CViewOf(in.v, VShape(s)), s.pos0, scale, ViewOf(out, OShape(s)),
                              ViewOf(lse, LShape(s)), ctx);
      std::vector<float> dq = RandomNormal<float>(rng, Size(in.q));
      std::vector<float> dk = RandomNormal<float>(rng, Size(in.k));
      std::vector<float> dv = RandomNormal<float>(rng, Size(in.v));
      std::vector<double> want_dq = ToDouble(dq.data(), Size(dq)),
                          want_dk = ToDouble(dk.data(), Size(dk)),
                          want_dv = ToDouble(dv.data(), Size(dv));
      const auto qd = ToDouble(in.q.data(), Size(in.q)), kd = ToDouble(in.k.data(), Size(in.k)),
                 vd = ToDouble(in.v.data(), Size(in.v)), dod = ToDouble(dout.data(), Size(dout));
      const testing::RefAttentionGrads g =
          testing::RefAttentionBackward(qd.data(), kd.data(), vd.data(), dod.data(), s, scale);
      for (size_t i = 0; i < want_dq.size(); ++i) want_dq[i] += g.dq[i];
      for (size_t i = 0; i < want_dk.size(); ++i) want_dk[i] += g.dk[i];
      for (size_t i = 0; i < want_dv.size(); ++i) want_dv[i] += g.dv[i];
      AttentionBackward<float>(
          CViewOf(in.q, QShape(s)), CViewOf(in.k, KShape(s)), CViewOf(in.v, VShape(s)),
          CViewOf(out, OShape(s)), CViewOf(lse, LShape(s)), CViewOf(dout, OShape(s)), s.pos0, scale,
          ViewOf(dq, QShape(s)), ViewOf(dk, KShape(s)), ViewOf(dv, VShape(s)), ctx);
      // dk and dv sum over up to T queries and H/Hkv heads.
      const double atol = 2e-6 * std::sqrt(static_cast<double>(s.t * s.h / s.hkv)) * 4;
      EXPECT_TRUE(ExpectClose(dq.data(), want_dq.data(), Size(dq), {atol, 1e-5, 1e-10}, "dq"));
      EXPECT_TRUE(ExpectClose(dk.data(), want_dk.data(), Size(dk), {atol, 1e-5, 1e-10}, "dk"));
      EXPECT_TRUE(ExpectClose(dv.data(), want_dv.data(), Size(dv), {atol, 1e-5, 1e-10}, "dv"));
    }
  }
}

TEST(Attention, GradCheckInDouble) {
  Rng rng(63);
  Context ctx({.threads = 1});
  for (const RefAttentionShape& s :
       {RefAttentionShape{2, 4, 4, 4, 2, 3, 5, 0}, RefAttentionShape{1, 3, 8, 2, 1, 4, 2, 4},
        RefAttentionShape{1, 1, 70, 3, 1, 4, 6, 69}}) {  // decode over one kv head, 3 chunks
    SCOPED_TRACE(::testing::Message() << "t=" << s.t << " s=" << s.s << " pos0=" << s.pos0);
    std::vector<double> q = RandomNormal<double>(rng, QShape(s).numel());
    std::vector<double> k = RandomNormal<double>(rng, KShape(s).numel());
    std::vector<double> v = RandomNormal<double>(rng, VShape(s).numel());
    const std::vector<double> w = RandomNormal<double>(rng, OShape(s).numel());
    std::vector<double> out(w.size()), lse(static_cast<size_t>(LShape(s).numel()));
    const double scale = 0.7;
    auto objective = [&] {
      AttentionForward<double>(CViewOf(q, QShape(s)), CViewOf(k, KShape(s)), CViewOf(v, VShape(s)),
                               s.pos0, scale, ViewOf(out, OShape(s)), ViewOf(lse, LShape(s)), ctx);
      return testing::WeightedSum(out.data(), w.data(), Size(out));
    };
    objective();
    std::vector<double> dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
    AttentionBackward<double>(CViewOf(q, QShape(s)), CViewOf(k, KShape(s)), CViewOf(v, VShape(s)),
                              CViewOf(out, OShape(s)), CViewOf(lse, LShape(s)),
                              CViewOf(w, OShape(s)), s.pos0, scale, ViewOf(dq, QShape(s)),
                              ViewOf(dk, KShape(s)), ViewOf(dv, VShape(s)), ctx);
    // Keys the queries cannot see get no gradient.
    for (int64_t key = s.pos0 + s.t; key < s.s; ++key)
      for (int64_t c = 0; c < s.hkv * s.dk; ++c)
        EXPECT_EQ(dk[static_cast<size_t>(key * s.hkv * s.dk + c)], 0.0);
    EXPECT_TRUE(testing::GradCheck(objective, {{"q", q.data(), dq.data(), Size(q)},
                                               {"k", k.data(), dk.data(), Size(k)},
                                               {"v", v.data(), dv.data(), Size(v)}}));
  }
}

// Runs forward + backward with dout; returns out, lse, dq, dk, dv concatenated.
std::vector<float> RunAll(const RefAttentionShape& s, const Inputs& in,
                          const std::vector<float>& dout, int threads) {
  Context ctx({.threads = threads});
  std::vector<float> out(static_cast<size_t>(OShape(s).numel()));
  std::vector<float> lse(static_cast<size_t>(LShape(s).numel()));
  std::vector<float> dq(in.q.size(), 0.0f), dk(in.k.size(), 0.0f), dv(in.v.size(), 0.0f);
  const float scale = static_cast<float>(ScaleOf(s));
  AttentionForward<float>(CViewOf(in.q, QShape(s)), CViewOf(in.k, KShape(s)),
                          CViewOf(in.v, VShape(s)), s.pos0, scale, ViewOf(out, OShape(s)),
                          ViewOf(lse, LShape(s)), ctx);
  AttentionBackward<float>(
      CViewOf(in.q, QShape(s)), CViewOf(in.k, KShape(s)), CViewOf(in.v, VShape(s)),
      CViewOf(out, OShape(s)), CViewOf(lse, LShape(s)), CViewOf(dout, OShape(s)), s.pos0, scale,
      ViewOf(dq, QShape(s)), ViewOf(dk, KShape(s)), ViewOf(dv, VShape(s)), ctx);
  std::vector<float> all = out;
  for (const auto* part : {&lse, &dq, &dk, &dv}) all.insert(all.end(), part->begin(), part->end());
  return all;
}

TEST(Attention, BitwiseEqualForAnyThreadCount) {
  Rng rng(64);
  const RefAttentionShape s{2, 70, 75, 4, 2, 16, 8, 5};
  const Inputs in = RandomInputs(rng, s);
  const std::vector<float> dout = RandomNormal<float>(rng, OShape(s).numel());
  const std::vector<float> one = RunAll(s, in, dout, 1);
  for (int threads : {2, 3, 5}) {
    const std::vector<float> many = RunAll(s, in, dout, threads);
    EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0) << threads;
  }
}

TEST(Attention, BatchedEqualsOneSequenceAtATime) {
  Rng rng(65);
  const RefAttentionShape s{3, 9, 9, 4, 2, 8, 8, 0};
  const Inputs in = RandomInputs(rng, s);
  const std::vector<float> dout = RandomNormal<float>(rng, OShape(s).numel());
  const std::vector<float> batched = RunAll(s, in, dout, 2);
  RefAttentionShape one = s;
  one.b = 1;
  const int64_t nq = QShape(one).numel(), nk = KShape(one).numel(), nv = VShape(one).numel();
  const int64_t no = OShape(one).numel(), nl = LShape(one).numel();
  for (int64_t b = 0; b < s.b; ++b) {
    auto slice = [](const std::vector<float>& v, int64_t begin, int64_t n) {
      return std::vector<float>(v.begin() + begin, v.begin() + begin + n);
    };
    const Inputs inb{slice(in.q, b * nq, nq), slice(in.k, b * nk, nk), slice(in.v, b * nv, nv)};
    const std::vector<float> single = RunAll(one, inb, slice(dout, b * no, no), 2);
    // Same layout of parts: out, lse, dq, dk, dv, each at batch offset b.
    const int64_t sizes[] = {no, nl, nq, nk, nv};
    int64_t base_batched = 0, base_single = 0;
    for (int64_t n : sizes) {
      EXPECT_EQ(std::memcmp(batched.data() + base_batched + b * n, single.data() + base_single,
                            static_cast<size_t>(n) * sizeof(float)),
                0)
          << "b=" << b << " part of size " << n;
      base_batched += s.b * n;
      base_single += n;
    }
  }
}

TEST(Attention, KvCacheDecodeEqualsFullRecompute) {
  // Prefill 5 tokens, then decode the rest one at a time over a cache buffer of S = 12 keys.
  Rng rng(66);
  Context ctx({.threads = 2});
  const int64_t n = 12, h = 4, hkv = 2, dk = 8, dv = 6;
  const std::vector<float> q = RandomNormal<float>(rng, n * h * dk);
  const std::vector<float> k = RandomNormal<float>(rng, n * hkv * dk);
  const std::vector<float> v = RandomNormal<float>(rng, n * hkv * dv);
  const float scale = 0.35f;
  std::vector<float> full(static_cast<size_t>(n * h * dv));
  AttentionForward<float>(CViewOf(q, {n, h, dk}), CViewOf(k, {n, hkv, dk}),
                          CViewOf(v, {n, hkv, dv}), 0, scale, ViewOf(full, {n, h, dv}),
                          View<float>(), ctx);
  std::vector<float> incremental(full.size(), kNaN);
  for (int64_t pos0 = 0; pos0 < n;) {
    const int64_t t = pos0 == 0 ? 5 : 1;
    AttentionForward<float>(CView<float>(q.data() + pos0 * h * dk, {t, h, dk}),
                            CViewOf(k, {n, hkv, dk}), CViewOf(v, {n, hkv, dv}), pos0, scale,
                            View<float>(incremental.data() + pos0 * h * dv, {t, h, dv}),
                            View<float>(), ctx);
    pos0 += t;
  }
  EXPECT_TRUE(ExpectClose(incremental.data(), full.data(), Size(full), {1e-6, 1e-6, 1e-12}));
}

TEST(Attention, SlidingWindowEqualsAttentionOverTheLastWindowKeys) {
  // Each query at position p attends keys p - W + 1 .. p: the same as unwindowed attention of that
  // one query over just those keys (a query at the end of its own slice). Prefill across key
  // blocks and after cached tokens, windows smaller and larger than the context, GQA, Dv != Dk.
  Rng rng(67);
  Context ctx({.threads = 2});
  const int64_t s = 150, h = 4, dk = 8, dv = 6;
  const std::vector<float> q = RandomNormal<float>(rng, s * h * dk);
  const float scale = 0.35f;
  // GQA, and one kv head (decode then splits the keys into chunks).
  for (const int64_t hkv : {int64_t{2}, int64_t{1}}) {
  const std::vector<float> k = RandomNormal<float>(rng, s * hkv * dk);
  const std::vector<float> v = RandomNormal<float>(rng, s * hkv * dv);
  for (const int64_t window : {1, 5, 64, 100, 400}) {
    for (const int64_t pos0 : {int64_t{0}, int64_t{37}, s - 1}) {  // s - 1: decode one token
      const int64_t t = s - pos0;
      std::vector<float> got(static_cast<size_t>(t * h * dv), kNaN);
      AttentionForward<float>(CView<float>(q.data() + pos0 * h * dk, {t, h, dk}),
                              CViewOf(k, {s, hkv, dk}), CViewOf(v, {s, hkv, dv}), pos0, scale,
                              ViewOf(got, {t, h, dv}), View<float>(), ctx, window);
      std::vector<float> want(got.size(), kNaN);
      for (int64_t i = 0; i < t; ++i) {
        const int64_t p = pos0 + i, lo = std::max<int64_t>(0, p - window + 1), n = p + 1 - lo;
        AttentionForward<float>(CView<float>(q.data() + p * h * dk, {1, h, dk}),
                                CView<float>(k.data() + lo * hkv * dk, {n, hkv, dk}),
                                CView<float>(v.data() + lo * hkv * dv, {n, hkv, dv}), n - 1, scale,
                                View<float>(want.data() + i * h * dv, {1, h, dv}), View<float>(),
                                ctx);
      }
      EXPECT_TRUE(ExpectClose(got.data(), want.data(), Size(want), {1e-6, 1e-5, 1e-12}))
          << "hkv " << hkv << " window " << window << " pos0 " << pos0;
    }
  }
  }
  const int64_t hkv = 2;
  const std::vector<float> k(static_cast<size_t>(s * hkv * dk)), v(static_cast<size_t>(s * hkv * dv));
  std::vector<float> out(static_cast<size_t>(h * dv));
  EXPECT_THROW(AttentionForward<float>(CView<float>(q.data(), {1, h, dk}), CViewOf(k, {s, hkv, dk}),
                                       CViewOf(v, {s, hkv, dv}), 0, scale, ViewOf(out, {1, h, dv}),
                                       View<float>(), ctx, -1),
               Error);
}

TEST(Attention, GroupedQueryEqualsMultiHeadWithRepeatedKv) {
  Rng rng(67);
  const RefAttentionShape gqa{1, 6, 6, 6, 2, 4, 4, 0};
  RefAttentionShape mha = gqa;
  mha.hkv = 6;
  const Inputs in = RandomInputs(rng, gqa);
  Inputs rep{in.q, {}, {}};
  for (int64_t s = 0; s < gqa.s; ++s)
    for (int64_t h = 0; h < gqa.h; ++h) {
      const int64_t g = h / 3;
      for (int64_t c = 0; c < 4; ++c) {
        rep.k.push_back(in.k[static_cast<size_t>((s * 2 + g) * 4 + c)]);
        rep.v.push_back(in.v[static_cast<size_t>((s * 2 + g) * 4 + c)]);
      }
    }
  const std::vector<float> dout = RandomNormal<float>(rng, OShape(gqa).numel());
  const std::vector<float> a = RunAll(gqa, in, dout, 1), b = RunAll(mha, rep, dout, 1);
  // out, lse and dq agree; dk/dv of a kv head is the sum over its repeated copies.
  const int64_t head = OShape(gqa).numel() + LShape(gqa).numel() + QShape(gqa).numel();
  EXPECT_TRUE(ExpectClose(a.data(), b.data(), head, {1e-6, 1e-6, 1e-12}, "out, lse, dq"));
  const float* dk_a = a.data() + head;
  const float* dk_b = b.data() + head;
  const float* dv_a = dk_a + KShape(gqa).numel();
  const float* dv_b = dk_b + KShape(mha).numel();
  std::vector<float> dk_sum(static_cast<size_t>(KShape(gqa).numel()), 0.0f), dv_sum = dk_sum;
  for (int64_t s = 0; s < gqa.s; ++s)
    for (int64_t h = 0; h < 6; ++h)
      for (int64_t c = 0; c < 4; ++c) {
        dk_sum[static_cast<size_t>((s * 2 + h / 3) * 4 + c)] += dk_b[(s * 6 + h) * 4 + c];
        dv_sum[static_cast<size_t>((s * 2 + h / 3) * 4 + c)] += dv_b[(s * 6 + h) * 4 + c];
      }
  EXPECT_TRUE(ExpectClose(dk_a, dk_sum.data(), Size(dk_sum), {1e-6, 1e-5, 1e-12}, "dk"));
  EXPECT_TRUE(ExpectClose(dv_a, dv_sum.data(), Size(dv_sum), {1e-6, 1e-5, 1e-12}, "dv"));
}

TEST(Attention, ShapeErrorsThrow) {
  Context ctx({.threads = 1});
  std::vector<float> buf(4096);
  auto C = [&](Shape s) { return CView<float>(buf.data(), s); };
  std::vector<float> out(4096), lse(4096);
  auto O = [&](Shape s) { return View<float>(out.data(), s); };
  auto L = [&](Shape s) { return View<float>(lse.data(), s); };
  EXPECT_NO_THROW(AttentionForward<float>(C({2, 4, 4, 8}), C({2, 4, 2, 8}), C({2, 4, 2, 6}), 0,
                                          1.0f, O({2, 4, 4, 6}), L({2, 4, 4}), ctx));
  EXPECT_NO_THROW(AttentionForward<float>(C({4, 4, 8}), C({4, 2, 8}), C({4, 2, 6}), 0, 1.0f,
                                          O({4, 4, 6}), L({4, 4}), ctx));
  // heads not a multiple
  EXPECT_THROW(AttentionForward<float>(C({2, 4, 4, 8}), C({2, 4, 3, 8}), C({2, 4, 3, 6}), 0, 1.0f,
                                       O({2, 4, 4, 6}), L({2, 4, 4}), ctx),
               Error);
  // Dk mismatch
  EXPECT_THROW(AttentionForward<float>(C({2, 4, 4, 8}), C({2, 4, 2, 7}), C({2, 4, 2, 6}), 0, 1.0f,
                                       O({2, 4, 4, 6}), L({2, 4, 4}), ctx),
               Error);
  // too few keys for pos0 + T
  EXPECT_THROW(AttentionForward<float>(C({2, 4, 4, 8}), C({2, 4, 2, 8}), C({2, 4, 2, 6}), 1, 1.0f,
                                       O({2, 4, 4, 6}), L({2, 4, 4}), ctx),
               Error);
  // batch mismatch, out with Dk instead of Dv, lse transposed, mixed ranks
  EXPECT_THROW(AttentionForward<float>(C({2, 4, 4, 8}), C({1, 4, 2, 8}), C({1, 4, 2, 6}), 0, 1.0f,
                                       O({2, 4, 4, 6}), L({2, 4, 4}), ctx),
               Error);
  EXPECT_THROW(AttentionForward<float>(C({2, 4, 4, 8}), C({2, 4, 2, 8}), C({2, 4, 2, 6}), 0, 1.0f,
                                       O({2, 4, 4, 8}), L({2, 4, 4}), ctx),
               Error);
  EXPECT_THROW(AttentionForward<float>(C({2, 3, 4, 8}), C({2, 3, 2, 8}), C({2, 3, 2, 6}), 0, 1.0f,
                                       O({2, 3, 4, 6}), L({2, 3, 4}), ctx),
               Error);
  EXPECT_THROW(AttentionForward<float>(C({4, 4, 8}), C({1, 4, 2, 8}), C({1, 4, 2, 6}), 0, 1.0f,
                                       O({4, 4, 6}), L({4, 4}), ctx),
               Error);
  try {
    AttentionForward<float>(C({2, 4, 4, 8}), C({2, 4, 3, 8}), C({2, 4, 3, 6}), 0, 1.0f,
                            O({2, 4, 4, 6}), L({2, 4, 4}), ctx);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2,4,3,8]"), std::string::npos) << e.what();
  }
  // backward: dk without dv, lse missing, dq of the wrong shape
  std::vector<float> g(4096);
  auto G = [&](Shape s) { return View<float>(g.data(), s); };
  EXPECT_NO_THROW(AttentionBackward<float>(C({2, 4, 4, 8}), C({2, 4, 2, 8}), C({2, 4, 2, 6}),
                                           O({2, 4, 4, 6}), L({2, 4, 4}), O({2, 4, 4, 6}), 0, 1.0f,
                                           G({2, 4, 4, 8}), View<float>(), View<float>(), ctx));
  EXPECT_THROW(AttentionBackward<float>(C({2, 4, 4, 8}), C({2, 4, 2, 8}), C({2, 4, 2, 6}),
                                        O({2, 4, 4, 6}), L({2, 4, 4}), O({2, 4, 4, 6}), 0, 1.0f,
                                        View<float>(), G({2, 4, 2, 8}), View<float>(), ctx),
               Error);
  EXPECT_THROW(AttentionBackward<float>(C({2, 4, 4, 8}), C({2, 4, 2, 8}), C({2, 4, 2, 6}),
                                        O({2, 4, 4, 6}), View<float>(), O({2, 4, 4, 6}), 0, 1.0f,
                                        G({2, 4, 4, 8}), View<float>(), View<float>(), ctx),
               Error);
  EXPECT_THROW(AttentionBackward<float>(C({2, 4, 4, 8}), C({2, 4, 2, 8}), C({2, 4, 2, 6}),
                                        O({2, 4, 4, 6}), L({2, 4, 4}), O({2, 4, 4, 6}), 0, 1.0f,
                                        G({2, 4, 4, 6}), View<float>(), View<float>(), ctx),
               Error);
}

}  // namespace
}  // namespace moe::kernels
