// Context: the explicit owner of the thread pool (no globals). Work is split with ParallelFor,
// which gives each worker one static, contiguous chunk, so results that combine per-worker partials
// in worker order are bitwise reproducible for a given thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "moe/core/rng.h"

namespace moe {

class ThreadPool {
 public:
  // n_threads >= 1; the calling thread acts as worker 0, so n_threads - 1 threads are spawned.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_; }

  // Runs fn(worker) once on every worker (0..size-1) and returns when all are done. If a worker
  // throws, the first exception is rethrown here after all workers finish.
  template <typename Fn>
  void Run(Fn&& fn) {
    RunImpl(&Trampoline<std::remove_reference_t<Fn>>, &fn);
  }

 private:
  using TaskFn = void (*)(void*, int);
  template <typename Fn>
  static void Trampoline(void* p, int w) {
    (*static_cast<Fn*>(p))(w);
  }
  void RunImpl(TaskFn fn, void* arg);
  void WorkerLoop(int w);
  void Execute(int w);

  int n_;
  std::vector<std::thread> threads_;
  TaskFn task_ = nullptr;
  void* arg_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex error_mu_;
  std::exception_ptr error_;
  bool running_ = false;  // guards against nested Run on the same pool
};

// Inputs of large f32 matrix products: kept in f32, or rounded to bf16 and multiplied with f32
// accumulation on CPUs with AVX512-BF16 (mixed-precision training: weights, their gradients and the
// optimiser state stay f32; only the products' inputs are rounded).
enum class MatmulPrecision { kF32, kBf16 };

struct ContextOptions {
  int threads = 0;  // 0: all hardware threads (or MOE_THREADS if set)
  uint64_t seed = 0x5eedULL;
  MatmulPrecision matmul_precision = MatmulPrecision::kF32;
};

class Context {
 public:
  explicit Context(ContextOptions opts = {});
  int threads() const { return pool_.size(); }
  ThreadPool& pool() { return pool_; }
  Rng& rng() { return rng_; }
  // Precision of the matrix products that kernels run for this context (Linear layers, grouped
  // experts); see MatmulPrecision. kBf16 is an Error on a CPU without AVX512-BF16.
  MatmulPrecision matmul_precision() const { return precision_; }
  void set_matmul_precision(MatmulPrecision p);

 private:
  ThreadPool pool_;
  Rng rng_;
  MatmulPrecision precision_ = MatmulPrecision::kF32;
};

// Sets a context's matmul precision for one scope and restores it after (e.g. the router stays f32
// in bf16 training). Only set validated precisions: the constructor may throw, the destructor not.
class ScopedMatmulPrecision {
 public:
  ScopedMatmulPrecision(Context& ctx, MatmulPrecision p) : ctx_(ctx), old_(ctx.matmul_precision()) {
    ctx.set_matmul_precision(p);
  }
  ~ScopedMatmulPrecision() { ctx_.set_matmul_precision(old_); }
  ScopedMatmulPrecision(const ScopedMatmulPrecision&) = delete;
  ScopedMatmulPrecision& operator=(const ScopedMatmulPrecision&) = delete;

 private:
  Context& ctx_;
  MatmulPrecision old_;
};

// Default thread count: MOE_THREADS if set, else std::thread::hardware_concurrency().
int DefaultThreads();

// Worker w gets the half-open range [n*w/W, n*(w+1)/W).
inline std::pair<int64_t, int64_t> StaticChunk(int64_t n, int w, int workers) {
  return {n * w / workers, n * (w + 1) / workers};
}

// fn(begin, end, worker) on static contiguous chunks. Runs inline when n is small or single-threaded.
template <typename Fn>
void ParallelForRange(int64_t n, Context& ctx, Fn&& fn, int64_t min_per_worker = 1) {
  if (n <= 0) return;
  int workers = ctx.threads();
  if (min_per_worker > 1) workers = static_cast<int>(std::min<int64_t>(workers, std::max<int64_t>(1, n / min_per_worker)));
  if (workers <= 1 || n == 1) {
    fn(int64_t{0}, n, 0);
    return;
  }
  workers = static_cast<int>(std::min<int64_t>(workers, n));
  ctx.pool().Run([&](int w) {
    if (w >= workers) return;
    auto [b, e] = StaticChunk(n, w, workers);
    if (b < e) fn(b, e, w);
  });
}

// fn(i, worker) for i in [0, n), static chunks.
template <typename Fn>
void ParallelFor(int64_t n, Context& ctx, Fn&& fn) {
  ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int w) {
    for (int64_t i = b; i < e; ++i) fn(i, w);
  });
}

// fn(i, worker) for i in [0, n), each index taken by the next worker to come free (one atomic
// counter): for units whose time depends on the machine (memory-bound work) more than on their
// size, where static chunks would leave a faster thread waiting for a slower one. Which worker
// runs an index varies from run to run, so fn's result for i must not depend on it.
template <typename Fn>
void ParallelForClaimed(int64_t n, Context& ctx, Fn&& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  ParallelForRange(std::min<int64_t>(ctx.threads(), n), ctx, [&](int64_t, int64_t, int w) {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed))
      fn(i, w);
  });
}

}  // namespace moe
