// Device pieces both GEMM kernels use (gemm_bf16.cu's mma.sync kernel, gemm_wgmma.cuh's wgmma
// kernel): the cp.async copies and where a row of A or W comes from. Internal to those two files.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/gemm_bf16.cuh"

namespace adrank::cuda::gemm_detail {

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  // src_bytes = 0 zero-fills the 16 destination bytes (rows/columns outside the matrix).
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// One row of A as the ASource contract reads it (gemm_bf16.cuh): columns [0, k0) from seg0 (row
// rows0[i] when gathering), columns [k0, k) from seg1. Resolved once per row, before the K loop;
// a row outside the matrix (ok = false) points at row 0 and is never copied from.
struct ARow {
  const bf16* p0 = nullptr;
  const bf16* p1 = nullptr;
  __device__ __forceinline__ void init(const ASource& a, int z, int gi, bool ok) {
    const int gi_safe = ok ? gi : 0;
    const int64_t r0 = a.rows0 ? int64_t(ok ? a.rows0[gi] : 0) : int64_t(gi_safe);
    p0 = a.seg0 + z * a.z_stride0 + r0 * a.ld0;
    p1 = a.seg1 ? a.seg1 + z * a.z_stride1 + int64_t(gi_safe) * a.ld1 : p0;
  }
  // The 8 elements starting at column kk (kk and k0 multiples of 8, so a chunk never straddles).
  __device__ __forceinline__ const bf16* at(int kk, int k0) const { return kk < k0 ? p0 + kk : p1 + (kk - k0); }
};

// Row j of W (batch z): where a W row's copies start; a row outside W (ok = false) points at row 0
// and is never copied from.
__device__ __forceinline__ const bf16* w_row(const GemmShape& s, int z, int j, bool ok) {
  return s.w + z * s.w_z + int64_t(ok ? j : 0) * s.ldw;
}

}  // namespace adrank::cuda::gemm_detail
