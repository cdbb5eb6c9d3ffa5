// A Backend runs the model and the funnel for one device. The Engine parses and validates the
// request and owns the model and the live ad state; a backend gets them ready to use. The CPU
// backend (cpu_backend.cc) is always compiled; a CUDA backend slots in through make_backend.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "engine/ad_state.h"
#include "engine/model.h"
#include "engine/request_parser.h"
#include "engine/results.h"

namespace adrank {

namespace cpu {
class ThreadPool;
}

// One entry of a micro-batch: a parsed request and what to do with it.
struct BatchEntry {
  const Request* req = nullptr;
  Op op = Op::kRank;
};

// What a device backend reports about itself (the CPU backend: all zero).
struct DeviceStats {
  int64_t graphs = 0;             // CUDA graphs held (captured and instantiated)
  int64_t capture_failures = 0;   // captures or instantiations that failed (the key then runs eagerly)
  int64_t eager_only_keys = 0;    // keys that run eagerly for good after a failed capture
  int64_t lost_streams = 0;       // streams abandoned by the watchdog (their work never finished)
  int64_t streams = 0;            // streams the backend runs requests on (ADRANK_CUDA_STREAMS); 0 on the CPU
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* kind() const = 0;  // "cpu" | "cuda"
  virtual std::string description() const = 0;
  // Each may be called from several threads at once; they must not modify shared state.
  virtual Result rank(const Request& req, const AdStateTable& state) = 0;
  virtual Result retrieve(const Request& req, const AdStateTable& state) = 0;
  virtual Result retrieve_and_rank(const Request& req, const AdStateTable& state) = 0;
  virtual Explain explain(const Request& req, const AdStateTable& state) = 0;
  // Runs several requests as one batch (src/batcher/): results[i] answers entries[i] exactly as
  // running it alone would. This default runs them side by side on `pool` (one entry per pool
  // thread; the CUDA backend then runs them on its stream pool as separate requests); the CPU
  // backend overrides it to share the request-side GEMMs and run every candidate of the batch
  // through one forward. pool may be null (one after another).
  virtual std::vector<Result> run_batch(const std::vector<BatchEntry>& entries, const AdStateTable& state, cpu::ThreadPool* pool);
  virtual DeviceStats device_stats() const { return {}; }
#ifdef ADRANK_TEST_HOOKS
  // Test builds only: a fault of this backend's own. The CUDA backend knows "capture" (the next n
  // graph captures fail part way, as an unsupported call inside a capture makes them) and "hang"
  // (the next request's work runs n ms longer on the device, for the watchdog). Others throw.
  virtual void inject_fault(const std::string& kind, int n);
#endif
};

#ifdef ADRANK_TEST_HOOKS
// Test builds only: takes one from a count of pending injected faults; true when there was one.
inline bool take_one(std::atomic<int>& pending) {
  int n = pending.load();
  while (n > 0 && !pending.compare_exchange_weak(n, n - 1)) {
  }
  return n > 0;
}
#endif

// A parsed device string: "cpu" or "cuda:N".
struct Device {
  bool cuda = false;
  int index = 0;
};
// Throws "expected cpu or cuda:N for device, got ...".
Device parse_device(const std::string& s);

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model, cpu::ThreadPool* pool);
// Throws a clear error when CUDA is not compiled in or not usable.
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model, int device, cpu::ThreadPool* pool);

}  // namespace adrank
