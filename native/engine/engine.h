// The engine: one loaded model, its live ad state and the backend that serves it. Pure C++ (the
// Node-API glue is in native/addon). Requests are feature bundles (request.h), validated here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/ad_state.h"
#include "engine/backend.h"
#include "engine/model.h"
#include "engine/results.h"
#include "kernels/cpu/parallel.h"

namespace adrank {

class Engine {
 public:
  // device: "cpu" or "cuda:N"; threads: CPU threads, 0 = all hardware threads; precision of the
  // CPU backend's candidate-side GEMMs: "fp32" or "bf16" (needs AVX512-BF16; the CUDA backend
  // computes in bf16 whatever this says).
  Engine(const ModelInit& init, const std::string& device, int threads, const std::string& precision = "fp32");
  ~Engine();

  Result rank(const uint8_t* bundle, size_t len);
  Result retrieve(const uint8_t* bundle, size_t len);
  Result retrieve_and_rank(const uint8_t* bundle, size_t len);
  Explain explain(const uint8_t* bundle, size_t len);

  // Validates everything first, then applies; returns how many ids were unknown.
  int64_t set_ad_state(const int64_t* ids, const uint8_t* active, const uint8_t* in_budget, const float* pacing_rate, size_t n);

  const char* backend_kind() const { return backend_->kind(); }
  std::string description() const { return backend_->description(); }
  int64_t num_ads() const { return model_->num_ads(); }
  const Model& model() const { return *model_; }

 private:
  void sync_device_state(const int32_t* rows, size_t n);
  template <typename F>
  Result timed(const uint8_t* bundle, size_t len, Op op, F&& run);

  std::unique_ptr<cpu::ThreadPool> pool_;
  std::shared_ptr<const Model> model_;
  AdStateTable state_;
  std::unique_ptr<Backend> backend_;
};

}  // namespace adrank
