#include "engine/fallback.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "engine/funnel.h"

namespace adrank {

FallbackPlan make_fallback_plan(const Model& m, const int32_t* listed, size_t n_listed, float value, const float* probs,
                                size_t n_probs, const std::shared_ptr<const PlanOrder>& by_bid) {
  const int64_t n = m.num_ads();
  if (n_probs != size_t(m.dims().tasks))
    throw std::runtime_error("expected " + std::to_string(m.dims().tasks) + " values for fallback probs, got " + std::to_string(n_probs));
  if (!std::isfinite(value)) throw std::runtime_error("expected a finite number for fallback value, got " + std::to_string(value));
  FallbackPlan p;
  p.value = value;
  p.probs.assign(probs, probs + n_probs);
  if (n_listed == 0 && by_bid) {
    p.rows = by_bid;
    return p;
  }
  auto rows = std::make_shared<PlanOrder>();
  rows->order.reserve(size_t(n));
  rows->position.assign(size_t(n), -1);
  for (size_t i = 0; i < n_listed; i++) {
    const int32_t row = listed[i];
    if (row < 0 || row >= n) throw std::runtime_error("expected a row in [0, " + std::to_string(n) + ") for fallback order[" + std::to_string(i) + "], got " + std::to_string(row));
    if (rows->position[size_t(row)] >= 0) continue;
    rows->position[size_t(row)] = int32_t(rows->order.size());
    rows->order.push_back(row);
  }
  // The rest by bid, highest first, ties by ad id. The keys are copied next to the rows first, so
  // the sort compares contiguous values instead of reading the (mapped) tables at random: at 10M
  // ads that was most of a start's fallback plan.
  struct Key {
    float bid;
    int32_t row;
    int64_t id;
  };
  std::vector<Key> rest;
  rest.reserve(size_t(n) - rows->order.size());
  for (int32_t row = 0; row < n; row++)
    if (rows->position[size_t(row)] < 0) rest.push_back(Key{m.ad_bid[size_t(row)], row, m.ad_id[size_t(row)]});
  std::sort(rest.begin(), rest.end(), [](const Key& a, const Key& b) { return a.bid > b.bid || (a.bid == b.bid && a.id < b.id); });
  for (const Key& k : rest) {
    rows->position[size_t(k.row)] = int32_t(rows->order.size());
    rows->order.push_back(k.row);
  }
  p.rows = std::move(rows);
  return p;
}

namespace {

// The order key of a row: earlier in the plan = higher (select() orders by score descending).
Candidate plan_candidate(const Model& m, const FallbackPlan& p, int32_t row) {
  return make_candidate(-float(p.rows->position[size_t(row)]), m.ad_id[size_t(row)], m.ad_advertiser[size_t(row)], row);
}

// The first rows of the plan that a capped walk to k (+ the runner-up) needs, eligible only.
std::vector<Candidate> walk_plan(const Model& m, const AdStateTable& state, const Request& req, const FallbackPlan& p, Counts& counts) {
  const Eligibility el(m, state, req);
  std::vector<Candidate> out;
  std::unordered_map<int64_t, uint32_t> taken;
  size_t want = size_t(req.k) + 1;
  for (int32_t row : p.rows->order) {
    counts.received++;
    const Drop d = el.check(row);
    Eligibility::count(d, counts);
    if (d != Drop::kEligible) continue;
    out.push_back(plan_candidate(m, p, row));
    if (req.cap == 0 || taken[m.ad_advertiser[size_t(row)]]++ < req.cap) {
      if (--want == 0) break;
    }
  }
  return out;
}

}  // namespace

Result fallback_answer(const Model& m, const AdStateTable& state, const Request& req, Op op, const FallbackPlan& p) {
  Result r;
  std::vector<Candidate> cands;
  if (op == Op::kRank) {
    const std::vector<int32_t> known = intake(m, req.candidates, r.counts);
    const Eligibility el(m, state, req);
    cands.reserve(known.size());
    for (int32_t row : known) {
      const Drop d = el.check(row);
      Eligibility::count(d, r.counts);
      if (d == Drop::kEligible) cands.push_back(plan_candidate(m, p, row));
    }
  } else {
    cands = walk_plan(m, state, req, p, r.counts);
  }
  const bool priced = op == Op::kRetrieveAndRank || (op == Op::kRank && req.price());
  Selection s = op == Op::kRank ? select(cands, req, priced) : select_global(cands, req.k, req.cap, priced);
  r.counts.capped += s.capped;
  const auto utility = [&](int32_t row) { return m.ad_bid[size_t(row)] * p.value; };
  for (const Candidate& c : s.winners) {
    r.ad_ids.push_back(c.id);
    r.advertisers.push_back(c.advertiser);
    r.rows.push_back(c.index);
    r.scores.push_back(utility(c.index));
    if (op != Op::kRetrieve) {
      r.probs.insert(r.probs.end(), p.probs.begin(), p.probs.end());
      r.values.push_back(p.value);
    }
  }
  if (priced) {
    // GSP on the estimated utilities (bid × value): with one value for every ad, each winner pays
    // the next bid, capped at its own.
    for (Candidate& c : s.winners) c.score = utility(c.index);
    if (s.has_runner_up) s.runner_up.score = utility(s.runner_up.index);
    r.prices = gsp_prices(
        s, req.reserve, [&](int32_t row) { return m.ad_bid[size_t(row)]; }, [&](int32_t) { return p.value; });
  }
  return r;
}

}  // namespace adrank
