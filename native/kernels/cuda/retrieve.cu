// Retrieval on the device (see funnel.cuh): the one-pass retrieval scan (eligibility + q · r_c for
// every ad → order keys), the rank keys from utilities, and their launchers.
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
  const int lane = threadIdx.x & 31, sub = lane & 15, half = lane >> 4;
  const int64_t N = m.num_ads;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  const int chunks = m.d_r_pad / 8;
  unsigned local[kNumCounts] = {};
  unsigned eligible = 0;
  for (int64_t base = warp * 32; base < N; base += nwarps * 32) {  // uniform trip count per warp
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

void enqueue_rank_keys(const DeviceModel& m, const float* utility, const int* rows, const int* n, int m_cap,
                       unsigned long long* keys, cudaStream_t st) {
  rank_keys_kernel<<<grid_small(m_cap), kThreads, 0, st>>>(m, utility, rows, n, m_cap, keys);
  launch_check("rank_keys_kernel");
}

}  // namespace adrank::cuda
