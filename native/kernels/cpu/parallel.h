// A small fork-join thread pool for the CPU kernels. Many callers (one per in-flight request, on
// the engine's request threads) may call parallel_for at once; each call is its own job, the
// calling thread works on its own job too, so a call always completes even when every worker is
// busy. Idle workers spin for a short while (spin_us), then sleep on a condition variable, and help
// the oldest job that still has chunks to hand out; chunks are claimed dynamically, so uneven
// chunks balance. Nested calls from inside fn are fine (the inner call is a job of its own).
#pragma once

#include <algorithm>
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

// How a forward over `count` rows is cut into chunks (the CPU backend's candidate chunks, each run
// on one thread, every chunk reading all the weights): up to `whole_upto` rows, one chunk (its
// products are then split over the pool instead); above, equal chunks, as many per thread for each
// as keep them within `max_rows`, but no more chunks than leave `min_rows` rows each (a smaller
// chunk reads the weights for too few rows; with fewer chunks than threads the products of each are
// split over the pool). 600 rows on 2 threads at most 256: 4 × 150, not 256 + 256 + 88; 40 rows:
// 20 + 20, not 32 + 8 (an earlier floor of 32 rows a chunk, imbalanced: Zen 4, bf16, a forward of
// 33 to 60 rows took 1.2–1.6× as long).
struct RowChunks {
  int64_t rows = 0;    // rows per chunk (the last may have fewer)
  int64_t chunks = 0;
};
inline RowChunks row_chunks(int64_t count, int threads, int64_t max_rows, int64_t whole_upto, int64_t min_rows) {
  if (count <= 0) return {};
  if (count <= whole_upto) return {count, 1};
  const int64_t t = threads > 1 ? threads : 1;
  const int64_t per_thread = (count + t * max_rows - 1) / (t * max_rows);
  const int64_t by_size = count / (min_rows > 0 ? min_rows : 1);
  const int64_t want = std::max<int64_t>(1, std::min(t * per_thread, by_size));
  const int64_t rows = (count + want - 1) / want;
  return {rows, (count + rows - 1) / rows};
}

}  // namespace adrank::cpu
