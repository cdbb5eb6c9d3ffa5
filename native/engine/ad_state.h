// Live ad state (docs/funnel.md): active, in_budget, pacing_rate per ad row, defaults 1, 1, 1.
// One 64-bit word per ad (rate bits | active << 32 | in_budget << 33), read and written with relaxed
// atomics: setAdState (JS thread) never blocks a running request, and a request always sees each
// ad's three fields from one update.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>

namespace adrank {

struct AdState {
  bool active = true, in_budget = true;
  float pacing_rate = 1.0f;
};

class AdStateTable {
 public:
  explicit AdStateTable(int64_t n) : n_(n), words_(new std::atomic<uint64_t>[size_t(n > 0 ? n : 1)]) {
    const uint64_t def = pack(AdState{});
    for (int64_t i = 0; i < n; i++) words_[i].store(def, std::memory_order_relaxed);
  }
  int64_t size() const { return n_; }
  AdState get(int64_t row) const { return unpack(words_[row].load(std::memory_order_relaxed)); }
  void set(int64_t row, const AdState& s) { words_[row].store(pack(s), std::memory_order_relaxed); }

 private:
  static uint64_t pack(const AdState& s) {
    uint32_t bits;
    std::memcpy(&bits, &s.pacing_rate, 4);
    return uint64_t(bits) | (uint64_t(s.active) << 32) | (uint64_t(s.in_budget) << 33);
  }
  static AdState unpack(uint64_t w) {
    AdState s;
    const uint32_t bits = uint32_t(w);
    std::memcpy(&s.pacing_rate, &bits, 4);
    s.active = (w >> 32) & 1;
    s.in_budget = (w >> 33) & 1;
    return s;
  }
  int64_t n_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

}  // namespace adrank
