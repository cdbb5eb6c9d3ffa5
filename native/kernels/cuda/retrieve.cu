// Retrieval on the device (see funnel.cuh): the retrieval scan (eligibility + q · r_c for every ad →
// order keys, selected by select.cu), the one-pass retrieval (the scan, the selection and the result
// block in one launch, no key array: ADRANK_CUDA_RETRIEVE_ONEPASS), the rank keys from utilities,
// and their launchers.
//
#include "kernels/cuda/funnel_device.cuh"

#include <algorithm>

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

// Eligibility and score of ad base + lane, for the 32 consecutive ads of one warp step: `drop` is
// its drop reason (-1 past the end), `score` its q · r (0 unless eligible). Called by every lane
// of the warp together (ballots and shuffles). q: the query in shared memory.
__device__ __forceinline__ void score_group(const DeviceModel& m, const RequestDesc* desc, const uint32_t* targeting,
                                            const uint8_t* excl_ad, const uint8_t* excl_adv, const float* q, int64_t base,
                                            int lane, int& drop_out, float& score_out) {
  const int sub = lane & 15, half = lane >> 4;
  const int64_t N = m.num_ads;
  const int chunks = m.d_r_pad / 8;
  const int64_t mine = base + lane;
  const int drop = mine < N ? drop_reason(m, desc, targeting, excl_ad, excl_adv, int(mine)) : -1;
  const unsigned elig = __ballot_sync(0xffffffffu, drop == kEligible);
  float score = 0.f;
  for (int t0 = 0; t0 < 16; t0 += kScanBatch) {  // step t: half h scores ad 2t + h
    if (((elig >> (2 * t0)) & ((1ull << (2 * kScanBatch)) - 1)) == 0) continue;  // warp-uniform
    float acc[kScanBatch];
#pragma unroll
    for (int u = 0; u < kScanBatch; ++u) acc[u] = 0.f;
    for (int c = sub; c < chunks; c += 16) {
      uint4 v[kScanBatch];
#pragma unroll
      for (int u = 0; u < kScanBatch; ++u) {  // streaming: the corpus is read once per request
        const int j = 2 * (t0 + u) + half;
        v[u] = (elig >> j) & 1u ? __ldcs(reinterpret_cast<const uint4*>(m.ad_retrieval + (base + j) * m.d_r_pad) + c)
                                : make_uint4(0, 0, 0, 0);
      }
      const float* qq = q + c * 8;
#pragma unroll
      for (int u = 0; u < kScanBatch; ++u) {
        const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v[u]);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 f = __bfloat1622float2(p[e]);
          acc[u] = fmaf(f.x, qq[2 * e], acc[u]);
          acc[u] = fmaf(f.y, qq[2 * e + 1], acc[u]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kScanBatch; ++u) {
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) acc[u] += __shfl_xor_sync(0xffffffffu, acc[u], o);  // within each half
      const float s = __shfl_sync(0xffffffffu, acc[u], (lane & 1) << 4);  // ad `lane` was scored by half lane & 1
      if ((lane >> 1) == t0 + u) score = s;
    }
  }
  drop_out = drop;
  score_out = score;
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
    score_group(m, desc, targeting, excl_ad, excl_adv, q, base, lane, drop, score);
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

// ---- the one-pass retrieval (select_logic.h "the one-pass retrieval's top-L buffer") ---------------
// kTopLStep threads; a block step scores kTopLStep consecutive ads (a warp 32 of them, as above),
// steps spread over the blocks; the loop's trip count is the same for every thread of a block, so
// the buffer's barriers are uniform. Dynamic shared memory: the buffer's keys, its rows, the query.

__device__ __forceinline__ unsigned long long load_relaxed(const unsigned long long* p) {
  return *reinterpret_cast<const volatile unsigned long long*>(p);
}

__global__ void __launch_bounds__(kTopLStep) retrieve_onepass_kernel(DeviceModel m, const RequestDesc* desc, SelectStage stage,
                                                                     int lcap, const unsigned char* bundle, const float* query,
                                                                     FunnelWorkspace fw, SelectWorkspace ws, unsigned char* result,
                                                                     ResultLayout lay, int* out_rows, int* out_n) {
  extern __shared__ unsigned long long topl_smem[];
  const int bcap = topl_buffer_cap(lcap);
  const TopLBuffer buf{topl_smem, reinterpret_cast<int*>(topl_smem + bcap), bcap};
  float* q = reinterpret_cast<float*>(buf.rows + bcap);
  __shared__ unsigned sh[kNumCounts];
  __shared__ int n_buf, prefix, is_last;
  __shared__ unsigned long long own, bound;  // own: the L-th best kept (once L are kept); bound: min(own, G)
  for (int c = threadIdx.x; c < m.d_r_pad; c += blockDim.x) q[c] = query[c];
  if (threadIdx.x == 0) {
    n_buf = 0;
    own = kMaxKey;
    bound = load_relaxed(fw.topl_g);
  }
  BlockCounts bc{sh};
  bc.init();  // includes __syncthreads: q, n_buf and bound are ready
  BlockExec x;
  const int L = stage_k(desc, stage);  // K (Retrieve) or R (RetrieveAndRank): 1 <= L < lcap
  const uint32_t* targeting = section<uint32_t>(bundle, desc->off_targeting);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t N = m.num_ads;
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
    const int64_t base = tile * kTopLStep + warp * 32, mine = base + lane;
    int drop;
    float score;
    score_group(m, desc, targeting, fw.excl_ad, fw.excl_adv, q, base, lane, drop, score);
    if (mine < N) {
      ++local[count_index(drop)];
      eligible += drop == kEligible;
    }
    if (drop == kEligible) {
      const unsigned long long key = order_key(score, m.ad_id_rank[mine]);
      if (key <= bound) {
        const int slot = atomicAdd(&n_buf, 1);
        buf.keys[slot] = key;
        buf.rows[slot] = int(mine);
      }
    }
    settle();
  }
  for (int c = 0; c < kNumCounts; ++c) bc.add(c, local[c]);
  if (blockIdx.x == 0 && threadIdx.x == 0) bc.add(kCntReceived, unsigned(N > 0xffffffffll ? 0 : N));
  bc.flush(fw.counts);  // begins with a barrier
  {
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
    *fw.topl_count = 0;  // the between-request state for the next request on this stream
    *fw.topl_g = kMaxKey;
    *fw.topl_ticket = 0;
  }
  __syncthreads();  // the state and the winners in global memory: visible to the block
  write_results(m, desc, stage, ws.state, ws.win, ws.sorted_pos, ws.sorted_keys, nullptr, fw.counts, nullptr, nullptr, nullptr,
                result, lay, out_rows, out_n, nullptr, threadIdx.x, blockDim.x);
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
  opt_in_smem(reinterpret_cast<const void*>(retrieve_onepass_kernel), smem, "retrieve_onepass_kernel");
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(retrieve_onepass_grid(), (m.num_ads + kTopLStep - 1) / kTopLStep)));
  retrieve_onepass_kernel<<<grid, kTopLStep, smem, st>>>(m, desc, plan.stage, plan.l0, bundle, query, fw, ws, result, layout,
                                                         out_rows, out_n);
  launch_check("retrieve_onepass_kernel");
}

void reset_retrieve_onepass(FunnelWorkspace& fw, cudaStream_t st) {
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
