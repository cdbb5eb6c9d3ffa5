#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "engine/clock.h"
#include "engine/completion.h"
#include "engine/request_parser.h"
#include "kernels/cpu/gemm.h"
#ifdef ADRANK_WITH_CUDA
#include "engine/cuda_backend.cuh"
#endif

namespace adrank {

Engine::Engine(const ModelInit& init, const std::string& device, int threads, const std::string& precision, int spin_us)
    : pool_(nullptr), model_(nullptr) {
  const Device dev = parse_device(device);
  if (threads < 0) throw std::runtime_error("expected a non-negative thread count for threads, got " + std::to_string(threads));
  if (precision != "fp32" && precision != "bf16") throw std::runtime_error("expected fp32 or bf16 for precision, got \"" + precision + "\"");
  const bool bf16 = precision == "bf16" && !dev.cuda;
  if (bf16 && !cpu::gemm_bf16_available())
    throw std::runtime_error(std::string("precision bf16 requested but ") + cpu::gemm_bf16_reason());
  if (spin_us < 0) spin_us = dev.cuda ? 0 : cpu::kDefaultSpinUs;
  pool_ = std::make_unique<cpu::ThreadPool>(threads, spin_us);
  auto model = std::make_shared<Model>(init, pool_.get());
  if (bf16) model->use_bf16_weights();
  model_ = std::move(model);
  state_ = std::make_shared<const AdStateTable>(model_->num_ads(), model_->ad_bid.data());
  if (model_->ads_only()) return;  // fallback answers only: no backend, no device
  backend_ = dev.cuda ? make_cuda_backend(model_, dev.index, pool_.get()) : make_cpu_backend(model_, pool_.get());
  sync_device_state(*state_, nullptr, 0);
}

// The CUDA backend keeps a device mirror of the live ad state; rows = null uploads all of it.
void Engine::sync_device_state(const AdStateTable& state, const int32_t* rows, size_t n) {
#ifdef ADRANK_WITH_CUDA
  if (backend_ && std::string(backend_->kind()) == "cuda") cuda::cuda_backend_sync_ad_state(*backend_, state, rows, n);
#else
  (void)state;
  (void)rows;
  (void)n;
#endif
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(run_mu_);
    run_stop_ = true;
  }
  run_cv_.notify_all();
  for (std::thread& t : runners_) t.join();
}

void Engine::submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(run_mu_);
    run_queue_.push_back(std::move(task));
    if (runners_.empty()) {
      const int n = std::max(1, pool_->size());
      for (int i = 0; i < n; i++)
        runners_.emplace_back([this] {
          std::unique_lock<std::mutex> lock(run_mu_);
          for (;;) {
            run_cv_.wait(lock, [&] { return run_stop_ || !run_queue_.empty(); });
            if (run_queue_.empty()) return;  // stopping, nothing left
            std::function<void()> next = std::move(run_queue_.front());
            run_queue_.pop_front();
            lock.unlock();
            next();
            next = nullptr;
            lock.lock();
          }
        });
    }
  }
  run_cv_.notify_one();
}

void Engine::require_model() const {
  if (!backend_) throw std::runtime_error("no model: this engine holds the ad tables only and serves fallback answers (--fallback-only)");
}

// A bundle file changed under its mapping (engine/mapped_file.h): nothing computed from it leaves.
// Before a run `stat_file` is false (the fault mark only, no system call: it only spares the work);
// the check after the run reads the file's size and mtime too, and decides.
void Engine::check_mapping(bool stat_file) const {
  const std::string why = model_->mapping_changed(stat_file);
  if (!why.empty()) throw std::runtime_error(why + "; this model version refuses to answer (load a valid bundle)");
}

template <typename F>
Result Engine::timed(const uint8_t* bundle, size_t len, Op op, F&& run) {
  const double t0 = steady_us();
  const Request req = parse_request(bundle, len, model_->dims(), op);
  require_model();
  check_mapping(false);
  maybe_inject_device_error();
  Result r = run(req);
  check_mapping();
  r.timings.total = steady_us() - t0;
  return r;
}

// Test builds only: fail this run as a device error while injected errors are pending.
void Engine::maybe_inject_device_error() {
#ifdef ADRANK_TEST_HOOKS
  if (!take_one(injected_errors_)) return;
  if (injected_hung_.load()) throw StreamHung(stream_hung_message(0, 0) + " (injected by a test hook)");
  throw std::runtime_error("CUDA error cudaErrorIllegalAddress: an illegal memory access was encountered (injected by a test hook)");
#endif
}

std::shared_ptr<const AdStateTable> Engine::ad_state() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  return state_;
}

// Each request holds the snapshot it started with until it ends.
Result Engine::rank(const uint8_t* b, size_t n) {
  return timed(b, n, Op::kRank, [&](const Request& q) { return backend_->rank(q, *ad_state()); });
}
Result Engine::retrieve(const uint8_t* b, size_t n) {
  return timed(b, n, Op::kRetrieve, [&](const Request& q) { return backend_->retrieve(q, *ad_state()); });
}
Result Engine::retrieve_and_rank(const uint8_t* b, size_t n) {
  return timed(b, n, Op::kRetrieveAndRank, [&](const Request& q) { return backend_->retrieve_and_rank(q, *ad_state()); });
}
Explain Engine::explain(const uint8_t* b, size_t n) {
  const Request req = parse_request(b, n, model_->dims(), Op::kExplain);
  require_model();
  check_mapping(false);
  Explain e = backend_->explain(req, *ad_state());
  check_mapping();
  return e;
}

void Engine::set_fallback(uint32_t surface, const int32_t* listed, size_t n_listed, float value, const float* probs, size_t n_probs) {
  if (surface >= uint32_t(model_->dims().surfaces))
    throw std::runtime_error("expected a surface index < " + std::to_string(model_->dims().surfaces) + " for fallback surface, got " + std::to_string(surface));
  FallbackPlan plan = make_fallback_plan(*model_, listed, n_listed, value, probs, n_probs, by_bid_);
  if (n_listed == 0) by_bid_ = plan.rows;  // one by-bid order (8 bytes per ad) for every such surface
  if (fallback_.size() < size_t(model_->dims().surfaces)) fallback_.resize(size_t(model_->dims().surfaces));
  fallback_[surface] = std::move(plan);
}

Result Engine::fallback(const uint8_t* bundle, size_t len, Op op) const {
  const double t0 = steady_us();
  const Request req = parse_request(bundle, len, model_->dims(), op);
  if (req.surface >= fallback_.size() || !fallback_[req.surface].rows)
    throw std::runtime_error("no fallback plan for surface " + std::to_string(req.surface) + " (set_fallback was not called)");
  const std::shared_ptr<const AdStateTable> state = ad_state();
  check_mapping(false);
  Result r = fallback_answer(*model_, *state, req, op, fallback_[req.surface]);
  check_mapping();
  r.timings.select = r.timings.total = steady_us() - t0;
  return r;
}

std::vector<BatchOutput> Engine::run_batch(const std::vector<BatchInput>& in) {
  require_model();
  const double t0 = steady_us();
  std::vector<BatchOutput> out(in.size());
  std::vector<Request> reqs;
  std::vector<size_t> index;
  reqs.reserve(in.size());
  for (size_t i = 0; i < in.size(); i++) {
    try {
      reqs.push_back(parse_request(in[i].data, in[i].len, model_->dims(), in[i].op));
      index.push_back(i);
    } catch (const std::exception& e) {
      out[i].error = e.what();
    }
  }
  std::vector<BatchEntry> entries(reqs.size());
  for (size_t j = 0; j < reqs.size(); j++) entries[j] = BatchEntry{&reqs[j], in[index[j]].op};
  maybe_inject_device_error();
  const std::shared_ptr<const AdStateTable> state = ad_state();  // the snapshot the whole batch runs with
  check_mapping(false);
  std::vector<Result> results = backend_->run_batch(entries, *state, pool_.get());
  check_mapping();
  const double total = steady_us() - t0;
  for (size_t j = 0; j < results.size(); j++) {
    out[index[j]].result = std::move(results[j]);
    out[index[j]].result.timings.total = total;
  }
  return out;
}

int64_t Engine::set_ad_state(const int64_t* ids, const uint8_t* active, const uint8_t* in_budget, const float* rate,
                             const float* bid, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!(rate[i] >= 0.0f && rate[i] <= 1.0f)) {
      std::ostringstream os;
      os << "expected a rate in [0, 1] for pacingRate[" << i << "], got " << rate[i];
      throw std::runtime_error(os.str());
    }
    if (bid && !std::isnan(bid[i]) && !(bid[i] >= 0.0f && std::isfinite(bid[i]))) {
      std::ostringstream os;
      os << "expected a finite bid >= 0 (or NaN for the bundle's bid) for bid[" << i << "], got " << bid[i];
      throw std::runtime_error(os.str());
    }
  }
  std::lock_guard<std::mutex> writer(write_mu_);
  // copy-on-write: shares every chunk of the current snapshot, copies the ones this batch writes
  std::shared_ptr<AdStateTable> next = ad_state()->successor();
  int64_t unknown = 0;
  std::vector<int32_t> rows;
  rows.reserve(n);
  for (size_t i = 0; i < n; i++) {
    const int32_t row = model_->id_to_row.find(ids[i]);
    if (row < 0) {
      unknown++;
      continue;
    }
    const float b = bid && !std::isnan(bid[i]) ? bid[i] : model_->ad_bid[size_t(row)];
    next->set(row, AdState{active[i] != 0, in_budget[i] != 0, rate[i]}, b);
    rows.push_back(row);
  }
  if (!rows.empty()) {
    sync_device_state(*next, rows.data(), rows.size());
    last_copied_ = int64_t(next->chunks_copied());
    next->publish();
    std::shared_ptr<const AdStateTable> old;  // released outside the lock
    std::lock_guard<std::mutex> lock(state_mu_);
    old = std::move(state_);
    state_ = std::move(next);
  }
  return unknown;
}

}  // namespace adrank
