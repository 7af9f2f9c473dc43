#include "moe/core/context.h"

#include <thread>

#include <cblas.h>

#include <cstdlib>
#include <string>

#include "moe/core/cpu.h"
#include "moe/core/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define MOE_PAUSE() _mm_pause()
#else
#define MOE_PAUSE() \
  do {              \
  } while (0)
#endif

namespace moe {

int DefaultThreads() {
  if (const char* env = std::getenv("MOE_THREADS"); env && *env) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    MOE_CHECK(end && *end == '\0' && v >= 1 && v <= 1024, "context",
              "MOE_THREADS='{}' is not a thread count in 1..1024", env);
    return static_cast<int>(v);
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

ThreadPool::ThreadPool(int n_threads) : n_(n_threads) {
  MOE_CHECK(n_threads >= 1 && n_threads <= 1024, "context", "thread count {} not in 1..1024",
            n_threads);
  threads_.reserve(static_cast<size_t>(n_ - 1));
  for (int w = 1; w < n_; ++w) threads_.emplace_back([this, w] { WorkerLoop(w); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::Execute(int w) {
  try {
    task_(arg_, w);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (!error_) error_ = std::current_exception();
  }
}

namespace {
// Waiting: spin about 20-50 us (back-to-back small tasks stay cheap), then yield the core a few
// times, then sleep on the futex. Long spins are harmful when threads outnumber free cores.
constexpr int kSpins = 2000;
constexpr int kYields = 50;
}  // namespace

void ThreadPool::WorkerLoop(int w) {
  uint64_t seen = 0;
  for (;;) {
    // Spin briefly (low latency for back-to-back small tasks), then sleep on the futex.
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < kSpins; ++spin) {
      MOE_PAUSE();
      g = generation_.load(std::memory_order_acquire);
    }
    for (int y = 0; g == seen && y < kYields; ++y) {
      std::this_thread::yield();
      g = generation_.load(std::memory_order_acquire);
    }
    while (g == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    Execute(w);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::RunImpl(TaskFn fn, void* arg) {
  MOE_CHECK(!running_, "context", "nested ParallelFor on the same pool is not supported");
  if (n_ == 1) {
    fn(arg, 0);
    return;
  }
  running_ = true;
  task_ = fn;
  arg_ = arg;
  error_ = nullptr;
  pending_.store(n_ - 1, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  Execute(0);
  int left = pending_.load(std::memory_order_acquire);
  for (int spin = 0; left != 0 && spin < kSpins; ++spin) {
    MOE_PAUSE();
    left = pending_.load(std::memory_order_acquire);
  }
  // A worker that is not running (more threads than free cores) needs this core: yield it.
  for (int y = 0; left != 0 && y < kYields; ++y) {
    std::this_thread::yield();
    left = pending_.load(std::memory_order_acquire);
  }
  while (left != 0) {
    pending_.wait(left, std::memory_order_acquire);
    left = pending_.load(std::memory_order_acquire);
  }
  running_ = false;
  if (error_) std::rethrow_exception(error_);
}

void Context::set_matmul_precision(MatmulPrecision p) {
  if (p == MatmulPrecision::kBf16) CheckBf16Matmul("context");
  precision_ = p;
}

Context::Context(ContextOptions opts)
    : pool_(opts.threads > 0 ? opts.threads : DefaultThreads()), rng_(opts.seed) {
  set_matmul_precision(opts.matmul_precision);
  // BLAS runs single-threaded inside our pool: we split GEMMs ourselves.
  openblas_set_num_threads(1);
}

}  // namespace moe
