// The result block on the device (see funnel.cuh): ResultLayout::make, the results kernel (ids,
// advertisers, rows, scores, probs, GSP prices; or stage 1's retrieved rows) and its launcher.
//
#include "kernels/cuda/funnel_device.cuh"

#include <algorithm>

namespace adrank::cuda {

// ---- host helpers -----------------------------------------------------------------------------------

ResultLayout ResultLayout::make(int k_cap, int tasks) {
  ResultLayout l;
  l.k_cap = k_cap;
  l.tasks = tasks;
  size_t off = round_up(sizeof(ResultHeader), 64);
  auto take = [&](size_t bytes) {
    const size_t o = off;
    off += round_up(int64_t(bytes), 64);
    return o;
  };
  l.off_ids = take(sizeof(int64_t) * k_cap);
  l.off_adv = take(sizeof(int64_t) * k_cap);
  l.off_rows = take(sizeof(int) * k_cap);
  l.off_scores = take(sizeof(float) * k_cap);
  l.off_prices = take(sizeof(float) * k_cap);
  l.off_values = take(sizeof(float) * k_cap);
  l.off_probs = take(sizeof(float) * size_t(k_cap) * std::max(tasks, 1));
  l.bytes = off;
  return l;
}

namespace {

__global__ void results_kernel(DeviceModel m, const RequestDesc* desc, SelectStage stage, const SelectState* st,
                               const int* win, const int* sorted_pos, const unsigned long long* sorted_keys, const int* rows,
                               const unsigned long long* counts, const float* utility, const float* value,
                               const float* probs, unsigned char* result, ResultLayout lay, int* out_rows, int* out_n,
                               const int* retrieved) {
  const int T = m.tasks;
  if (stage == SelectStage::kRetrieveTop) {  // out_rows holds up to the candidate bucket (>= R)
    const int n = st->n_win;
    for (int w = blockIdx.x * blockDim.x + threadIdx.x; w < n; w += gridDim.x * blockDim.x)
      out_rows[w] = pos_row(rows, sorted_pos[win[w]]);
    if (blockIdx.x == 0 && threadIdx.x == 0) *out_n = n;
    return;
  }
  const int n = min(st->n_win, lay.k_cap);
  const bool priced = stage_runner(desc, stage);
  ResultHeader* h = reinterpret_cast<ResultHeader*>(result);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
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
  for (int w = blockIdx.x * blockDim.x + threadIdx.x; w < n; w += gridDim.x * blockDim.x) {
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
      prices[w] = next < 0 ? fminf(bid, reserve) : fminf(bid, fmaxf(reserve, utility[next] / value[pos]));
    }
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------------------------------

void enqueue_results(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, const SelectWorkspace& ws,
                     const FunnelWorkspace& fw, const float* utility, const float* value, const float* probs,
                     unsigned char* result, const ResultLayout& layout, int* out_rows, int* out_n, cudaStream_t st) {
  const int* retrieved = plan.stage == SelectStage::kRankPriced ? out_n : nullptr;
  results_kernel<<<grid_small(layout.k_cap), kThreads, 0, st>>>(m, desc, plan.stage, ws.state, ws.win, ws.sorted_pos,
                                                                ws.sorted_keys, plan.rows, fw.counts, utility, value, probs,
                                                                result, layout, out_rows, out_n, retrieved);
  launch_check("results_kernel");
}

}  // namespace adrank::cuda
