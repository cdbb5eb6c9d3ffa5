#include "engine/engine.h"

#include <chrono>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "engine/request_parser.h"
#include "kernels/cpu/gemm.h"
#ifdef ADRANK_WITH_CUDA
#include "kernels/cuda/cuda_backend.cuh"
#endif

namespace adrank {

namespace {
double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Engine::Engine(const ModelInit& init, const std::string& device, int threads, const std::string& precision)
    : pool_(nullptr), model_(nullptr), state_(0) {
  const Device dev = parse_device(device);
  if (threads < 0) throw std::runtime_error("expected a non-negative thread count for threads, got " + std::to_string(threads));
  if (precision != "fp32" && precision != "bf16") throw std::runtime_error("expected fp32 or bf16 for precision, got \"" + precision + "\"");
  const bool bf16 = precision == "bf16" && !dev.cuda;
  if (bf16 && !cpu::gemm_bf16_available())
    throw std::runtime_error(std::string("precision bf16 requested but ") + cpu::gemm_bf16_reason());
  pool_ = std::make_unique<cpu::ThreadPool>(threads);
  auto model = std::make_shared<Model>(init, pool_.get());
  if (bf16) model->use_bf16_weights();
  model_ = std::move(model);
  state_ = AdStateTable(model_->num_ads());
  backend_ = dev.cuda ? make_cuda_backend(model_, dev.index, pool_.get()) : make_cpu_backend(model_, pool_.get());
  sync_device_state(nullptr, 0);
}

// The CUDA backend keeps a device mirror of the live ad state; rows = null uploads all of it.
void Engine::sync_device_state(const int32_t* rows, size_t n) {
#ifdef ADRANK_WITH_CUDA
  if (std::string(backend_->kind()) == "cuda") cuda::cuda_backend_sync_ad_state(*backend_, state_, rows, n);
#else
  (void)rows;
  (void)n;
#endif
}

Engine::~Engine() = default;

template <typename F>
Result Engine::timed(const uint8_t* bundle, size_t len, Op op, F&& run) {
  const double t0 = now_us();
  const Request req = parse_request(bundle, len, model_->dims(), op);
  Result r = run(req);
  r.timings.total = now_us() - t0;
  return r;
}

Result Engine::rank(const uint8_t* b, size_t n) {
  return timed(b, n, Op::kRank, [&](const Request& q) { return backend_->rank(q, state_); });
}
Result Engine::retrieve(const uint8_t* b, size_t n) {
  return timed(b, n, Op::kRetrieve, [&](const Request& q) { return backend_->retrieve(q, state_); });
}
Result Engine::retrieve_and_rank(const uint8_t* b, size_t n) {
  return timed(b, n, Op::kRetrieveAndRank, [&](const Request& q) { return backend_->retrieve_and_rank(q, state_); });
}
Explain Engine::explain(const uint8_t* b, size_t n) {
  const Request req = parse_request(b, n, model_->dims(), Op::kExplain);
  return backend_->explain(req);
}

int64_t Engine::set_ad_state(const int64_t* ids, const uint8_t* active, const uint8_t* in_budget, const float* rate, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!(rate[i] >= 0.0f && rate[i] <= 1.0f)) {
      std::ostringstream os;
      os << "expected a rate in [0, 1] for pacingRate[" << i << "], got " << rate[i];
      throw std::runtime_error(os.str());
    }
  }
  int64_t unknown = 0;
  std::vector<int32_t> rows;
  rows.reserve(n);
  for (size_t i = 0; i < n; i++) {
    const int32_t row = model_->id_to_row.find(ids[i]);
    if (row < 0) {
      unknown++;
      continue;
    }
    state_.set(row, AdState{active[i] != 0, in_budget[i] != 0, rate[i]});
    rows.push_back(row);
  }
  if (!rows.empty()) sync_device_state(rows.data(), rows.size());
  return unknown;
}

}  // namespace adrank
