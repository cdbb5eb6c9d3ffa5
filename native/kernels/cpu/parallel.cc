// TEMPORARY serial implementation; the real pool replaces it.
#include "kernels/cpu/parallel.h"

#include <thread>

namespace adrank::cpu {
struct ThreadPool::Impl { int n; };
ThreadPool::ThreadPool(int threads) : impl_(new Impl{threads > 0 ? threads : int(std::thread::hardware_concurrency())}) {}
ThreadPool::~ThreadPool() { delete impl_; }
int ThreadPool::size() const { return impl_->n; }
void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t) { if (n > 0) fn(0, n); }
}  // namespace adrank::cpu
