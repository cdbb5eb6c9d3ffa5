// The funnel's business logic (docs/funnel.md), independent of the backend that computes scores:
// candidate intake, eligibility, the pacing hash, ordered selection with the per-advertiser cap,
// local(P) mode and GSP prices.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/ad_state.h"
#include "engine/hash.h"
#include "engine/model.h"
#include "engine/request_parser.h"
#include "engine/results.h"

namespace adrank {

enum class Drop : uint8_t { kEligible = 0, kExcludedAd, kExcludedAdvertiser, kInactive, kOutOfBudget, kTargeting, kPaced };

// Eligibility of one ad row for one request, in the documented order of reasons.
class Eligibility {
 public:
  Eligibility(const Model& model, const AdStateTable& state, const Request& req);
  Drop check(int32_t row) const;
  static void count(Drop d, Counts& c);

 private:
  const Model& model_;
  const AdStateTable& state_;
  const Request& req_;
  std::vector<int64_t> excluded_ads_, excluded_advertisers_;  // sorted
};

// Rank intake: request ids → known unique rows in first-appearance order; counts received, unknown,
// duplicate.
std::vector<int32_t> intake(const Model& model, Span<int64_t> ids, Counts& counts);

// A scored candidate; `index` points into the caller's arrays.
struct Candidate {
  float score;
  int64_t id;
  int64_t advertiser;
  int32_t index;
};

// score descending, ad id ascending (NaN scores are mapped to −inf by make_candidate).
inline bool before(const Candidate& a, const Candidate& b) { return a.score > b.score || (a.score == b.score && a.id < b.id); }
Candidate make_candidate(float score, int64_t id, int64_t advertiser, int32_t index);

struct Selection {
  std::vector<Candidate> winners;  // final order
  bool has_runner_up = false;
  Candidate runner_up{};
  int64_t capped = 0;
};

// Makes v[0, want) the best `want` elements in order (by `less`), given v[0, sorted) already is,
// touching only what is not sorted yet; returns the new sorted length. The walks sort as they go.
template <class T, class Less>
size_t sort_prefix(std::vector<T>& v, size_t sorted, size_t want, Less less) {
  want = std::min(want, v.size());
  if (want <= sorted) return sorted;
  if (want < v.size()) std::nth_element(v.begin() + sorted, v.begin() + want, v.end(), less);
  std::sort(v.begin() + sorted, v.begin() + want, less);
  return want;
}

// The greedy walk over `cands` (reordered in place): take while the advertiser has < cap taken
// (cap 0 = none), stop at k. With want_runner_up the walk goes on to the next ad it would take.
// Sorts only as much of the input as the walk reaches.
Selection select_global(std::vector<Candidate>& cands, uint32_t k, uint32_t cap, bool want_runner_up);
// local(P): per partition (id mod P) top ⌈k/P⌉ with the cap inside it, merged and cut to k; the
// runner-up is the (k+1)-th merged partition winner.
Selection select_local(std::vector<Candidate>& cands, uint32_t k, uint32_t cap, uint32_t partitions, bool want_runner_up);
Selection select(std::vector<Candidate>& cands, const Request& req, bool want_runner_up);

// GSP: winner i pays min(bid_i, max(reserve, utility_{i+1} / value_i)); the last one with no
// runner-up pays min(bid_i, reserve). value(index) = Σ_t w_t p_t of that candidate.
template <typename BidOf, typename ValueOf>
std::vector<float> gsp_prices(const Selection& s, float reserve, BidOf bid_of, ValueOf value_of) {
  std::vector<float> prices(s.winners.size());
  for (size_t i = 0; i < s.winners.size(); i++) {
    const Candidate& w = s.winners[i];
    const float bid = bid_of(w.index);
    const Candidate* next = i + 1 < s.winners.size() ? &s.winners[i + 1] : (s.has_runner_up ? &s.runner_up : nullptr);
    if (!next) {
      prices[i] = std::min(bid, reserve);
      continue;
    }
    // value 0 (all task weights 0, refused by the API, or underflow): ratio 0 (docs/funnel.md).
    const float value = value_of(w.index);
    const float p = value > 0.f ? next->score / value : 0.f;
    prices[i] = std::min(bid, std::max(reserve, p));
  }
  return prices;
}

}  // namespace adrank
