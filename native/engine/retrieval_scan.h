// The CPU retrieval scan (docs/funnel.md "Retrieval scan"): one pass over the retrieval table in
// chunks spread over the thread pool. Each chunk keeps only the candidates that can still be among
// the walk's visited ones, so what reaches the final selection is O(chunks · k), not O(N): the
// greedy walk of a chunk on its own reaches k winners at some score L; any ad scoring below L has
// k ads ahead of it, at most `cap` per advertiser, so the global walk never reaches it.
//
// With the optional bf16 copy of the table (Model::use_bf16_retrieval) the pass reads half the
// bytes; a bf16 score is within e = 2^-8 · ‖q‖ · max‖r‖ of the fp32 one, so a chunk keeps every ad
// within 2e of its bf16 L and rescores exactly those in fp32: the answer is the fp32 scan's.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/funnel.h"

namespace adrank {

namespace cpu {
class ThreadPool;
}

// Eligible ads that may be among the first k winners (cap per advertiser, 0 = none) of the greedy
// walk by fp32 score q · r; counts every ad's eligibility into `counts`.
std::vector<Candidate> retrieval_scan(const Model& m, const AdStateTable& state, const Request& req, const float* query, uint32_t k,
                                      uint32_t cap, Counts& counts, cpu::ThreadPool* pool);

// q · r for bf16 r (the upper 16 bits of an fp32), fp32 arithmetic.
float dot_bf16(const float* q, const uint16_t* r, int64_t n);

}  // namespace adrank
