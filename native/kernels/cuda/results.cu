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
  write_results(m, desc, stage, st, win, sorted_pos, sorted_keys, rows, counts, utility, value, probs, result, lay, out_rows, out_n,
                retrieved, blockIdx.x * blockDim.x + threadIdx.x, gridDim.x * blockDim.x);
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
