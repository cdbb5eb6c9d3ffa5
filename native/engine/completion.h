// Waiting for work another agent finishes (a CUDA stream's host function), with a watchdog.
//
// The state is heap-owned and shared: the waiter holds one reference, the signaller another
// (`Completion::ticket`, freed by `Completion::fire`). A waiter that gives up (the watchdog) or
// unwinds (a device fault) leaves the state alive for a signal that may still come, so a late
// host function never writes to a dead stack frame. If the signal never comes (a poisoned context
// drops the host function) the ticket is leaked: a few bytes, once per failed device.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

namespace adrank {

// The watchdog's verdict: the work did not finish within the limit. The device is treated as
// failed (its stream still holds the work, so nothing it uses can be reused or freed); the message
// starts with kStreamHung so the front end classifies it as sticky (src/engine/index.ts).
constexpr const char* kStreamHung = "CUDA stream hung";
struct StreamHung : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// What the watchdog says when a request's work on cuda:`device` did not finish within `limit_ms`.
inline std::string stream_hung_message(int device, long long limit_ms) {
  return std::string(kStreamHung) + ": cuda:" + std::to_string(device) + " did not finish a request within " +
         std::to_string(limit_ms) + " ms (ADRANK_CUDA_WATCHDOG_MS); its stream is abandoned and the device treated as failed";
}

class Completion {
 public:
  static std::shared_ptr<Completion> make() { return std::make_shared<Completion>(); }

  // A heap reference for the signaller (userData of cudaLaunchHostFunc); `fire` consumes it.
  // Delete it yourself only when handing it over failed.
  static void* ticket(const std::shared_ptr<Completion>& c) { return new std::shared_ptr<Completion>(c); }
  // The host function: signals and drops the signaller's reference (any thread, exactly once).
  static void fire(void* ticket) {
    auto* ref = static_cast<std::shared_ptr<Completion>*>(ticket);
    (*ref)->signal();
    delete ref;
  }

  void signal() {
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
  }

  bool done() const {
    std::lock_guard<std::mutex> l(mu_);
    return done_;
  }

  // Sleeps until signalled; every `period` calls `poll()`, which throws to abort (a device fault
  // after which the signal may never come). Returns false when `limit` passed first (limit <= 0:
  // no limit). The caller decides what a timeout means; the state stays valid either way.
  template <class Poll>
  bool wait(Poll&& poll, std::chrono::milliseconds period, std::chrono::milliseconds limit) {
    const auto start = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> l(mu_);
    while (!done_) {
      if (cv_.wait_for(l, period, [&] { return done_; })) break;
      l.unlock();
      poll();
      l.lock();
      if (!done_ && limit.count() > 0 && std::chrono::steady_clock::now() - start >= limit) return false;
    }
    return true;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

}  // namespace adrank
