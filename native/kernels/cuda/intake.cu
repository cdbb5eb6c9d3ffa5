// Funnel intake on the device (see funnel.cuh): the request's exclusions, Rank candidate intake
// (id → row, unknown / duplicate counts), eligibility, the intake reset, and their launchers.
//
#include "kernels/cuda/funnel_device.cuh"

#include "engine/id_map.h"

#include <climits>

namespace adrank::cuda {

namespace {

// ---- intake, exclusions, eligibility ----------------------------------------------------------------

__global__ void exclusions_kernel(DeviceModel m, const RequestDesc* desc, const unsigned char* bundle, uint8_t* excl_ad,
                                  uint8_t* excl_adv, uint8_t val) {
  const int64_t* ads = section<int64_t>(bundle, desc->off_excluded_ads);
  const int64_t* advs = section<int64_t>(bundle, desc->off_excluded_advertisers);
  const int stride = gridDim.x * blockDim.x;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < int(desc->num_excluded_ads); i += stride) {
    const int row = id_map_probe(m.ad_hash_keys, m.ad_hash_rows, m.ad_hash_mask, ads[i]);
    if (row >= 0) excl_ad[row] = val;
  }
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < int(desc->num_excluded_advertisers); i += stride) {
    const int a = id_map_probe(m.adv_hash_keys, m.adv_hash_vals, m.adv_hash_mask, advs[i]);
    if (a >= 0) excl_adv[a] = val;
  }
}

__global__ void rank_intake_kernel(DeviceModel m, const RequestDesc* desc, const unsigned char* bundle, int* cand_rows,
                                   int* first_seen, unsigned long long* counts) {
  __shared__ unsigned sh[kNumCounts];
  BlockCounts bc{sh};
  bc.init();
  const int n = int(desc->num_candidates);
  const int64_t* ids = section<int64_t>(bundle, desc->off_candidates);
  unsigned unknown = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int row = id_map_probe(m.ad_hash_keys, m.ad_hash_rows, m.ad_hash_mask, ids[i]);
    cand_rows[i] = row;
    if (row < 0)
      ++unknown;
    else
      atomicMin(&first_seen[row], i);
  }
  bc.add(kCntUnknown, unknown);
  if (blockIdx.x == 0 && threadIdx.x == 0) bc.add(kCntReceived, unsigned(n));
  bc.flush(counts);
}

__global__ void rank_eligible_kernel(DeviceModel m, const RequestDesc* desc, const unsigned char* bundle,
                                     const int* cand_rows, const int* first_seen, const uint8_t* excl_ad,
                                     const uint8_t* excl_adv, int* elig_rows, int* n_elig, unsigned long long* counts) {
  __shared__ unsigned sh[kNumCounts];
  BlockCounts bc{sh};
  bc.init();
  const int n = int(desc->num_candidates);
  const uint32_t* targeting = section<uint32_t>(bundle, desc->off_targeting);
  unsigned local[kNumCounts] = {};
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int row = cand_rows[i];
    if (row < 0) continue;
    if (first_seen[row] != i) {
      ++local[kCntDuplicate];
      continue;
    }
    const int drop = drop_reason(m, desc, targeting, excl_ad, excl_adv, row);
    ++local[count_index(drop)];
    if (drop == kEligible) elig_rows[atomicAdd(n_elig, 1)] = row;
  }
  for (int c = 0; c < kNumCounts; ++c) bc.add(c, local[c]);
  bc.flush(counts);
}

__global__ void rank_intake_reset_kernel(const RequestDesc* desc, const int* cand_rows, int* first_seen) {
  const int n = int(desc->num_candidates);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int row = cand_rows[i];
    if (row >= 0) first_seen[row] = INT_MAX;
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------------------------------

void enqueue_exclusions(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle, FunnelWorkspace& fw,
                        bool set, cudaStream_t st) {
  exclusions_kernel<<<16, kThreads, 0, st>>>(m, desc, bundle, fw.excl_ad, fw.excl_adv, set ? 1 : 0);
  launch_check("exclusions_kernel");
}

void enqueue_rank_intake(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle, FunnelWorkspace& fw,
                         int m_cap, cudaStream_t st) {
  const int g = grid_small(m_cap);
  rank_intake_kernel<<<g, kThreads, 0, st>>>(m, desc, bundle, fw.cand_rows, fw.first_seen, fw.counts);
  launch_check("rank_intake_kernel");
  rank_eligible_kernel<<<g, kThreads, 0, st>>>(m, desc, bundle, fw.cand_rows, fw.first_seen, fw.excl_ad, fw.excl_adv,
                                               fw.elig_rows, fw.n_elig, fw.counts);
  launch_check("rank_eligible_kernel");
}

void enqueue_rank_intake_reset(const RequestDesc* desc, FunnelWorkspace& fw, int m_cap, cudaStream_t st) {
  rank_intake_reset_kernel<<<grid_small(m_cap), kThreads, 0, st>>>(desc, fw.cand_rows, fw.first_seen);
  launch_check("rank_intake_reset_kernel");
}

}  // namespace adrank::cuda
