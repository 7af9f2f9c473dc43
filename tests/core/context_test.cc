// ThreadPool, ParallelFor, ParallelForRange, ParallelForClaimed and StaticChunk: coverage, partitioning, errors.
#include "moe/core/context.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe/core/error.h"

namespace moe {
namespace {

const int64_t kSizes[] = {0, 1, 2, 3, 4, 5, 7, 16, 63, 100, 1001};

TEST(StaticChunk, PartitionsIntoContiguousBalancedRanges) {
  for (int64_t n = 0; n <= 50; ++n) {
    for (int workers = 1; workers <= 8; ++workers) {
      int64_t expect_begin = 0;
      for (int w = 0; w < workers; ++w) {
        const auto [b, e] = StaticChunk(n, w, workers);
        EXPECT_EQ(b, expect_begin) << "n=" << n << " workers=" << workers << " w=" << w;
        EXPECT_LE(b, e);
        // Sizes differ by at most one.
        EXPECT_GE(e - b, n / workers);
        EXPECT_LE(e - b, n / workers + 1);
        expect_begin = e;
      }
      EXPECT_EQ(expect_begin, n) << "n=" << n << " workers=" << workers;
    }
  }
}

// parallel_for(n, ctx, fn) at every size and thread count visits each index once, from a worker
// of the pool.
template <typename ParallelForFn>
void ExpectEveryIndexOnce(ParallelForFn&& parallel_for) {
  for (int threads = 1; threads <= 4; ++threads) {
    Context ctx({.threads = threads});
    ASSERT_EQ(ctx.threads(), threads);
    for (const int64_t n : kSizes) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<bool> bad_worker{false};
      parallel_for(n, ctx, [&](int64_t i, int w) {
        if (w < 0 || w >= threads) bad_worker = true;
        hits[static_cast<size_t>(i)].fetch_add(1);
      });
      EXPECT_FALSE(bad_worker);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1)
            << "index " << i << " n=" << n << " threads=" << threads;
    }
  }
}

TEST(ParallelFor, VisitsEveryIndexExactlyOnce) {
  ExpectEveryIndexOnce([](int64_t n, Context& ctx, const auto& fn) { ParallelFor(n, ctx, fn); });
}

TEST(ParallelForClaimed, VisitsEveryIndexExactlyOnce) {
  ExpectEveryIndexOnce(
      [](int64_t n, Context& ctx, const auto& fn) { ParallelForClaimed(n, ctx, fn); });
}

struct Chunk {
  int64_t begin, end;
  int worker;
};

// Runs ParallelForRange and returns the chunks it handed out, sorted by begin.
std::vector<Chunk> Chunks(int64_t n, Context& ctx, int64_t min_per_worker) {
  std::mutex mu;
  std::vector<Chunk> chunks;
  ParallelForRange(
      n, ctx,
      [&](int64_t b, int64_t e, int w) {
        std::lock_guard<std::mutex> lock(mu);
        chunks.push_back({b, e, w});
      },
      min_per_worker);
  std::sort(chunks.begin(), chunks.end(),
            [](const Chunk& a, const Chunk& b) { return a.begin < b.begin; });
  return chunks;
}

TEST(ParallelForRange, CoversTheRangeWithOneStaticChunkPerWorker) {
  for (int threads = 1; threads <= 4; ++threads) {
    Context ctx({.threads = threads});
    for (const int64_t n : kSizes) {
      const std::vector<Chunk> chunks = Chunks(n, ctx, 1);
      if (n == 0) {
        EXPECT_TRUE(chunks.empty());
        continue;
      }
      const int workers = static_cast<int>(std::min<int64_t>(threads, n));
      ASSERT_EQ(static_cast<int>(chunks.size()), workers) << "n=" << n << " threads=" << threads;
      std::vector<bool> seen(static_cast<size_t>(threads), false);
      for (int c = 0; c < workers; ++c) {
        const Chunk& ch = chunks[static_cast<size_t>(c)];
        // Chunk c belongs to worker c and is exactly its static share.
        EXPECT_EQ(ch.worker, c);
        const auto [b, e] = StaticChunk(n, c, workers);
        EXPECT_EQ(ch.begin, b);
        EXPECT_EQ(ch.end, e);
        ASSERT_GE(ch.worker, 0);
        ASSERT_LT(ch.worker, threads);
        EXPECT_FALSE(seen[static_cast<size_t>(ch.worker)]) << "worker ran twice";
        seen[static_cast<size_t>(ch.worker)] = true;
      }
      EXPECT_EQ(chunks.back().end, n);
    }
  }
}

TEST(ParallelForRange, MinPerWorkerLimitsTheSplit) {
  for (int threads = 1; threads <= 4; ++threads) {
    Context ctx({.threads = threads});
    for (const int64_t n : {1, 10, 29, 30, 31, 59, 60, 100, 1000}) {
      const int64_t min_per_worker = 30;
      const std::vector<Chunk> chunks = Chunks(n, ctx, min_per_worker);
      const int64_t expect_workers =
          std::min<int64_t>(threads, std::max<int64_t>(1, n / min_per_worker));
      EXPECT_EQ(static_cast<int64_t>(chunks.size()), expect_workers)
          << "n=" << n << " threads=" << threads;
      int64_t next = 0;
      for (const Chunk& c : chunks) {
        EXPECT_EQ(c.begin, next);
        if (n >= min_per_worker) {
          EXPECT_GE(c.end - c.begin, min_per_worker) << "n=" << n << " threads=" << threads;
        }
        next = c.end;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(ThreadPool, RunsEveryWorkerOnce) {
  for (int threads = 1; threads <= 4; ++threads) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::atomic<int>> ran(static_cast<size_t>(threads));
      pool.Run([&](int w) { ran[static_cast<size_t>(w)].fetch_add(1); });
      for (int w = 0; w < threads; ++w) ASSERT_EQ(ran[static_cast<size_t>(w)].load(), 1);
    }
  }
}

TEST(ThreadPool, BadThreadCountIsAnError) {
  EXPECT_THROW(ThreadPool(0), Error);
  EXPECT_THROW(ThreadPool(-3), Error);
  EXPECT_THROW(Context({.threads = 5000}), Error);
}

TEST(ThreadPool, WorkerExceptionIsRethrownAndThePoolStaysUsable) {
  for (int threads = 1; threads <= 4; ++threads) {
    ThreadPool pool(threads);
    // Thrown on the last worker (a spawned thread when threads > 1), then on the calling thread.
    for (const int thrower : {threads - 1, 0}) {
      std::atomic<int> ran{0};
      try {
        pool.Run([&](int w) {
          ran.fetch_add(1);
          if (w == thrower) throw std::runtime_error("boom " + std::to_string(w));
        });
        ADD_FAILURE() << "no exception, threads=" << threads;
      } catch (const std::runtime_error& e) {
        EXPECT_EQ(std::string(e.what()), "boom " + std::to_string(thrower));
      }
      // Every worker still ran (the pool waits for all before rethrowing).
      EXPECT_EQ(ran.load(), threads);
      // And the pool keeps working afterwards.
      std::atomic<int> after{0};
      pool.Run([&](int) { after.fetch_add(1); });
      EXPECT_EQ(after.load(), threads);
    }
  }
}

TEST(ThreadPool, ExceptionsFromManyWorkersRethrowOne) {
  ThreadPool pool(4);
  EXPECT_THROW(pool.Run([](int w) { throw std::runtime_error(std::to_string(w)); }),
               std::runtime_error);
  std::atomic<int> after{0};
  pool.Run([&](int) { after.fetch_add(1); });
  EXPECT_EQ(after.load(), 4);
}

TEST(ParallelFor, ExceptionReachesTheCaller) {
  for (int threads = 1; threads <= 3; ++threads) {
    Context ctx({.threads = threads});
    EXPECT_THROW(ParallelFor(100, ctx,
                             [](int64_t i, int) {
                               if (i == 77) Fail("test", "index {}", i);
                             }),
                 Error);
    std::atomic<int64_t> sum{0};
    ParallelFor(100, ctx, [&](int64_t i, int) { sum.fetch_add(i); });
    EXPECT_EQ(sum.load(), 4950);
  }
}

TEST(ThreadPool, NestedRunOnTheSamePoolIsAnError) {
  // A pool of one runs the task inline on the caller, so nesting is only detectable with >= 2.
  for (int threads = 2; threads <= 4; ++threads) {
    Context ctx({.threads = threads});
    try {
      ParallelFor(64, ctx, [&](int64_t, int) { ParallelFor(64, ctx, [](int64_t, int) {}); });
      ADD_FAILURE() << "nested ParallelFor did not throw, threads=" << threads;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[context] nested"), std::string::npos) << e.what();
    }
    // Direct nested Run from a worker and from the caller.
    EXPECT_THROW(ctx.pool().Run([&](int) { ctx.pool().Run([](int) {}); }), Error);
    // The pool is usable afterwards.
    std::atomic<int64_t> count{0};
    ParallelFor(1000, ctx, [&](int64_t, int) { count.fetch_add(1); });
    EXPECT_EQ(count.load(), 1000);
  }
}

TEST(ThreadPool, ManySmallBackToBackRuns) {
  // Exercises the spin/wait hand-off between generations.
  Context ctx({.threads = 3});
  int64_t total = 0;
  for (int rep = 0; rep < 300; ++rep) {
    std::atomic<int64_t> sum{0};
    ParallelFor(3, ctx, [&](int64_t i, int) { sum.fetch_add(i + 1); });
    total += sum.load();
  }
  EXPECT_EQ(total, 300 * 6);
}

TEST(Context, MoeThreadsEnvironmentIsParsed) {
  ASSERT_EQ(setenv("MOE_THREADS", "3", 1), 0);
  EXPECT_EQ(DefaultThreads(), 3);
  EXPECT_EQ(Context().threads(), 3);
  ASSERT_EQ(setenv("MOE_THREADS", "three", 1), 0);
  EXPECT_THROW(DefaultThreads(), Error);
  ASSERT_EQ(setenv("MOE_THREADS", "0", 1), 0);
  EXPECT_THROW(DefaultThreads(), Error);
  ASSERT_EQ(unsetenv("MOE_THREADS"), 0);
  EXPECT_GE(DefaultThreads(), 1);
}

}  // namespace
}  // namespace moe
