// Selection on the device (see funnel.cuh): radix select of the best L keys, the sorts (cub), the
// exact greedy per-advertiser cap, local(P), the fallback round; the select workspace (size and
// carving), select_round and enqueue_select; and greedy_reference, the selection's CPU reference
// (harness). Layout: CPU reference, kernels, launchers.
//
#include "kernels/cuda/funnel_device.cuh"

#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace adrank::cuda {

using u64 = unsigned long long;

// ---- CPU reference ----------------------------------------------------------------------------------

void greedy_reference(const std::vector<int>& adv, int k, int cap, bool runner, std::vector<int>& winners, int* runner_out,
                      long long* capped) {
  std::unordered_map<int, int> taken;
  winners.clear();
  *runner_out = -1;
  *capped = 0;
  for (int i = 0; i < int(adv.size()); ++i) {
    if (cap > 0) {
      int& t = taken[adv[i]];
      if (t >= cap) {
        if (int(winners.size()) < k) ++*capped;
        continue;
      }
      ++t;
    }
    if (int(winners.size()) < k) {
      winners.push_back(i);
      if (!runner && int(winners.size()) == k) break;
    } else {
      *runner_out = i;
      break;
    }
  }
}

namespace {

// ---- selection --------------------------------------------------------------------------------------

__device__ __forceinline__ int64_t partition_of(int64_t id, int P) { return bucket_of(id, P); }

constexpr int kDigitBits = 11, kBins = 1 << kDigitBits, kPasses = 6;

__device__ __forceinline__ int digit_of(unsigned long long key, int pass) {
  const int hi = 64 - kDigitBits * pass;            // bits above are fixed by earlier passes
  const int shift = max(0, hi - kDigitBits);
  const int width = hi - shift;
  return int((key >> shift) & ((1ull << width) - 1));
}

__global__ void sel_init_kernel(const RequestDesc* desc, SelectStage stage, bool first_round, bool full, const int* e_dev,
                                SelectState* st, unsigned* hist, int* seg) {
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) hist[i] = 0;
  if (threadIdx.x != 0) return;
  if (!first_round && !st->fallback) {
    st->active = 0;
    seg[0] = 0;
    seg[1] = 0;
    return;
  }
  const int E = *e_dev, K = stage_k(desc, stage), cap = stage_cap(desc, stage);
  const long long want = full ? E : (cap > 0 ? 4ll * (K + 1) : K + 1ll);
  const int L = int(want < E ? want : (long long)E);
  st->active = 1;
  st->E = E;
  st->L = L;
  st->need = L;
  st->bin = 0;
  st->take_all = 0;
  st->done = L == 0;
  st->fallback = 0;
  st->n_out = 0;
  for (int p = 0; p < 8; ++p) st->n_cand[p] = 0;
  st->stop = L;
  st->total_q1 = 0;
  st->n_win = 0;
  st->runner = -1;
  st->capped = 0;
  seg[0] = 0;
  seg[1] = L;
}

__global__ void sel_hist_kernel(const unsigned long long* keys, int n_static, int pass, const int* cand_in, SelectState* st,
                                unsigned* hist) {
  __shared__ unsigned sh[kBins];
  if (!st->active || st->done || st->take_all) return;  // uniform per block
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) sh[i] = 0;
  __syncthreads();
  const int n = pass == 0 ? n_static : st->n_cand[pass - 1];
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int pos = pass == 0 ? i : cand_in[i];
    atomicAdd(&sh[digit_of(keys[pos], pass)], 1u);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kBins; i += blockDim.x)
    if (sh[i]) atomicAdd(&hist[i], sh[i]);
}

// One block of 1024 threads, two bins each: find the bin holding the need-th smallest key.
__global__ void __launch_bounds__(1024) sel_bin_kernel(SelectState* st, unsigned* hist) {
  using Scan = cub::BlockScan<unsigned, 1024>;
  __shared__ typename Scan::TempStorage tmp;
  if (!st->active || st->done) return;
  if (st->take_all) {  // the previous pass took its whole bin: selection complete
    __syncthreads();
    if (threadIdx.x == 0) st->done = 1;
    return;
  }
  const unsigned need = unsigned(st->need);
  unsigned c[2] = {hist[2 * threadIdx.x], hist[2 * threadIdx.x + 1]};
  unsigned ex[2];
  Scan(tmp).ExclusiveSum(c, ex);
  for (int j = 0; j < 2; ++j)
    if (ex[j] < need && need <= ex[j] + c[j]) {
      st->bin = 2 * threadIdx.x + j;
      st->need = int(need - ex[j]);
      st->take_all = (need - ex[j]) == c[j];
    }
  __syncthreads();
  hist[2 * threadIdx.x] = 0;
  hist[2 * threadIdx.x + 1] = 0;
}

__global__ void sel_filter_kernel(const unsigned long long* keys, int n_static, int pass, const int* cand_in, int* cand_out,
                                  int* out, SelectState* st) {
  if (!st->active || st->done) return;
  const int n = pass == 0 ? n_static : st->n_cand[pass - 1];
  const int bin = st->bin;
  const bool all = st->take_all;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int pos = pass == 0 ? i : cand_in[i];
    const int d = digit_of(keys[pos], pass);
    if (d < bin || (d == bin && all))
      out[atomicAdd(&st->n_out, 1)] = pos;
    else if (d == bin)
      cand_out[atomicAdd(&st->n_cand[pass], 1)] = pos;
  }
}

// sel_keys[i] = keys[out[i]] for i < L; max keys pad [L, pad_to).
__global__ void sel_gather_kernel(const unsigned long long* keys, const int* out, const SelectState* st, int pad_to,
                                  unsigned long long* sel_keys, int* sel_vals) {
  if (!st->active) return;
  const int L = st->L, n = max(L, pad_to);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    sel_keys[i] = i < L ? keys[out[i]] : kMaxKey;
    sel_vals[i] = i < L ? out[i] : -1;
  }
}

// Group key per sorted item s: (partition, advertiser) for the cap (partition 0 in global mode).
__global__ void sel_group_kernel(DeviceModel m, const RequestDesc* desc, const int* sorted_pos, const int* rows, bool local,
                                 const SelectState* st, int pad_to, unsigned long long* grp, int* vals) {
  if (!st->active) return;
  const int L = st->L, n = max(L, pad_to);
  const int P = local ? max(int(desc->partitions), 1) : 1;
  for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < n; s += gridDim.x * blockDim.x) {
    if (s < L) {
      const int row = pos_row(rows, sorted_pos[s]);
      const unsigned long long p = P > 1 ? u64(partition_of(m.ad_id[row], P)) : 0ull;
      grp[s] = p * unsigned(m.num_advertisers) + unsigned(m.ad_advertiser[row]);
      vals[s] = s;
    } else {
      grp[s] = kMaxKey;
      vals[s] = -1;
    }
  }
}

// q1[s] = advertiser-rank(s) < cap (all ones when uncapped).
__global__ void sel_q1_kernel(const RequestDesc* desc, SelectStage stage, bool capped, const unsigned long long* grp_sorted,
                              const int* vals_sorted, const SelectState* st, int* q1) {
  if (!st->active) return;
  const int L = st->L, cap = stage_cap(desc, stage);
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < L; t += gridDim.x * blockDim.x) {
    if (!capped || cap <= 0) {
      q1[t] = 1;
    } else {
      q1[vals_sorted[t]] = (t < cap || grp_sorted[t - cap] != grp_sorted[t]) ? 1 : 0;
    }
  }
}

// Exclusive scan of in[0, L) into out, one block, carrying across tiles of 4096.
__global__ void __launch_bounds__(1024) sel_scan_kernel(const int* in, int* out, const SelectState* st) {
  using Scan = cub::BlockScan<int, 1024>;
  __shared__ typename Scan::TempStorage tmp;
  if (!st->active) return;
  const int L = st->L;
  int carry = 0;
  for (int base = 0; base < L; base += 4096) {
    int v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int i = base + threadIdx.x * 4 + j;
      v[j] = i < L ? in[i] : 0;
    }
    int agg;
    Scan(tmp).ExclusiveSum(v, v, agg);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int i = base + threadIdx.x * 4 + j;
      if (i < L) out[i] = v[j] + carry;
    }
    carry += agg;
    __syncthreads();
  }
}

// Global mode: winners = first K items with q1; runner-up the (K+1)-th; stop = the K-th winner.
__global__ void sel_global_win_kernel(const RequestDesc* desc, SelectStage stage, const int* q1, const int* scan,
                                      SelectState* st, int* win) {
  if (!st->active) return;
  const int L = st->L, K = stage_k(desc, stage);
  for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < L; s += gridDim.x * blockDim.x) {
    if (s == L - 1) st->total_q1 = scan[s] + q1[s];
    if (!q1[s]) continue;
    const int r = scan[s];
    if (r < K) win[r] = s;
    if (r == K) st->runner = s;
    if (r == K - 1) st->stop = s;
  }
}

// capped += #{s < stop(partition(s)) : !q1[s]}; global mode has one partition with stop st->stop.
__global__ void sel_capped_kernel(DeviceModel m, const RequestDesc* desc, bool local, const int* sorted_pos, const int* rows,
                                  const int* q1, const int* stop, SelectState* st) {
  if (!st->active) return;
  const int L = st->L, P = local ? max(int(desc->partitions), 1) : 1;
  unsigned n = 0;
  for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < L; s += gridDim.x * blockDim.x) {
    if (q1[s]) continue;
    int lim = st->stop;
    if (local) lim = stop[partition_of(m.ad_id[pos_row(rows, sorted_pos[s])], P)];
    n += s < lim;
  }
  n = __reduce_add_sync(0xffffffffu, n);
  if ((threadIdx.x & 31) == 0 && n) atomicAdd(&st->capped, static_cast<unsigned long long>(n));
}

// Local mode, partition keys for the second stable sort: partition of q1 items, P for the others.
__global__ void sel_partition_key_kernel(DeviceModel m, const RequestDesc* desc, const int* sorted_pos, const int* rows,
                                         const int* q1, const SelectState* st, unsigned long long* grp, int* vals,
                                         int* stop, int max_partitions) {
  if (!st->active) return;
  const int L = st->L, P = max(int(desc->partitions), 1);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < max(L, min(P, max_partitions)); i += gridDim.x * blockDim.x) {
    if (i < min(P, max_partitions)) stop[i] = L;
    if (i < L) {
      grp[i] = q1[i] ? u64(partition_of(m.ad_id[pos_row(rows, sorted_pos[i])], P)) : u64(P);
      vals[i] = i;
    }
  }
}

// Local mode: q2 = partition winners (rank among the partition's q1 items < ⌈K/P⌉); stop[p] = the
// position of partition p's last winner (where its walk stopped).
__global__ void sel_q2_kernel(const RequestDesc* desc, const unsigned long long* part_sorted, const int* vals_sorted,
                              const SelectState* st, int* q2, int* stop) {
  if (!st->active) return;
  const int L = st->L, P = max(int(desc->partitions), 1), K = int(desc->k);
  const int kp = (K + P - 1) / P;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < L; t += gridDim.x * blockDim.x) {
    const unsigned long long p = part_sorted[t];
    const int s = vals_sorted[t];
    if (p == u64(P)) {
      q2[s] = 0;
      continue;
    }
    q2[s] = (t < kp || part_sorted[t - kp] != p) ? 1 : 0;
    const bool last = kp > 0 && t - (kp - 1) >= 0 && part_sorted[t - (kp - 1)] == p && (t - kp < 0 || part_sorted[t - kp] != p);
    if (last) stop[p] = s;
  }
}

// Local mode: merged partition winners in global order → first K winners, (K+1)-th runner-up.
__global__ void sel_local_win_kernel(const RequestDesc* desc, const int* q2, const int* scan, SelectState* st, int* win) {
  if (!st->active) return;
  const int L = st->L, K = int(desc->k);
  for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < L; s += gridDim.x * blockDim.x) {
    if (s == L - 1) st->total_q1 = scan[s] + q2[s];
    if (!q2[s]) continue;
    const int r = scan[s];
    if (r < K) win[r] = s;
    if (r == K) st->runner = s;
  }
}

__global__ void sel_finalize_kernel(const RequestDesc* desc, SelectStage stage, bool first_round, bool local, SelectState* st,
                                    unsigned long long* counts) {
  if (!st->active) return;
  const int K = stage_k(desc, stage);
  const bool runner = stage_runner(desc, stage);
  const int need = K + (runner ? 1 : 0);
  if (first_round && !local && st->total_q1 < need && st->L < st->E) {
    st->fallback = 1;  // the prefix held too few qualifiers: the next round redoes it with L = E
    return;
  }
  st->fallback = 0;
  st->n_win = min(st->total_q1, K);
  if (!(runner && st->total_q1 > K)) st->runner = -1;
  counts[kCntCapped] += st->capped;
}

}  // namespace

// ---- launchers --------------------------------------------------------------------------------------

namespace {

size_t cub_temp_bytes(int n_cap, int l0_cap) {
  size_t a = 0, b = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, a, static_cast<unsigned long long*>(nullptr),
                                             static_cast<unsigned long long*>(nullptr), static_cast<int*>(nullptr),
                                             static_cast<int*>(nullptr), l0_cap, 0, 64));
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(nullptr, b, static_cast<unsigned long long*>(nullptr),
                                                      static_cast<unsigned long long*>(nullptr), static_cast<int*>(nullptr),
                                                      static_cast<int*>(nullptr), n_cap, 1, static_cast<int*>(nullptr),
                                                      static_cast<int*>(nullptr) + 1, 0, 64));
  return std::max(a, b);
}

SelectWorkspace carve_select(int n_cap, int l0_cap, int max_partitions, Carver& c) {
  SelectWorkspace ws;
  ws.n_cap = n_cap;
  ws.l0_cap = l0_cap;
  ws.max_partitions = max_partitions;
  const size_t n = std::max(n_cap, l0_cap);
  ws.state = c.take<SelectState>(1);
  ws.hist = c.take<unsigned>(kBins);
  ws.cand_a = c.take<int>(n);
  ws.cand_b = c.take<int>(n);
  ws.out = c.take<int>(n);
  ws.sel_keys = c.take<unsigned long long>(n);
  ws.sorted_keys = c.take<unsigned long long>(n);
  ws.grp_keys = c.take<unsigned long long>(n);
  ws.grp_sorted = c.take<unsigned long long>(n);
  ws.sel_vals = c.take<int>(n);
  ws.sorted_pos = c.take<int>(n);
  ws.grp_vals = c.take<int>(n);
  ws.grp_vals_sorted = c.take<int>(n);
  ws.q1 = c.take<int>(n);
  ws.q2 = c.take<int>(n);
  ws.scan = c.take<int>(n);
  ws.win = c.take<int>(n);
  ws.stop = c.take<int>(max_partitions);
  ws.seg_offsets = c.take<int>(2);
  ws.cub_temp_bytes = cub_temp_bytes(int(n), l0_cap);
  ws.cub_temp = c.take<char>(ws.cub_temp_bytes);
  return ws;
}

// Stable sort (keys, vals) → (keys_out, vals_out): fixed size `n_fixed` (round 0, padded with max
// keys) or the device-bounded single segment [seg[0], seg[1]) (fallback / local rounds).
void sort_pairs(SelectWorkspace& ws, const unsigned long long* k_in, unsigned long long* k_out, const int* v_in, int* v_out,
                bool fixed, int n_fixed, cudaStream_t st) {
  size_t bytes = ws.cub_temp_bytes;
  if (fixed)
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(ws.cub_temp, bytes, k_in, k_out, v_in, v_out, n_fixed, 0, 64, st));
  else
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(ws.cub_temp, bytes, k_in, k_out, v_in, v_out,
                                                        std::max(ws.n_cap, ws.l0_cap), 1, ws.seg_offsets,
                                                        ws.seg_offsets + 1, 0, 64, st));
}

// One selection round (see funnel.cuh).
void select_round(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, SelectWorkspace& ws,
                  FunnelWorkspace& fw, bool first_round, bool full, cudaStream_t st) {
  sel_init_kernel<<<1, 256, 0, st>>>(desc, plan.stage, first_round, full, plan.e_dev, ws.state, ws.hist, ws.seg_offsets);
  launch_check("sel_init_kernel");
  const int gs = grid_small(plan.n_static);
  for (int p = 0; p < kPasses; ++p) {
    const int* cin = p % 2 ? ws.cand_a : ws.cand_b;  // pass p reads what pass p-1 wrote
    int* cout = p % 2 ? ws.cand_b : ws.cand_a;
    sel_hist_kernel<<<gs, kThreads, 0, st>>>(plan.keys, plan.n_static, p, cin, ws.state, ws.hist);
    launch_check("sel_hist_kernel");
    sel_bin_kernel<<<1, 1024, 0, st>>>(ws.state, ws.hist);
    launch_check("sel_bin_kernel");
    sel_filter_kernel<<<gs, kThreads, 0, st>>>(plan.keys, plan.n_static, p, cin, cout, ws.out, ws.state);
    launch_check("sel_filter_kernel");
  }
  const bool fixed = first_round && !full;
  const int pad = fixed ? plan.l0 : 0;
  const int gl = grid_small(fixed ? plan.l0 : plan.n_static);
  sel_gather_kernel<<<gl, kThreads, 0, st>>>(plan.keys, ws.out, ws.state, pad, ws.sel_keys, ws.sel_vals);
  launch_check("sel_gather_kernel");
  sort_pairs(ws, ws.sel_keys, ws.sorted_keys, ws.sel_vals, ws.sorted_pos, fixed, plan.l0, st);
  if (plan.capped) {
    sel_group_kernel<<<gl, kThreads, 0, st>>>(m, desc, ws.sorted_pos, plan.rows, plan.local, ws.state, pad, ws.grp_keys,
                                              ws.grp_vals);
    launch_check("sel_group_kernel");
    sort_pairs(ws, ws.grp_keys, ws.grp_sorted, ws.grp_vals, ws.grp_vals_sorted, fixed, plan.l0, st);
  }
  sel_q1_kernel<<<gl, kThreads, 0, st>>>(desc, plan.stage, plan.capped, ws.grp_sorted, ws.grp_vals_sorted, ws.state, ws.q1);
  launch_check("sel_q1_kernel");
  if (!plan.local) {
    sel_scan_kernel<<<1, 1024, 0, st>>>(ws.q1, ws.scan, ws.state);
    launch_check("sel_scan_kernel");
    sel_global_win_kernel<<<gl, kThreads, 0, st>>>(desc, plan.stage, ws.q1, ws.scan, ws.state, ws.win);
    launch_check("sel_global_win_kernel");
    sel_capped_kernel<<<gl, kThreads, 0, st>>>(m, desc, false, ws.sorted_pos, plan.rows, ws.q1, ws.stop, ws.state);
    launch_check("sel_capped_kernel");
  } else {
    sel_partition_key_kernel<<<gl, kThreads, 0, st>>>(m, desc, ws.sorted_pos, plan.rows, ws.q1, ws.state, ws.grp_keys,
                                                      ws.grp_vals, ws.stop, ws.max_partitions);
    launch_check("sel_partition_key_kernel");
    sort_pairs(ws, ws.grp_keys, ws.grp_sorted, ws.grp_vals, ws.grp_vals_sorted, false, 0, st);
    sel_q2_kernel<<<gl, kThreads, 0, st>>>(desc, ws.grp_sorted, ws.grp_vals_sorted, ws.state, ws.q2, ws.stop);
    launch_check("sel_q2_kernel");
    sel_capped_kernel<<<gl, kThreads, 0, st>>>(m, desc, true, ws.sorted_pos, plan.rows, ws.q1, ws.stop, ws.state);
    launch_check("sel_capped_kernel");
    sel_scan_kernel<<<1, 1024, 0, st>>>(ws.q2, ws.scan, ws.state);
    launch_check("sel_scan_kernel");
    sel_local_win_kernel<<<gl, kThreads, 0, st>>>(desc, ws.q2, ws.scan, ws.state, ws.win);
    launch_check("sel_local_win_kernel");
  }
  sel_finalize_kernel<<<1, 1, 0, st>>>(desc, plan.stage, first_round, plan.local, ws.state, fw.counts);
  launch_check("sel_finalize_kernel");
}

}  // namespace

size_t select_workspace_bytes(int n_cap, int l0_cap, int max_partitions) {
  Carver c{nullptr};
  carve_select(n_cap, l0_cap, max_partitions, c);
  return c.off;
}

SelectWorkspace select_workspace_carve(int n_cap, int l0_cap, int max_partitions, void* base) {
  Carver c{static_cast<char*>(base)};
  return carve_select(n_cap, l0_cap, max_partitions, c);
}

void enqueue_select(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, SelectWorkspace& ws,
                    FunnelWorkspace& fw, cudaStream_t st) {
  NvtxRange range(stage::kSelect);
  if (plan.n_static > std::max(ws.n_cap, ws.l0_cap) || plan.l0 > ws.l0_cap || plan.l0 < 1)
    throw std::runtime_error("enqueue_select: workspace too small for this plan");
  if (plan.local) {
    select_round(m, desc, plan, ws, fw, /*first_round=*/true, /*full=*/true, st);
  } else {
    select_round(m, desc, plan, ws, fw, true, false, st);
    if (plan.fallback_round)  // its kernels return at once unless round 0 asked for it
      select_round(m, desc, plan, ws, fw, false, true, st);
  }
}

}  // namespace adrank::cuda
