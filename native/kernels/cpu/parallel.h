// A small fork-join thread pool for the CPU kernels. Many callers (one per in-flight request, on
// the engine's request threads) may call parallel_for at once; each call is its own job, the
// calling thread works on its own job too, so a call always completes even when every worker is
// busy. Idle workers spin for a short while (spin_us), then sleep on a condition variable, and help
// the oldest job that still has chunks to hand out; chunks are claimed dynamically, so uneven
// chunks balance. Nested calls from inside fn are fine (the inner call is a job of its own).
#pragma once

#include <cstdint>
#include <functional>

namespace adrank::cpu {

// How long an idle worker spins for the next job by default, in microseconds: long enough to span
// the gap between one layer's GEMM and the next within a request (a sleeping worker takes tens of
// microseconds to wake on a VM), short enough to cost little CPU after a request (the engine's
// `--cpu-spin-us`, docs/operations.md "CPU threads").
constexpr int kDefaultSpinUs = 50;

class ThreadPool {
 public:
  // threads = total workers including the caller; 0 = std::thread::hardware_concurrency().
  // spin_us: how long an idle worker spins for the next job, and a caller for its helpers' last
  // chunks, before sleeping (0: never spin).
  explicit ThreadPool(int threads = 0, int spin_us = kDefaultSpinUs);
  // Stops and joins the workers; no parallel_for may still be running on the pool.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;

  // Calls fn(begin, end) over [0, n) in chunks of at least `grain` (about 4 chunks per thread
  // when n allows; the last chunk may be shorter), spread over the pool; returns when all chunks
  // are done. n <= grain or a 1-thread pool runs fn(0, n) on the caller. An exception thrown by
  // fn is rethrown here (first one wins; chunks not yet started are then skipped).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace adrank::cpu
