// Fallback answers (docs/funnel.md "Fallback"): when the model path cannot answer, the eligible ads
// of a per-surface priority order, walked with the per-advertiser cap to K. No model arithmetic:
// host memory only, so it also serves when the device has failed.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/ad_state.h"
#include "engine/model.h"
#include "engine/request_parser.h"
#include "engine/results.h"

namespace adrank {

// One surface's fallback: every ad row in priority order, the surface's estimated value
// Σ_t w_t p̄_t (score = bid × value) and its mean per-task probabilities.
struct PlanOrder {
  std::vector<int32_t> order;     // [N], a permutation of the rows
  std::vector<int32_t> position;  // [N], position[row] = index in order
};
struct FallbackPlan {
  std::shared_ptr<const PlanOrder> rows;  // shared by the surfaces that list no ads (all by bid)
  float value = 0;
  std::vector<float> probs;  // [T]
};

// `listed`: rows first, in this order (duplicates ignored); the other rows follow by bid
// descending, ad id ascending. Throws on a row out of range or a probs length other than T.
// by_bid: the order with nothing listed, reused (not built again) when n_listed is 0; may be null.
FallbackPlan make_fallback_plan(const Model& m, const int32_t* listed, size_t n_listed, float value, const float* probs,
                                size_t n_probs, const std::shared_ptr<const PlanOrder>& by_bid = nullptr);

// The fallback answer to `req`. Rank: the request's known eligible candidates in plan order, selected
// as the model path selects (cap, mode). Retrieve / RetrieveAndRank: the plan order walked over the
// corpus until K winners and the runner-up are found (global order); counts cover the ads walked.
Result fallback_answer(const Model& m, const AdStateTable& state, const Request& req, Op op, const FallbackPlan& plan);

}  // namespace adrank
