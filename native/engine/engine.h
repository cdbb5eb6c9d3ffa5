// The engine: one loaded model, its live ad state and the backend that serves it. Pure C++ (the
// Node-API glue is in native/addon). Requests are feature bundles (request.h), validated here.
#pragma once

#include <condition_variable>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#ifdef ADRANK_TEST_HOOKS
#include <atomic>
#endif

#include "engine/ad_state.h"
#include "engine/backend.h"
#include "engine/fallback.h"
#include "engine/model.h"
#include "engine/results.h"
#include "kernels/cpu/parallel.h"

namespace adrank {

// One request of a micro-batch (Engine::run_batch): a feature bundle and its op.
struct BatchInput {
  Op op = Op::kRank;
  const uint8_t* data = nullptr;
  size_t len = 0;
};
// Its answer: the result, or why this request alone was refused (error non-empty).
struct BatchOutput {
  Result result;
  std::string error;
};

class Engine {
 public:
  // device: "cpu" or "cuda:N"; threads: CPU threads, 0 = all hardware threads; precision of the
  // CPU backend's candidate-side GEMMs: "fp32" or "bf16" (needs AVX512-BF16; the CUDA backend
  // computes in bf16 whatever this says); spin_us: how long the CPU threads spin for the next
  // parallel step before sleeping (cpu::ThreadPool); < 0: the device's default, kDefaultSpinUs on
  // the CPU backend and 0 on CUDA (there the pool only fans a batch's requests out, and each
  // request then waits for its stream: nothing to catch by spinning).
  Engine(const ModelInit& init, const std::string& device, int threads, const std::string& precision = "fp32",
         int spin_us = -1);
  ~Engine();

  Result rank(const uint8_t* bundle, size_t len);
  Result retrieve(const uint8_t* bundle, size_t len);
  Result retrieve_and_rank(const uint8_t* bundle, size_t len);
  Explain explain(const uint8_t* bundle, size_t len);
  // Several requests as one backend run. A request that fails to parse gets its error and the rest
  // still run; an error in the run itself throws (the whole batch fails). timings.total of every
  // result is the batch's wall time.
  std::vector<BatchOutput> run_batch(const std::vector<BatchInput>& in);

  // Runs `task` on one of the engine's own request threads (as many as its CPU threads, started at
  // the first call), oldest first: each request runs on one of them, its parallel work spread over
  // the engine's pool as before. A task must not own the last reference to this engine.
  void submit(std::function<void()> task);

  // Fallback answers (engine/fallback.h): set one surface's plan (at load), answer from it.
  void set_fallback(uint32_t surface, const int32_t* listed, size_t n_listed, float value, const float* probs, size_t n_probs);
  Result fallback(const uint8_t* bundle, size_t len, Op op) const;

#ifdef ADRANK_TEST_HOOKS
  // Test builds only (cmake -DADRANK_TEST_HOOKS=ON): the next n model runs fail as a device error,
  // an illegal address or (hung) the CUDA watchdog's verdict.
  void inject_device_errors(int n, bool hung = false) {
    injected_hung_ = hung;
    injected_errors_ = n;
  }
  // A fault inside the backend (Backend::inject_fault).
  void inject_backend_fault(const std::string& kind, int n) {
    require_model();
    backend_->inject_fault(kind, n);
  }
#endif
  DeviceStats device_stats() const { return backend_ ? backend_->device_stats() : DeviceStats{}; }

  // Sets the whole live state of each listed ad; bid[i] is the live bid override, NaN = the
  // bundle's bid (bid may be null: no overrides). Validates everything first, then publishes one
  // new snapshot, so a request sees all of the batch or none of it. Returns the unknown id count.
  int64_t set_ad_state(const int64_t* ids, const uint8_t* active, const uint8_t* in_budget, const float* pacing_rate,
                       const float* bid, size_t n);
  // The snapshot a request runs with.
  std::shared_ptr<const AdStateTable> ad_state() const;
  // Chunks the last published batch copied (copy-on-write; AdStateTable::kChunkRows rows each).
  int64_t ad_state_last_copied() const { return last_copied_.load(); }

  // "none" for an ads-only engine (ModelInit::ads_only): it answers from the fallback only.
  const char* backend_kind() const { return backend_ ? backend_->kind() : "none"; }
  std::string description() const { return backend_ ? backend_->description() : "ad tables only (fallback answers)"; }
  int64_t num_ads() const { return model_->num_ads(); }
  const Model& model() const { return *model_; }

 private:
  void require_model() const;  // throws for an ads-only engine
  void check_mapping(bool stat_file = true) const;  // throws when the mapped bundle file changed since load
  void maybe_inject_device_error();
  void sync_device_state(const AdStateTable& state, const int32_t* rows, size_t n);
  template <typename F>
  Result timed(const uint8_t* bundle, size_t len, Op op, F&& run);

  std::unique_ptr<cpu::ThreadPool> pool_;
  std::shared_ptr<const Model> model_;
  mutable std::mutex state_mu_;  // guards the state_ pointer (held only to copy or swap it)
  std::mutex write_mu_;          // one writer at a time (copy → apply → publish)
  std::shared_ptr<const AdStateTable> state_;
  std::atomic<int64_t> last_copied_{0};
  std::unique_ptr<Backend> backend_;
  std::vector<FallbackPlan> fallback_;  // per surface; empty until set
  // the request threads (submit)
  std::mutex run_mu_;
  std::condition_variable run_cv_;
  std::deque<std::function<void()>> run_queue_;
  std::vector<std::thread> runners_;
  bool run_stop_ = false;
  std::shared_ptr<const PlanOrder> by_bid_;  // the plan of a surface that lists no ads
#ifdef ADRANK_TEST_HOOKS
  std::atomic<int> injected_errors_{0};
  std::atomic<bool> injected_hung_{false};
#endif
};

}  // namespace adrank
