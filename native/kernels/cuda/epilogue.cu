// The single-CTA selection epilogue (funnel.cuh enqueue_epilogue): select_logic.h's
// epilogue_select run by one block of 1,024 threads over shared memory, then the result block
// (write_results, as the results kernel writes it) by the same block.
//
#include "kernels/cuda/funnel_device.cuh"

namespace adrank::cuda {

namespace {

constexpr int kEpiThreads = kEpiChunks;

struct DeviceSource {
  const DeviceModel* m;
  const float* utility;
  const int* rows;
  __device__ unsigned long long key(int i) const { return order_key(utility[i], m->ad_id_rank[pos_row(rows, i)]); }
  __device__ unsigned group(int i) const { return unsigned(m->ad_advertiser[pos_row(rows, i)]); }
};

__global__ void __launch_bounds__(kEpiThreads, 1)
    epilogue_kernel(DeviceModel m, const RequestDesc* desc, SelectStage stage, const int* e_dev, int p, const float* utility,
                    const int* rows, SelectState* st, int* sorted_pos, int* win, unsigned long long* counts, const float* value,
                    const float* probs, unsigned char* result, ResultLayout lay, const int* retrieved) {
  extern __shared__ unsigned long long epi_smem[];
  EpiParams P;
  P.p = p;
  P.n = min(*e_dev, p);
  P.k = stage_k(desc, stage);
  P.cap = stage_cap(desc, stage);
  P.runner = stage_runner(desc, stage);
  int* aux = reinterpret_cast<int*>(epi_smem + p);
  EpiShared sh{epi_smem, aux, aux + p};
  EpiOut out;
  out.sorted_pos = sorted_pos;
  out.win = win;
  BlockExec x;
  epilogue_select(x, P, DeviceSource{&m, utility, rows}, sh, out);
  if (threadIdx.x == 0) {  // what sel_finalize_kernel leaves for the results kernel
    st->active = 1;
    st->fallback = 0;
    st->E = P.n;
    st->L = P.n;
    st->n_win = out.n_win;
    st->runner = out.runner;
    st->capped = (unsigned long long)out.capped;
    st->total_q1 = out.n_win;
    counts[kCntCapped] += (unsigned long long)out.capped;
  }
  __syncthreads();  // the state and the counts above, the winners in global memory: visible to the block
  write_results(m, desc, stage, st, win, sorted_pos, nullptr, rows, counts, utility, value, probs, result, lay, nullptr, nullptr,
                retrieved, threadIdx.x, blockDim.x);
}

}  // namespace

bool epilogue_fits(const SelectPlan& plan) {
  const int p = plan.n_static;
  return !plan.local && (plan.stage == SelectStage::kRank || plan.stage == SelectStage::kRankPriced) && p > 0 &&
         p <= kEpiMaxItems && (p & (p - 1)) == 0 && epilogue_smem_bytes(p) <= max_smem_optin();
}

void enqueue_epilogue(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, SelectWorkspace& ws,
                      FunnelWorkspace& fw, const float* utility, const float* value, const float* probs, unsigned char* result,
                      const ResultLayout& layout, const int* retrieved, cudaStream_t st) {
  NvtxRange range(stage::kSelect);
  if (!epilogue_fits(plan) || plan.n_static > ws.n_cap) throw std::runtime_error("enqueue_epilogue: plan does not fit one block");
  const int smem = epilogue_smem_bytes(plan.n_static);
  opt_in_smem(reinterpret_cast<const void*>(epilogue_kernel), smem, "epilogue_kernel");
  epilogue_kernel<<<1, kEpiThreads, smem, st>>>(m, desc, plan.stage, plan.e_dev, plan.n_static, utility, plan.rows, ws.state,
                                                 ws.sorted_pos, ws.win, fw.counts, value, probs, result, layout, retrieved);
  launch_check("epilogue_kernel");
}

}  // namespace adrank::cuda
