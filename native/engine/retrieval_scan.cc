#include "engine/retrieval_scan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/vector_ops.h"

namespace adrank {

namespace {

constexpr int64_t kChunk = 16384;  // ads per scan chunk
constexpr int kLanes = 16;

struct Scored {
  float score;
  int32_t row;
};

// The score at which a greedy walk (score descending, at most `cap` per advertiser) over `s` takes
// its k-th ad; -inf when it takes fewer. Reorders s.
float walk_threshold(std::vector<Scored>& s, uint32_t k, uint32_t cap, const int64_t* advertiser) {
  const size_t n = s.size();
  if (k == 0 || n < k) return -std::numeric_limits<float>::infinity();
  auto desc = [](const Scored& a, const Scored& b) { return a.score > b.score; };
  if (cap == 0) {
    std::nth_element(s.begin(), s.begin() + (k - 1), s.end(), desc);
    return s[k - 1].score;
  }
  size_t sorted = 0, taken = 0;
  std::unordered_map<int64_t, uint32_t> counts;  // advertiser → taken
  counts.reserve(4 * size_t(k));
  auto extend = [&](size_t want) { sorted = sort_prefix(s, sorted, want, desc); };
  extend(std::max<size_t>(2 * size_t(k), 64));
  for (size_t i = 0; i < n; i++) {
    if (i == sorted) extend(2 * sorted);
    uint32_t& t = counts[advertiser[s[i].row]];
    if (t >= cap) continue;
    t++;
    if (++taken == k) return s[i].score;
  }
  return -std::numeric_limits<float>::infinity();
}

}  // namespace

ADRANK_MULTIVERSION
float dot_bf16(const float* q, const uint16_t* r, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) {
      const uint32_t bits = uint32_t(r[i + l]) << 16;
      float v;
      std::memcpy(&v, &bits, 4);
      acc[l] += q[i + l] * v;
    }
  float s = 0;
  for (; i < n; i++) {
    const uint32_t bits = uint32_t(r[i]) << 16;
    float v;
    std::memcpy(&v, &bits, 4);
    s += q[i] * v;
  }
  for (int l = 0; l < kLanes; l++) s += acc[l];
  return s;
}

std::vector<Candidate> retrieval_scan(const Model& m, const AdStateTable& state, const Request& req, const float* query, uint32_t k,
                                      uint32_t cap, Counts& counts, cpu::ThreadPool* pool) {
  const int64_t N = m.num_ads();
  const int Dr = m.dims().retrieval_dim;
  const bool bf16 = !m.ad_retrieval_bf16.empty();
  // |bf16 score − fp32 score| ≤ e: 2^-9 relative rounding per element (Σ|q_i r_i| ≤ ‖q‖‖r‖) plus both
  // dots' fp32 accumulation (≤ Dr · 2^-24 each, within another 2^-9 for Dr ≤ 2^14)
  float band = 0;
  if (bf16) band = 2 * std::ldexp(std::sqrt(cpu::dot(query, query, Dr)) * m.retrieval_max_norm, -8) * (1 + 1e-3f);
  const Eligibility el(m, state, req);
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  std::vector<std::vector<Candidate>> parts(size_t(std::max<int64_t>(chunks, 0)));
  std::vector<Counts> part_counts(parts.size());
  auto run = [&](int64_t c0, int64_t c1) {
    std::vector<Scored> s;
    s.reserve(size_t(kChunk));
    for (int64_t c = c0; c < c1; c++) {
      s.clear();
      const int64_t r0 = c * kChunk, r1 = std::min(N, r0 + kChunk);
      Counts& pc = part_counts[size_t(c)];
      for (int64_t r = r0; r < r1; r++) {
        const Drop drop = el.check(int32_t(r));
        Eligibility::count(drop, pc);
        if (drop != Drop::kEligible) continue;
        float score = bf16 ? dot_bf16(query, m.ad_retrieval_bf16.data() + size_t(r) * Dr, Dr)
                           : cpu::dot(query, m.ad_retrieval.data() + size_t(r) * Dr, Dr);
        if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
        s.push_back({score, int32_t(r)});
      }
      if (k == 0) continue;
      const float lo = walk_threshold(s, k, cap, m.ad_advertiser.data()) - band;
      std::vector<Candidate>& out = parts[size_t(c)];
      for (const Scored& x : s) {
        if (!(x.score >= lo)) continue;
        const float exact = bf16 ? cpu::dot(query, m.ad_retrieval.data() + size_t(x.row) * Dr, Dr) : x.score;
        out.push_back(make_candidate(exact, m.ad_id[size_t(x.row)], m.ad_advertiser[size_t(x.row)], x.row));
      }
    }
  };
  if (pool) pool->parallel_for(chunks, run, 1); else run(0, chunks);
  counts.received += N;
  size_t total = 0;
  for (size_t c = 0; c < parts.size(); c++) {
    const Counts& p = part_counts[c];
    counts.excluded_ad += p.excluded_ad;
    counts.excluded_advertiser += p.excluded_advertiser;
    counts.inactive += p.inactive;
    counts.out_of_budget += p.out_of_budget;
    counts.targeting += p.targeting;
    counts.paced += p.paced;
    counts.eligible += p.eligible;
    total += parts[c].size();
  }
  std::vector<Candidate> all;
  all.reserve(total);
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

}  // namespace adrank
