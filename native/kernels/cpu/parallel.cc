// Fork-join thread pool: a list of open jobs, `size() - 1` worker threads that spin briefly, then
// sleep on a condition variable, until a job has unclaimed chunks, and callers that run chunks of
// their own job.
//
// A job is a range [0, n) cut into chunks of `chunk` items, claimed with one atomic fetch_add each,
// so chunks are handed out dynamically (load balancing) and each chunk runs exactly once. The
// caller claims chunks of its own job like any worker; once none are left it sleeps until the
// chunks that helpers claimed are finished. A job is shared_ptr-owned, so a helper that finishes
// the last chunk after the caller has been woken never touches freed memory.
#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace adrank::cpu {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Spins (pause) until pred() holds or `us` microseconds have passed; returns pred()'s last value.
// The clock is read every 64 pauses, not per pause.
template <class Pred>
bool spin_until(Pred pred, int us) {
  if (us <= 0) return pred();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (pred()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
  }
}

struct Job {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t n, chunk, chunks;
  std::atomic<int64_t> next{0};      // next chunk to claim
  std::atomic<int64_t> finished{0};  // chunks done (run, skipped after an error, or failed)
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // written once, by the thread that set `failed`
  std::mutex mu;
  std::condition_variable done_cv;

  bool exhausted() const { return next.load(std::memory_order_relaxed) >= chunks; }

  // Claims and runs chunks until none are left. Returns after the last claimed chunk is counted.
  void work() {
    for (;;) {
      int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      if (!failed.load(std::memory_order_relaxed)) {
        int64_t begin = c * chunk, end = std::min(n, begin + chunk);
        try {
          (*fn)(begin, end);
        } catch (...) {
          bool expected = false;
          if (failed.compare_exchange_strong(expected, true)) error = std::current_exception();
        }
      }
      // acq_rel: publishes this chunk's writes (and `error`) to the caller that sees the count.
      if (finished.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mu);
        done_cv.notify_all();
      }
    }
  }
};

}  // namespace

struct ThreadPool::Impl {
  int size = 1;
  int spin_us = 0;
  std::mutex mu;
  std::condition_variable work_cv;
  std::deque<std::shared_ptr<Job>> jobs;  // open jobs, oldest first; guarded by mu
  bool stop = false;
  std::vector<std::thread> workers;
  // Bumped (after the push, under mu) for every job and at stop: a spinning worker watches it
  // without taking the lock.
  std::atomic<uint64_t> pushed{0};

  // Oldest job that still has chunks to claim; drops exhausted ones. Requires mu held.
  std::shared_ptr<Job> pick() {
    while (!jobs.empty() && jobs.front()->exhausted()) jobs.pop_front();
    for (auto& j : jobs)
      if (!j->exhausted()) return j;
    return nullptr;
  }

  // Between jobs a worker spins for up to spin_us watching `pushed` (a request's layers come a
  // few microseconds apart: no futex wake-up, no sleep and reschedule between them), then sleeps
  // on work_cv.
  void worker_loop() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      std::shared_ptr<Job> job;
      if (stop) return;
      job = pick();
      if (!job && spin_us > 0) {
        const uint64_t seen = pushed.load(std::memory_order_acquire);
        lock.unlock();
        const bool moved = spin_until([&] { return pushed.load(std::memory_order_acquire) != seen; }, spin_us);
        lock.lock();
        if (moved) continue;  // a job (or stop) arrived: look again under the lock
      }
      if (!job) {
        work_cv.wait(lock, [&] { return stop || (job = pick()) != nullptr; });
        if (stop) return;
      }
      lock.unlock();
      job->work();
      job.reset();
      lock.lock();
    }
  }
};

ThreadPool::ThreadPool(int threads, int spin_us) : impl_(new Impl) {
  if (threads <= 0) threads = std::max(1, int(std::thread::hardware_concurrency()));
  impl_->size = threads;
  impl_->spin_us = std::max(0, spin_us);
  impl_->workers.reserve(threads - 1);
  for (int i = 0; i + 1 < threads; i++) impl_->workers.emplace_back([this] { impl_->worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
    impl_->pushed.fetch_add(1, std::memory_order_release);
  }
  impl_->work_cv.notify_all();
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

int ThreadPool::size() const { return impl_->size; }

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t threads = impl_->size;
  if (threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  // About 4 chunks per thread: small enough to balance uneven chunks, large enough to keep the
  // per-chunk atomic and wake-up cost low. Never below the grain.
  int64_t chunk = std::max(grain, n / (4 * threads));
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  job->chunk = chunk;
  job->chunks = (n + chunk - 1) / chunk;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->jobs.push_back(job);
    impl_->pushed.fetch_add(1, std::memory_order_release);
  }
  int64_t helpers = std::min<int64_t>(job->chunks - 1, threads - 1);
  if (helpers >= threads - 1)
    impl_->work_cv.notify_all();
  else
    for (int64_t i = 0; i < helpers; i++) impl_->work_cv.notify_one();

  job->work();
  {
    // No chunk is left to claim: take the job off the list so workers stop looking at it.
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto& jobs = impl_->jobs;
    jobs.erase(std::remove(jobs.begin(), jobs.end(), job), jobs.end());
  }
  // The helpers' last chunks are usually microseconds from done: spin for them first.
  if (!spin_until([&] { return job->finished.load(std::memory_order_acquire) == job->chunks; }, impl_->spin_us)) {
    std::unique_lock<std::mutex> lock(job->mu);
    job->done_cv.wait(lock, [&] { return job->finished.load(std::memory_order_acquire) == job->chunks; });
  }
  if (job->failed.load(std::memory_order_acquire)) std::rethrow_exception(job->error);
}

}  // namespace adrank::cpu
