// Retrieval on the device (see funnel.cuh): the retrieval scan (eligibility + q · r_c for every ad →
// order keys, selected by select.cu), the one-pass retrieval (the scan, the selection and the result
// block in one launch, no key array: ADRANK_CUDA_RETRIEVE_ONEPASS), the fp8 retrieval (an e4m3 scan
// that lists the ads to rescore, then the one-pass kernel over the list: ADRANK_CUDA_RETRIEVE_FP8),
// the rank keys from utilities, and their launchers.
//
#include "kernels/cuda/funnel_device.cuh"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/cuda/fp8_logic.h"

#include <algorithm>
#include <cfloat>

namespace adrank::cuda {

namespace {

// ---- retrieval scan ---------------------------------------------------------------------------------
// A warp takes 32 consecutive ads per step. First each lane checks one ad's eligibility (one
// drop_reason per ad, lanes in parallel); then the dot products run half a warp per ad row (16
// lanes × 16 bytes = 256 B = one 128-dim bf16 row), the two halves on adjacent rows, kScanBatch row
// pairs with their loads in flight together; ineligible rows are not read. Lane j ends up holding ad
// j's score and writes its key (a coalesced 256-byte store per warp).
// The first H200 run measured the earlier form (all 16 lanes of a half repeating the eligibility
// check, then one row pair at a time) at 25% of copy bandwidth over 10M ads; a form with the loads
// ahead of the check, 28%.
constexpr int kScanBatch = 8;

// The table elements the scans read, 16 bytes (one load) at a time: how many values a chunk holds,
// how many lanes share a row (a 128-value row in one pass of 16-byte loads), and a pair's widening
// to two floats (exact for both).
struct Bf16Elem {
  static constexpr int kPerChunk = 8, kLanes = 16;
  using Pair = __nv_bfloat162;
  static __device__ __forceinline__ float2 widen(const Pair& p) { return __bfloat1622float2(p); }
};
struct Fp8Elem {
  static constexpr int kPerChunk = 16, kLanes = 8;
  using Pair = __nv_fp8x2_storage_t;  // the low byte is the first value
  static __device__ __forceinline__ float2 widen(const Pair& p) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(p, __NV_E4M3);
    return __half22float2(*reinterpret_cast<const __half2*>(&h));
  }
};

// q · r for a warp step's 32 ads, both scans' arithmetic: G = 32 / kLanes rows at a time, kLanes
// lanes per row, lane `sub` of a row summing its chunks c = sub, sub + kLanes, … in order with fused
// multiply-adds, kBatch passes' loads in flight together, then a butterfly over the row's lanes;
// lane j returns ad j's sum (0 unless bit j of `elig` is set: only those rows are read).
// row_of(j): the table row of ad j, called by every lane (it may shuffle); rows are row_bytes apart
// from `table`, chunks 16-byte chunks each; q in shared memory, chunks · kPerChunk floats.
template <class Elem, int kBatch, class RowOf>
__device__ __forceinline__ float warp_row_dots(const unsigned char* table, int64_t row_bytes, int chunks, unsigned elig,
                                               const float* q, int lane, RowOf row_of) {
  constexpr int kLanes = Elem::kLanes, G = 32 / kLanes;
  const int sub = lane % kLanes, group = lane / kLanes;
  float score = 0.f;
  for (int t0 = 0; t0 < kLanes; t0 += kBatch) {  // pass t: group g scores ad G·t + g
    if (((elig >> (G * t0)) & ((1ull << (G * kBatch)) - 1)) == 0) continue;  // warp-uniform
    float acc[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) acc[u] = 0.f;
    for (int c = sub; c < chunks; c += kLanes) {
      uint4 v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {  // streaming: the corpus is read once per request
        const int j = G * (t0 + u) + group;
        const int64_t rj = row_of(j);
        v[u] = (elig >> j) & 1u ? __ldcs(reinterpret_cast<const uint4*>(table + rj * row_bytes) + c) : make_uint4(0, 0, 0, 0);
      }
      const float* qq = q + c * Elem::kPerChunk;
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const typename Elem::Pair* p = reinterpret_cast<const typename Elem::Pair*>(&v[u]);
#pragma unroll
        for (int e = 0; e < Elem::kPerChunk / 2; ++e) {
          const float2 f = Elem::widen(p[e]);
          acc[u] = fmaf(f.x, qq[2 * e], acc[u]);
          acc[u] = fmaf(f.y, qq[2 * e + 1], acc[u]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
#pragma unroll
      for (int o = kLanes / 2; o > 0; o >>= 1) acc[u] += __shfl_xor_sync(0xffffffffu, acc[u], o);  // within each row's lanes
      const float s = __shfl_sync(0xffffffffu, acc[u], (lane % G) * kLanes);  // ad `lane` was scored by group lane % G
      if (lane / G == t0 + u) score = s;
    }
  }
  return score;
}

// Eligibility and score of one warp step's 32 ads: the consecutive ads base + lane (kList false),
// or the listed rows `row` of each lane, -1 for none, already known eligible (kList true: the
// fp8 retrieval's rescoring). `drop` is the lane's drop reason (-1 for none), `score` its q · r
// (0 unless eligible), the same arithmetic in both modes, so a rescored ad gets the bf16 scan's
// score bit for bit. Called by every lane of the warp together (ballots and shuffles). q: the query
// in shared memory.
template <bool kList>
__device__ __forceinline__ void score_group(const DeviceModel& m, const RequestDesc* desc, const uint32_t* targeting,
                                            const uint8_t* excl_ad, const uint8_t* excl_adv, const float* q, int64_t base,
                                            int row, int lane, int& drop_out, float& score_out) {
  const int64_t N = m.num_ads;
  const int64_t mine = base + lane;
  int drop;
  if constexpr (kList) drop = row >= 0 ? int(kEligible) : -1;
  else drop = mine < N ? drop_reason(m, desc, targeting, excl_ad, excl_adv, int(mine)) : -1;
  const unsigned elig = __ballot_sync(0xffffffffu, drop == kEligible);
  const auto row_of = [&](int j) -> int64_t {
    if constexpr (kList) return __shfl_sync(0xffffffffu, row, j);
    else return base + j;
  };
  score_out = warp_row_dots<Bf16Elem, kScanBatch>(reinterpret_cast<const unsigned char*>(m.ad_retrieval), int64_t(m.d_r_pad) * 2,
                                                 m.d_r_pad / 8, elig, q, lane, row_of);
  drop_out = drop;
}

__global__ void __launch_bounds__(256) retrieve_scan_kernel(DeviceModel m, const RequestDesc* desc,
                                                            const unsigned char* bundle, const float* query,
                                                            const uint8_t* excl_ad, const uint8_t* excl_adv,
                                                            unsigned long long* keys, int* n_elig,
                                                            unsigned long long* counts) {
  extern __shared__ float q[];  // [d_r_pad]
  __shared__ unsigned sh[kNumCounts];
  for (int c = threadIdx.x; c < m.d_r_pad; c += blockDim.x) q[c] = query[c];
  BlockCounts bc{sh};
  bc.init();  // includes __syncthreads, so q is ready
  const uint32_t* targeting = section<uint32_t>(bundle, desc->off_targeting);
  const int lane = threadIdx.x & 31;
  const int64_t N = m.num_ads;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  unsigned local[kNumCounts] = {};
  unsigned eligible = 0;
  for (int64_t base = warp * 32; base < N; base += nwarps * 32) {  // uniform trip count per warp
    const int64_t mine = base + lane;
    int drop;
    float score;
    score_group<false>(m, desc, targeting, excl_ad, excl_adv, q, base, -1, lane, drop, score);
    if (mine < N) {
      ++local[count_index(drop)];
      eligible += drop == kEligible;
      keys[mine] = drop == kEligible ? order_key(score, m.ad_id_rank[mine]) : kMaxKey;
    }
  }
  for (int c = 0; c < kNumCounts; ++c) bc.add(c, local[c]);
  if (blockIdx.x == 0 && threadIdx.x == 0) bc.add(kCntReceived, unsigned(N > 0xffffffffll ? 0 : N));
  bc.flush(counts);
  unsigned e = eligible;
  e = __reduce_add_sync(0xffffffffu, e);
  if (lane == 0 && e) atomicAdd(n_elig, int(e));
}

constexpr int kFp8Batch = 4;  // the fp8 scan's passes in flight (4 rows each)

// ---- the one-pass retrieval (select_logic.h "the one-pass retrieval's top-L buffer") ---------------
// kTopLStep threads; a block step scores kTopLStep consecutive ads (a warp 32 of them, as above),
// steps spread over the blocks; the loop's trip count is the same for every thread of a block, so
// the buffer's barriers are uniform. Dynamic shared memory: the buffer's keys, its rows, the query.

__device__ __forceinline__ unsigned long long load_relaxed(const unsigned long long* p) {
  return *reinterpret_cast<const volatile unsigned long long*>(p);
}

// What the one-pass kernel steps over and scores:
//   kScanBf16  every ad, bf16 scores: the one-pass retrieval (the result block at the end);
//   kScanFp8   every ad, e4m3 scores: the key is that of the lower end of the interval around the
//              bf16 score (fp8_logic.h), and each ad's upper end goes to fw.fp8_ub (-inf when not
//              eligible); at the end the last block writes τ, the L-th best lower end's key, to
//              fw.fp8_tau (the max key when fewer than L are eligible) instead of a result block;
//   kList      the fp8 retrieval's candidate list (fw.cand_list[0, *fw.cand_n), rows known
//              eligible and counted), bf16 scores with the scan's own arithmetic: the exact top L
//              and the result block; the last block also empties the list.
enum OnepassMode : int { kScanBf16 = 0, kScanFp8 = 1, kList = 2 };
template <int kMode>
__global__ void __launch_bounds__(kTopLStep) retrieve_onepass_kernel(DeviceModel m, const RequestDesc* desc, SelectStage stage,
                                                                     int lcap, const unsigned char* bundle, const float* query,
                                                                     FunnelWorkspace fw, SelectWorkspace ws, unsigned char* result,
                                                                     ResultLayout lay, int* out_rows, int* out_n) {
  constexpr bool kListed = kMode == kList, kFp8 = kMode == kScanFp8;
  extern __shared__ unsigned long long topl_smem[];
  const int bcap = topl_buffer_cap(lcap);
  const TopLBuffer buf{topl_smem, reinterpret_cast<int*>(topl_smem + bcap), bcap};
  float* q = reinterpret_cast<float*>(buf.rows + bcap);  // d_r_pad floats (kScanFp8: d_r8, zero padded)
  __shared__ unsigned sh[kNumCounts];
  __shared__ int n_buf, prefix, is_last;
  __shared__ unsigned long long own, bound;  // own: the L-th best kept (once L are kept); bound: min(own, G)
  __shared__ float qn;                       // kScanFp8: ‖q‖ (fp8_interval allows for its rounding)
  const int q_len = kFp8 ? m.d_r8 : m.d_r_pad;
  for (int c = threadIdx.x; c < q_len; c += blockDim.x) q[c] = c < m.d_r_pad ? query[c] : 0.f;
  if (threadIdx.x == 0) {
    n_buf = 0;
    own = kMaxKey;
    bound = load_relaxed(fw.topl_g);
  }
  BlockCounts bc{sh};
  bc.init();  // includes __syncthreads: q, n_buf and bound are ready
  if (kFp8) {
    if (threadIdx.x == 0) {
      float s2 = 0.f;
      for (int c = 0; c < m.d_r_pad; ++c) s2 = fmaf(q[c], q[c], s2);
      qn = sqrtf(s2) * (1.f + 1e-5f);
    }
    __syncthreads();
  }
  BlockExec x;
  const int L = stage_k(desc, stage);  // K (Retrieve) or R (RetrieveAndRank): 1 <= L < lcap
  const uint32_t* targeting = section<uint32_t>(bundle, desc->off_targeting);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t N = kListed ? int64_t(*reinterpret_cast<const volatile int*>(fw.cand_n)) : m.num_ads;  // steps over [0, N)
  unsigned local[kNumCounts] = {};
  unsigned eligible = 0;
  // the step, then (after a barrier) the compaction when the next step could overflow the buffer
  auto settle = [&] {
    __syncthreads();
    if (topl_must_compact(buf, n_buf)) {  // n_buf is read by every thread after the barrier
      const int kept = topl_compact(x, buf, n_buf, L);  // ends with a barrier
      if (threadIdx.x == 0) {
        n_buf = kept;  // = L: n_buf > bcap - step >= lcap > L
        own = buf.keys[L - 1];
        atomicMin(fw.topl_g, own);
      }
    }
    if (threadIdx.x == 0) bound = min(own, load_relaxed(fw.topl_g));
    __syncthreads();
  };
  for (int64_t tile = blockIdx.x; tile * kTopLStep < N; tile += gridDim.x) {
    const int64_t base = tile * kTopLStep + warp * 32, pos = base + lane;
    const int row = kListed ? (pos < N ? fw.cand_list[pos] : -1) : int(pos);
    int drop;
    float score;
    if constexpr (kFp8) {
      drop = pos < N ? drop_reason(m, desc, targeting, fw.excl_ad, fw.excl_adv, row) : -1;
      const unsigned elig = __ballot_sync(0xffffffffu, drop == kEligible);
      const float dot = warp_row_dots<Fp8Elem, kFp8Batch>(m.ad_retrieval_fp8, m.d_r8, m.d_r8 / 16, elig, q, lane,
                                                          [&](int j) { return base + j; });
      float ub = -INFINITY;
      score = 0.f;
      if (drop == kEligible) {
        fp8_interval(dot * m.ad_fp8_scale[row], qn, m.ad_fp8_bound[row], &score, &ub);  // score = the lower end
        ub = isnan(ub) ? INFINITY : fmaxf(ub, -FLT_MAX);  // -inf marks "not eligible"; NaN is always rescored
      }
      if (pos < N) fw.fp8_ub[row] = ub;
    } else {
      score_group<kListed>(m, desc, targeting, fw.excl_ad, fw.excl_adv, q, kListed ? 0 : base, row, lane, drop, score);
    }
    if (!kListed && pos < N) {
      ++local[count_index(drop)];
      eligible += drop == kEligible;
    }
    if (drop == kEligible) {
      const unsigned long long key = order_key(score, m.ad_id_rank[row]);
      if (key <= bound) {
        const int slot = atomicAdd(&n_buf, 1);
        buf.keys[slot] = key;
        buf.rows[slot] = row;
      }
    }
    settle();
  }
  if (!kListed) {  // the list's ads were counted by the fp8 scan
    for (int c = 0; c < kNumCounts; ++c) bc.add(c, local[c]);
    if (blockIdx.x == 0 && threadIdx.x == 0) bc.add(kCntReceived, unsigned(N > 0xffffffffll ? 0 : N));
    bc.flush(fw.counts);  // begins with a barrier
    const unsigned e = __reduce_add_sync(0xffffffffu, eligible);
    if (lane == 0 && e) atomicAdd(fw.n_elig, int(e));
  }
  // this block's best, sorted; those not above the global threshold (a prefix) go to the list
  const int kept = topl_compact(x, buf, n_buf, L);
  if (threadIdx.x == 0) {
    const unsigned long long g = load_relaxed(fw.topl_g);
    int lo = 0, hi = kept;  // first index whose key is above g
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (buf.keys[mid] <= g) lo = mid + 1;
      else hi = mid;
    }
    prefix = lo;
    n_buf = lo ? atomicAdd(fw.topl_count, lo) : 0;  // reused: the write offset
  }
  __syncthreads();
  for (int i = threadIdx.x; i < prefix; i += blockDim.x) {
    fw.topl_keys[n_buf + i] = buf.keys[i];
    fw.topl_rows[n_buf + i] = buf.rows[i];
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(fw.topl_ticket, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  // the last block: every block's list is written (each fenced before its ticket); merge them
  __threadfence();
  const int total = *reinterpret_cast<const volatile int*>(fw.topl_count);
  if (threadIdx.x == 0) {
    n_buf = 0;
    own = kMaxKey;
    bound = load_relaxed(fw.topl_g);
  }
  __syncthreads();
  for (int j0 = 0; j0 < total; j0 += kTopLStep) {
    const int j = j0 + threadIdx.x;
    if (j < total) {
      const unsigned long long key = __ldcg(fw.topl_keys + j);
      if (key <= bound) {
        const int slot = atomicAdd(&n_buf, 1);
        buf.keys[slot] = key;
        buf.rows[slot] = __ldcg(fw.topl_rows + j);
      }
    }
    settle();
  }
  const int n_top = topl_compact(x, buf, n_buf, L);
  if constexpr (kFp8) {  // τ for the filter; the state back for the rescoring, which runs next
    if (threadIdx.x == 0) {
      *fw.fp8_tau = n_top >= L ? buf.keys[L - 1] : kMaxKey;
      *fw.topl_count = 0;
      *fw.topl_g = kMaxKey;
      *fw.topl_ticket = 0;
    }
  } else {
    for (int t = threadIdx.x; t < n_top; t += blockDim.x) {  // what the selection leaves for write_results
      ws.sorted_keys[t] = buf.keys[t];
      ws.sorted_pos[t] = buf.rows[t];  // pos = row (rows == null), as in the scan's key array
      ws.win[t] = t;
    }
    if (threadIdx.x == 0) {
      SelectState* st = ws.state;
      st->active = 1;
      st->fallback = 0;
      st->E = st->L = st->n_win = st->total_q1 = n_top;
      st->runner = -1;
      st->capped = 0;
      st->n_cand[0] = int(N);  // the ads it stepped over: with kList, how many the fp8 retrieval rescored
      *fw.topl_count = 0;  // the between-request state for the next request on this stream
      *fw.topl_g = kMaxKey;
      *fw.topl_ticket = 0;
      if (kListed) *fw.cand_n = 0;
    }
    __syncthreads();  // the state and the winners in global memory: visible to the block
    write_results(m, desc, stage, ws.state, ws.win, ws.sorted_pos, ws.sorted_keys, nullptr, fw.counts, nullptr, nullptr, nullptr,
                  result, lay, out_rows, out_n, nullptr, threadIdx.x, blockDim.x);
  }
}

// ---- the fp8 retrieval ------------------------------------------------------------------------------
// Three launches: retrieve_onepass_kernel<kScanFp8> reads the e4m3 table (half the bytes of bf16)
// and finds τ, the L-th best lower end, exactly, writing each ad's upper end; this filter lists every
// ad whose upper end reaches τ (an ad below it has L ads above it: fp8_logic.h); and
// retrieve_onepass_kernel<kList> rescores the list in bf16 with the scan's own arithmetic and
// selects the exact top L.
__global__ void fp8_filter_kernel(FunnelWorkspace fw, int64_t n) {
  const unsigned long long tau = *fw.fp8_tau;
  const float t = key_score(tau);
  const int lane = threadIdx.x & 31;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t base = int64_t(blockIdx.x) * blockDim.x; base < n; base += stride) {  // uniform per warp
    const int64_t i = base + threadIdx.x;
    const float ub = i < n ? __ldcs(fw.fp8_ub + i) : -INFINITY;
    // -inf: not eligible; with fewer than L eligible (τ the max key) every eligible ad is listed
    const bool cand = ub != -INFINITY && (tau == kMaxKey || !(ub < t));
    const unsigned want = __ballot_sync(0xffffffffu, cand);
    if (want) {
      int first = 0;
      if (lane == 0) first = atomicAdd(fw.cand_n, __popc(want));
      first = __shfl_sync(0xffffffffu, first, 0);
      if (cand) fw.cand_list[first + __popc(want & ((1u << lane) - 1))] = int(i);
    }
  }
}

__global__ void rank_keys_kernel(DeviceModel m, const float* utility, const int* rows, const int* n, int m_cap,
                                 unsigned long long* keys) {
  const int count = *n;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < m_cap; i += gridDim.x * blockDim.x)
    keys[i] = i < count ? order_key(utility[i], m.ad_id_rank[rows[i]]) : kMaxKey;
}

}  // namespace

// ---- launchers --------------------------------------------------------------------------------------

void enqueue_retrieve_scan(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle, const float* query,
                           FunnelWorkspace& fw, cudaStream_t st) {
  const int sms = device_sm_count();
  const int grid = std::max(1, std::min(sms * 8, ceil_div(m.num_ads, 256)));  // 256 ads per block-step
  retrieve_scan_kernel<<<grid, 256, sizeof(float) * m.d_r_pad, st>>>(m, desc, bundle, query, fw.excl_ad, fw.excl_adv,
                                                                     fw.keys, fw.n_elig, fw.counts);
  launch_check("retrieve_scan_kernel");
}

int retrieve_onepass_grid() { return 2 * device_sm_count(); }

bool retrieve_onepass_fits(const DeviceModel& m, const SelectPlan& plan) {
  const bool uncapped = plan.stage == SelectStage::kRetrieveTop || (plan.stage == SelectStage::kRetrieve && !plan.capped);
  return uncapped && plan.l0 > 0 && plan.l0 <= kTopLMaxL && (plan.l0 & (plan.l0 - 1)) == 0 &&
         topl_buffer_bytes(plan.l0) + int(sizeof(float)) * m.d_r_pad <= max_smem_optin();
}

void enqueue_retrieve_onepass(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, const unsigned char* bundle,
                              const float* query, SelectWorkspace& ws, FunnelWorkspace& fw, unsigned char* result,
                              const ResultLayout& layout, int* out_rows, int* out_n, cudaStream_t st) {
  if (!retrieve_onepass_fits(m, plan)) throw std::runtime_error("enqueue_retrieve_onepass: the plan does not fit the one-pass scan");
  const int smem = topl_buffer_bytes(plan.l0) + int(sizeof(float)) * m.d_r_pad;
  opt_in_smem(reinterpret_cast<const void*>(retrieve_onepass_kernel<kScanBf16>), smem, "retrieve_onepass_kernel");
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(retrieve_onepass_grid(), (m.num_ads + kTopLStep - 1) / kTopLStep)));
  retrieve_onepass_kernel<kScanBf16><<<grid, kTopLStep, smem, st>>>(m, desc, plan.stage, plan.l0, bundle, query, fw, ws, result, layout,
                                                         out_rows, out_n);
  launch_check("retrieve_onepass_kernel");
}

bool retrieve_fp8_fits(const DeviceModel& m, const SelectPlan& plan) {
  return m.ad_retrieval_fp8 && retrieve_onepass_fits(m, plan) &&
         topl_buffer_bytes(plan.l0) + int(sizeof(float)) * m.d_r8 <= max_smem_optin();
}

void enqueue_retrieve_fp8(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, const unsigned char* bundle,
                          const float* query, SelectWorkspace& ws, FunnelWorkspace& fw, unsigned char* result,
                          const ResultLayout& layout, int* out_rows, int* out_n, cudaStream_t st) {
  if (!retrieve_fp8_fits(m, plan) || !fw.cand_list) throw std::runtime_error("enqueue_retrieve_fp8: the plan does not fit the fp8 retrieval");
  const int smem_scan = topl_buffer_bytes(plan.l0) + int(sizeof(float)) * m.d_r8;
  const int smem_list = topl_buffer_bytes(plan.l0) + int(sizeof(float)) * m.d_r_pad;
  opt_in_smem(reinterpret_cast<const void*>(retrieve_onepass_kernel<kScanFp8>), smem_scan, "retrieve_onepass_kernel<kScanFp8>");
  opt_in_smem(reinterpret_cast<const void*>(retrieve_onepass_kernel<kList>), smem_list, "retrieve_onepass_kernel<kList>");
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(retrieve_onepass_grid(), (m.num_ads + kTopLStep - 1) / kTopLStep)));
  retrieve_onepass_kernel<kScanFp8><<<grid, kTopLStep, smem_scan, st>>>(m, desc, plan.stage, plan.l0, bundle, query, fw, ws, result,
                                                                        layout, out_rows, out_n);
  launch_check("retrieve_onepass_kernel<kScanFp8>");
  fp8_filter_kernel<<<grid_small(m.num_ads), kThreads, 0, st>>>(fw, m.num_ads);
  launch_check("fp8_filter_kernel");
  // the list is short (the ads whose interval reaches τ): fewer blocks
  retrieve_onepass_kernel<kList><<<std::max(1, device_sm_count() / 2), kTopLStep, smem_list, st>>>(
      m, desc, plan.stage, plan.l0, bundle, query, fw, ws, result, layout, out_rows, out_n);
  launch_check("retrieve_onepass_kernel<kList>");
}

void reset_retrieve_onepass(FunnelWorkspace& fw, cudaStream_t st) {
  if (fw.cand_n) check(cudaMemsetAsync(fw.cand_n, 0, sizeof(int), st), "reset_retrieve_onepass", __FILE__, __LINE__);
  if (!fw.topl_g) return;
  check(cudaMemsetAsync(fw.topl_count, 0, sizeof(int), st), "reset_retrieve_onepass", __FILE__, __LINE__);
  check(cudaMemsetAsync(fw.topl_g, 0xff, sizeof(unsigned long long), st), "reset_retrieve_onepass", __FILE__, __LINE__);
  check(cudaMemsetAsync(fw.topl_ticket, 0, sizeof(unsigned), st), "reset_retrieve_onepass", __FILE__, __LINE__);
}

void enqueue_rank_keys(const DeviceModel& m, const float* utility, const int* rows, const int* n, int m_cap,
                       unsigned long long* keys, cudaStream_t st) {
  rank_keys_kernel<<<grid_small(m_cap), kThreads, 0, st>>>(m, utility, rows, n, m_cap, keys);
  launch_check("rank_keys_kernel");
}

}  // namespace adrank::cuda
