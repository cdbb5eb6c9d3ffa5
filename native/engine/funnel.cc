#include "engine/funnel.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace adrank {

Eligibility::Eligibility(const Model& model, const AdStateTable& state, const Request& req)
    : model_(model), state_(state), req_(req),
      excluded_ads_(req.excluded_ads.begin(), req.excluded_ads.end()),
      excluded_advertisers_(req.excluded_advertisers.begin(), req.excluded_advertisers.end()) {
  std::sort(excluded_ads_.begin(), excluded_ads_.end());
  std::sort(excluded_advertisers_.begin(), excluded_advertisers_.end());
}

Drop Eligibility::check(int32_t row) const {
  const int64_t id = model_.ad_id[row];
  if (!excluded_ads_.empty() && std::binary_search(excluded_ads_.begin(), excluded_ads_.end(), id)) return Drop::kExcludedAd;
  if (!excluded_advertisers_.empty() &&
      std::binary_search(excluded_advertisers_.begin(), excluded_advertisers_.end(), model_.ad_advertiser[row]))
    return Drop::kExcludedAdvertiser;
  const AdState st = state_.get(row);
  if (!st.active) return Drop::kInactive;
  if (!st.in_budget) return Drop::kOutOfBudget;
  const int nd = model_.dims().targeting_dims;
  const uint64_t* mask = model_.ad_targeting.data() + size_t(row) * nd;
  for (int k = 0; k < nd; k++) {
    const uint32_t v = req_.targeting[k];
    if (v < 64 ? !((mask[k] >> v) & 1) : mask[k] != ~uint64_t(0)) return Drop::kTargeting;
  }
  if (!pacing_pass(req_.key, id, st.pacing_rate)) return Drop::kPaced;
  return Drop::kEligible;
}

void Eligibility::count(Drop d, Counts& c) {
  switch (d) {
    case Drop::kEligible: c.eligible++; break;
    case Drop::kExcludedAd: c.excluded_ad++; break;
    case Drop::kExcludedAdvertiser: c.excluded_advertiser++; break;
    case Drop::kInactive: c.inactive++; break;
    case Drop::kOutOfBudget: c.out_of_budget++; break;
    case Drop::kTargeting: c.targeting++; break;
    case Drop::kPaced: c.paced++; break;
  }
}

std::vector<int32_t> intake(const Model& model, Span<int64_t> ids, Counts& counts) {
  std::vector<int32_t> rows;
  rows.reserve(ids.size);
  RowSet seen(ids.size);
  counts.received += int64_t(ids.size);
  for (int64_t id : ids) {
    const int32_t r = model.id_to_row.find(id);
    if (r < 0) {
      counts.unknown++;
    } else if (!seen.insert(r)) {
      counts.duplicate++;
    } else {
      rows.push_back(r);
    }
  }
  return rows;
}

void credit_retrieval_only(Result& r) {
  SourceCounts ret, caller;
  ret.source = kSourceRetrieval;
  ret.counts = r.counts;
  ret.counts.capped = 0;
  ret.ranked = r.retrieved;
  ret.winners = int64_t(r.ad_ids.size());
  caller.source = kSourceCaller;
  r.source_counts = {ret, caller};
  r.sources.assign(r.ad_ids.size(), kSourceRetrieval);
}

Candidate make_candidate(float score, int64_t id, int64_t advertiser, int32_t index) {
  if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
  return Candidate{score, id, advertiser, index};
}

namespace {

// Per-advertiser counts for the walk: a small open-addressing map, sized to the walk's length.
class AdvertiserCounter {
 public:
  explicit AdvertiserCounter(size_t expected) {
    size_t cap = 16;
    while (cap < 2 * expected) cap <<= 1;
    keys_.resize(cap);
    vals_.assign(cap, -1);
    mask_ = cap - 1;
  }
  int32_t& at(int64_t adv) {
    size_t s = splitmix64(uint64_t(adv)) & mask_;
    for (; vals_[s] >= 0; s = (s + 1) & mask_)
      if (keys_[s] == adv) return vals_[s];
    keys_[s] = adv;
    vals_[s] = 0;
    return vals_[s];
  }

 private:
  std::vector<int64_t> keys_;
  std::vector<int32_t> vals_;
  size_t mask_;
};

}  // namespace

Selection select_global(std::vector<Candidate>& c, uint32_t k, uint32_t cap, bool want_runner_up) {
  Selection s;
  const size_t n = c.size();
  const size_t target = size_t(k) + (want_runner_up ? 1 : 0);
  if (n == 0 || target == 0) return s;
  size_t sorted = 0;
  auto extend = [&](size_t want) { sorted = sort_prefix(c, sorted, want, before); };
  extend(cap == 0 ? target : std::max<size_t>(2 * target, 64));
  AdvertiserCounter taken(cap == 0 ? 1 : std::min(n, 4 * target));
  s.winners.reserve(k);
  for (size_t i = 0; i < n; i++) {
    if (i == sorted) extend(2 * sorted);
    const Candidate& x = c[i];
    if (cap > 0) {
      int32_t& t = taken.at(x.advertiser);
      if (uint32_t(t) >= cap) {
        if (s.winners.size() < k) s.capped++;
        continue;
      }
      t++;
    }
    if (s.winners.size() < k) {
      s.winners.push_back(x);
      if (!want_runner_up && s.winners.size() == k) break;
    } else {
      s.has_runner_up = true;
      s.runner_up = x;
      break;
    }
  }
  return s;
}

Selection select_local(std::vector<Candidate>& c, uint32_t k, uint32_t cap, uint32_t partitions, bool want_runner_up) {
  Selection s;
  const uint32_t kp = uint32_t((uint64_t(k) + partitions - 1) / partitions);  // no 32-bit wrap for large P
  auto part = [&](const Candidate& x) { return bucket_of(x.id, partitions); };
  std::stable_sort(c.begin(), c.end(), [&](const Candidate& a, const Candidate& b) { return part(a) < part(b); });
  std::vector<Candidate> merged;
  std::vector<Candidate> group;
  for (size_t i = 0; i < c.size();) {
    size_t j = i;
    const int64_t p = part(c[i]);
    while (j < c.size() && part(c[j]) == p) j++;
    group.assign(c.begin() + i, c.begin() + j);
    Selection g = select_global(group, kp, cap, false);
    s.capped += g.capped;
    merged.insert(merged.end(), g.winners.begin(), g.winners.end());
    i = j;
  }
  std::sort(merged.begin(), merged.end(), before);
  if (want_runner_up && merged.size() > k) {
    s.has_runner_up = true;
    s.runner_up = merged[k];
  }
  if (merged.size() > k) merged.resize(k);
  s.winners = std::move(merged);
  return s;
}

Selection select(std::vector<Candidate>& cands, const Request& req, bool want_runner_up) {
  if (req.local()) return select_local(cands, req.k, req.cap, req.partitions, want_runner_up);
  return select_global(cands, req.k, req.cap, want_runner_up);
}

}  // namespace adrank
