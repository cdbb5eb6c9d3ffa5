// Device and launch helpers that the funnel's .cu files share (intake.cu, retrieve.cu, select.cu,
// results.cu; see funnel.cuh for the algorithms): the max order key, the eligibility drop reasons
// and their counter indices, block-level counters, each stage's K / cap / runner-up, pos → row,
// and the launch helpers. Not a public header: internal linkage (an anonymous namespace), so each
// .cu that includes it has its own copy.
// What has run on a GPU and what is only compiled: docs/cuda.md "What is verified".
#pragma once

#include "kernels/cuda/funnel.cuh"

#include "engine/request.h"

namespace adrank::cuda {

constexpr unsigned long long kMaxKey = ~0ull;

// ---- device helpers -------------------------------------------------------------------------------

namespace {

enum Drop : int { kEligible = 0, kDropExcludedAd, kDropExcludedAdvertiser, kDropInactive, kDropOutOfBudget, kDropTargeting, kDropPaced };

__device__ __forceinline__ int count_index(int drop) {
  switch (drop) {
    case kDropExcludedAd: return kCntExcludedAd;
    case kDropExcludedAdvertiser: return kCntExcludedAdvertiser;
    case kDropInactive: return kCntInactive;
    case kDropOutOfBudget: return kCntOutOfBudget;
    case kDropTargeting: return kCntTargeting;
    case kDropPaced: return kCntPaced;
    default: return kCntEligible;
  }
}

// docs/funnel.md eligibility, first failing reason in the documented order.
__device__ __forceinline__ int drop_reason(const DeviceModel& m, const RequestDesc* desc, const uint32_t* targeting,
                                           const uint8_t* excl_ad, const uint8_t* excl_adv, int row) {
  if (desc->num_excluded_ads && excl_ad[row]) return kDropExcludedAd;
  if (desc->num_excluded_advertisers && excl_adv[m.ad_advertiser[row]]) return kDropExcludedAdvertiser;
  const uint64_t w = m.ad_state[row];
  if (!((w >> 32) & 1)) return kDropInactive;
  if (!((w >> 33) & 1)) return kDropOutOfBudget;
  const uint64_t* mask = m.ad_targeting + int64_t(row) * m.targeting_dims;
  for (int k = 0; k < m.targeting_dims; ++k) {
    const uint32_t v = targeting[k];
    if (v < 64 ? !((mask[k] >> v) & 1ull) : mask[k] != ~0ull) return kDropTargeting;
  }
  const float rate = __uint_as_float(unsigned(w & 0xffffffffu));
  if (!pacing_pass(desc->key, m.ad_id[row], rate)) return kDropPaced;
  return kEligible;
}

// Block-level counters: per-thread tallies → shared atomics → one global atomic per counter.
struct BlockCounts {
  unsigned* sh;
  __device__ void init() {
    for (int i = threadIdx.x; i < kNumCounts; i += blockDim.x) sh[i] = 0;
    __syncthreads();
  }
  __device__ void add(int idx, unsigned v) {
    if (v) atomicAdd(&sh[idx], v);
  }
  __device__ void flush(unsigned long long* global) {
    __syncthreads();
    for (int i = threadIdx.x; i < kNumCounts; i += blockDim.x)
      if (sh[i]) atomicAdd(&global[i], static_cast<unsigned long long>(sh[i]));
  }
};

__device__ __forceinline__ int stage_k(const RequestDesc* d, SelectStage s) {
  return int(s == SelectStage::kRetrieveTop ? d->retrieve_count : d->k);
}
__device__ __forceinline__ int stage_cap(const RequestDesc* d, SelectStage s) {
  return s == SelectStage::kRetrieveTop ? 0 : int(d->cap);
}
__device__ __forceinline__ bool stage_runner(const RequestDesc* d, SelectStage s) {
  return s == SelectStage::kRankPriced || (s == SelectStage::kRank && (d->flags & kFlagPrice));
}
// The executor of select_logic.h's block algorithms (epilogue_select, topl_compact) on the device:
// each step a block-strided loop, then a barrier.
struct BlockExec {
  template <class F>
  __device__ void for_each(int n, F f) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) f(i);
    __syncthreads();
  }
  template <class F>
  __device__ void single(F f) {
    if (threadIdx.x == 0) f();
    __syncthreads();
  }
};

__device__ __forceinline__ int pos_row(const int* rows, int pos) { return rows ? rows[pos] : pos; }

// The result block (funnel.cuh ResultLayout) from the selection: ids, advertisers, rows, scores,
// values, probabilities and GSP prices of the winners, the header with the counts; for
// kRetrieveTop the retrieved rows instead. Work item `first`, then every `stride`-th (a grid-stride
// loop in the results kernel, a block-stride loop in the single-CTA epilogue); item 0 writes the
// header.
__device__ __forceinline__ void write_results(const DeviceModel& m, const RequestDesc* desc, SelectStage stage, const SelectState* st,
                                              const int* win, const int* sorted_pos, const unsigned long long* sorted_keys, const int* rows,
                                              const unsigned long long* counts, const float* utility, const float* value,
                                              const float* probs, unsigned char* result, ResultLayout lay, int* out_rows, int* out_n,
                                              const int* retrieved, int first, int stride) {
  const int T = m.tasks;
  if (stage == SelectStage::kRetrieveTop) {  // out_rows holds up to the candidate bucket (>= R)
    const int n = st->n_win;
    for (int w = first; w < n; w += stride)
      out_rows[w] = pos_row(rows, sorted_pos[win[w]]);
    if (first == 0) *out_n = n;
    return;
  }
  const int n = min(st->n_win, lay.k_cap);
  const bool priced = stage_runner(desc, stage);
  ResultHeader* h = reinterpret_cast<ResultHeader*>(result);
  if (first == 0) {
    h->n_win = n;
    h->has_runner = st->runner >= 0;
    h->retrieved = retrieved ? *retrieved : 0;
    for (int c = 0; c < kNumCounts; ++c) h->counts[c] = counts[c];
  }
  int64_t* ids = reinterpret_cast<int64_t*>(result + lay.off_ids);
  int64_t* adv = reinterpret_cast<int64_t*>(result + lay.off_adv);
  int* rws = reinterpret_cast<int*>(result + lay.off_rows);
  float* scores = reinterpret_cast<float*>(result + lay.off_scores);
  float* prices = reinterpret_cast<float*>(result + lay.off_prices);
  float* values = reinterpret_cast<float*>(result + lay.off_values);
  float* pr = reinterpret_cast<float*>(result + lay.off_probs);
  for (int w = first; w < n; w += stride) {
    const int s = win[w], pos = sorted_pos[s], row = pos_row(rows, pos);
    ids[w] = m.ad_id[row];
    adv[w] = m.advertiser_id[m.ad_advertiser[row]];
    rws[w] = row;
    if (stage == SelectStage::kRetrieve) {
      scores[w] = key_score(sorted_keys[s]);
      continue;
    }
    scores[w] = utility[pos];
    values[w] = value[pos];
    for (int t = 0; t < T; ++t) pr[int64_t(w) * T + t] = probs[int64_t(pos) * T + t];
    if (priced) {
      const float bid = m.ad_bid[row], reserve = desc->reserve;
      int next = -1;
      if (w + 1 < n) next = sorted_pos[win[w + 1]];
      else if (st->runner >= 0) next = sorted_pos[st->runner];
      // value 0 (all task weights 0, or underflow): ratio 0, as the CPU funnel (engine/funnel.h gsp_prices)
      const float ratio = value[pos] > 0.f ? utility[next < 0 ? pos : next] / value[pos] : 0.f;
      prices[w] = next < 0 ? fminf(bid, reserve) : fminf(bid, fmaxf(reserve, ratio));
    }
  }
}


// ---- launch helpers ---------------------------------------------------------------------------------

void launch_check(const char* name) { ::adrank::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__); }

constexpr int kThreads = 256;
int grid_small(int64_t n) { return grid_for(n, kThreads, 4 * device_sm_count()); }

}  // namespace

}  // namespace adrank::cuda
