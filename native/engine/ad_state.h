// Live ad state (docs/funnel.md): active, in_budget, pacing_rate and the effective bid per ad row;
// defaults active, in budget, rate 1 and the bundle's bid. A table is one immutable snapshot: the
// engine publishes a new one per update batch (copy, apply, swap) and every request reads the one
// it started with, so no request sees half of a batch.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace adrank {

struct AdState {
  bool active = true, in_budget = true;
  float pacing_rate = 1.0f;
};

class AdStateTable {
 public:
  // n rows with the default state; the effective bids start as the bundle's bids (n floats).
  AdStateTable(int64_t n, const float* bundle_bid) : words_(size_t(n > 0 ? n : 0), pack(AdState{})), bids_(bundle_bid, bundle_bid + (n > 0 ? n : 0)) {}
  int64_t size() const { return int64_t(words_.size()); }
  AdState get(int64_t row) const { return unpack(words_[size_t(row)]); }
  // The bid in effect: the live override, or the bundle's bid.
  float bid(int64_t row) const { return bids_[size_t(row)]; }
  const float* bids() const { return bids_.data(); }
  // The packed word (rate bits | active << 32 | in_budget << 33), as the CUDA mirror stores it.
  uint64_t word(int64_t row) const { return words_[size_t(row)]; }
  void set(int64_t row, const AdState& s, float bid) {
    words_[size_t(row)] = pack(s);
    bids_[size_t(row)] = bid;
  }

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

 private:
  std::vector<uint64_t> words_;
  std::vector<float> bids_;
};

}  // namespace adrank
