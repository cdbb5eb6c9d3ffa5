// What the engine returns (mirrors NativeResult / NativeExplain in src/engine/binding.ts).
#pragma once

#include <cstdint>
#include <vector>

namespace adrank {

struct Counts {
  int64_t received = 0, unknown = 0, duplicate = 0;
  int64_t inactive = 0, out_of_budget = 0, paced = 0, targeting = 0, excluded_ad = 0, excluded_advertiser = 0;
  int64_t capped = 0, eligible = 0;
};

// Where a RetrieveAndRank candidate came from (docs/funnel.md "Blended retrieval sources"); the
// values are the proto's CandidateSource. Rank and Retrieve winners are kSourceUnspecified.
enum CandidateSource : uint8_t { kSourceUnspecified = 0, kSourceRetrieval = 1, kSourceCaller = 2 };

// One source's share of a RetrieveAndRank. `counts` holds what its intake and eligibility saw
// (received, unknown, duplicate, the drop reasons, eligible; capped stays 0: the cap applies to the
// union and is reported once, in Result::counts). earlier_source: known ids already passed to ranking
// by an earlier source (credited there); over_quota: eligible caller candidates past candidate_quota;
// ranked: passed to ranking; winners: among the final winners.
struct SourceCounts {
  CandidateSource source = kSourceUnspecified;
  Counts counts;
  int64_t earlier_source = 0, over_quota = 0, ranked = 0, winners = 0;
};

// Microseconds. queue: from the call to a worker thread picking it up; user: request side (features,
// sequence encoder, user half of MaskNet layer 1, retrieval query); retrieve: corpus scan with
// eligibility (Retrieve, RetrieveAndRank); select: Rank intake + eligibility, selection, prices.
// The candidate forward runs chunks on several threads; gather/masknet/dcn/mlp split its wall time in
// proportion to the thread time each stage took, so they add up to the forward's wall time.
struct Timings {
  double queue = 0, user = 0, retrieve = 0, gather = 0, masknet = 0, dcn = 0, mlp = 0, select = 0, total = 0;
  double device = 0;  // CUDA backend: the request's GPU time, start to end event (0 on the CPU)
};

struct Result {
  std::vector<int64_t> ad_ids, advertisers;
  std::vector<int32_t> rows;
  std::vector<float> scores, probs, prices;
  std::vector<float> values;  // Rank, RetrieveAndRank: Σ_t w_t p_t per winner (the GSP divisor)
  int64_t retrieved = 0;
  // RetrieveAndRank from the model: per winner its CandidateSource, and one entry per source
  // (retrieval, then the caller's list). Empty for Rank, Retrieve and fallback answers.
  std::vector<uint8_t> sources;
  std::vector<SourceCounts> source_counts;
  Counts counts;
  Timings timings;
};

// A RetrieveAndRank answered without caller candidates (e.g. by the CUDA graph): every winner is
// retrieval's; the per-source counts are retrieval's (counts less capped, ranked = retrieved) and an
// empty caller entry (docs/funnel.md "Blended retrieval sources"). Defined in funnel.cc.
void credit_retrieval_only(Result& r);

struct Explain {
  std::vector<int32_t> rows;
  std::vector<float> user, sequence, query;
  std::vector<float> ad, target_attention, input, masknet, cross, hidden, logits, probs, utility, retrieval_scores;
  // Per row: the first eligibility reason that drops it under the live ad state (funnel.h Drop:
  // 0 eligible, 1 excluded ad, 2 excluded advertiser, 3 inactive, 4 out of budget, 5 targeting, 6 paced).
  std::vector<uint8_t> drops;
};

}  // namespace adrank
