// Linear layers on the GPU: C = epilogue(A · Wᵀ), bf16 operands, fp32 accumulation.
//
//   A  [m, k] bf16, read through an ASource (below): plain rows, or gathered rows (row i of the
//      first segment is table[rows[i]]) — this is how the ad-side gather is fused into the first
//      MaskNet layer: A row i = [ad_features[row_index[i]] ; target_attention[i]].
//   W  [n, k] bf16 row-major (nn.Linear layout, out × in), converted and zero-padded at load.
//   epilogue(z, i, j, acc[i][j], acc[i][j+1]) — a functor applied to each pair of finished fp32
//      accumulators (bias + ReLU, mask product ·x̂, DCN cross x0 ⊙ (acc + b) + x_l, ...).
//
// Kernel: mma.sync m16n8k16 (bf16 → fp32) via inline PTX, operands staged in shared memory by a
// STAGES-deep cp.async pipeline and read with ldmatrix; shared rows are padded by 16 bytes, which
// makes the 8-row ldmatrix phases conflict-free. Blocks whose first row is >= *m_dev exit at once,
// so one launch (and one captured CUDA graph) serves any row count up to the bucket size m.
// gridDim.z batches independent problems of the same shape (the MaskNet blocks), each with its
// own element offsets (a_z, w_z, and the epilogue's own).
//
// Requirements (checked by the launcher): k % 32 == 0 (pad K with zero columns in A and W),
// n % 8 == 0, all leading dimensions and segment widths multiples of 8 elements, base pointers
// 16-byte aligned. Rows i >= m and columns j >= n are never written.
//
// What has run on a GPU and what is only compiled: docs/cuda.md "What is verified".
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/plan_logic.h"

namespace adrank::cuda {

using bf16 = __nv_bfloat16;

// Where the GEMM reads A from. Columns [0, k0) come from seg0 (row rows0[i] when rows0 is set,
// else row i); columns [k0, k) come from seg1 row i, column (j - k0). seg1 = null means k0 = k.
struct ASource {
  const bf16* seg0 = nullptr;
  int64_t ld0 = 0;
  const int* rows0 = nullptr;  // gather: [m] row indices into seg0, or null
  int k0 = 0;
  const bf16* seg1 = nullptr;
  int64_t ld1 = 0;
  int64_t z_stride0 = 0;       // element offset per gridDim.z index, both segments
  int64_t z_stride1 = 0;
};

struct GemmShape {
  int m = 0, n = 0, k = 0;      // m = capacity (bucket) rows; n, k padded as required above
  const int* m_dev = nullptr;   // when set, rows actually present = min(m, *m_dev)
  int batch = 1;                // gridDim.z
  const bf16* w = nullptr;      // [n, k], leading dimension ldw
  int64_t ldw = 0;
  int64_t w_z = 0;              // element offset of W per batch index
};

// ---- epilogue functors ----------------------------------------------------------------------------
// Each writes columns j and j+1 (j even) of row i, batch index z.

// out = act(acc + bias[j]) → bf16 and/or fp32 outputs.
template <bool kRelu>
struct BiasActEpilogue {
  const float* bias = nullptr;  // [n] (+ z * bias_z) or null
  int64_t bias_z = 0;
  bf16* out_bf16 = nullptr;
  int64_t ld_bf16 = 0, out_bf16_z = 0;
  float* out_f32 = nullptr;
  int64_t ld_f32 = 0, out_f32_z = 0;
  __device__ __forceinline__ void operator()(int z, int i, int j, float v0, float v1) const {
    if (bias) {
      v0 += bias[z * bias_z + j];
      v1 += bias[z * bias_z + j + 1];
    }
    if (kRelu) {
      v0 = fmaxf(v0, 0.f);
      v1 = fmaxf(v1, 0.f);
    }
    if (out_bf16)
      *reinterpret_cast<__nv_bfloat162*>(out_bf16 + z * out_bf16_z + int64_t(i) * ld_bf16 + j) = __floats2bfloat162_rn(v0, v1);
    if (out_f32) *reinterpret_cast<float2*>(out_f32 + z * out_f32_z + int64_t(i) * ld_f32 + j) = make_float2(v0, v1);
  }
};

// MaskNet instance-guided mask: out = x̂[i, j] · (acc + bias[j]) → bf16 (the next GEMM's operand).
struct MaskProductEpilogue {
  const float* bias = nullptr;
  int64_t bias_z = 0;
  const float* xhat = nullptr;  // [m, n] fp32, ld_xhat, shared by all z
  int64_t ld_xhat = 0;
  bf16* out = nullptr;
  int64_t ld_out = 0, out_z = 0;
  __device__ __forceinline__ void operator()(int z, int i, int j, float v0, float v1) const {
    const float2 x = *reinterpret_cast<const float2*>(xhat + int64_t(i) * ld_xhat + j);
    v0 = x.x * (v0 + bias[z * bias_z + j]);
    v1 = x.y * (v1 + bias[z * bias_z + j + 1]);
    *reinterpret_cast<__nv_bfloat162*>(out + z * out_z + int64_t(i) * ld_out + j) = __floats2bfloat162_rn(v0, v1);
  }
};

// DCNv2 cross layer: x_{l+1} = x0 ⊙ (acc + b) + x_l, kept in fp32 (residual stream) and bf16
// (the next layer's operand). out_f32 may not alias xl (other tiles still read x_l).
struct CrossEpilogue {
  const float* bias = nullptr;
  const float* x0 = nullptr;
  int64_t ld_x0 = 0;
  const float* xl = nullptr;
  int64_t ld_xl = 0;
  float* out_f32 = nullptr;
  int64_t ld_f32 = 0;
  bf16* out_bf16 = nullptr;
  int64_t ld_bf16 = 0;
  __device__ __forceinline__ void operator()(int, int i, int j, float v0, float v1) const {
    const float2 a = *reinterpret_cast<const float2*>(x0 + int64_t(i) * ld_x0 + j);
    const float2 l = *reinterpret_cast<const float2*>(xl + int64_t(i) * ld_xl + j);
    v0 = a.x * (v0 + bias[j]) + l.x;
    v1 = a.y * (v1 + bias[j + 1]) + l.y;
    *reinterpret_cast<float2*>(out_f32 + int64_t(i) * ld_f32 + j) = make_float2(v0, v1);
    *reinterpret_cast<__nv_bfloat162*>(out_bf16 + int64_t(i) * ld_bf16 + j) = __floats2bfloat162_rn(v0, v1);
  }
};

// ---- launchers (gemm_bf16.cu) ---------------------------------------------------------------------
// One per epilogue; each picks the tile configuration and checks the launch.
void gemm_bf16(const GemmShape& s, const ASource& a, const BiasActEpilogue<false>& ep, cudaStream_t st);
void gemm_bf16(const GemmShape& s, const ASource& a, const BiasActEpilogue<true>& ep, cudaStream_t st);
void gemm_bf16(const GemmShape& s, const ASource& a, const MaskProductEpilogue& ep, cudaStream_t st);
void gemm_bf16(const GemmShape& s, const ASource& a, const CrossEpilogue& ep, cudaStream_t st);

// Which kernel and tile gemm_bf16 would use for this shape ("wgmma 128x128x64/4st", "128x128x32/4st"
// or "64x64x32/4st").
const char* gemm_bf16_config(const GemmShape& s);

// Tile choice (plan_logic.h): the process-wide policy comes from ADRANK_CUDA_TILE (fill | shape |
// big | small) at first use; a graph keeps the tiles chosen when it was captured.
TilePolicy gemm_tile_policy();
void set_gemm_tile_policy(TilePolicy p);

// The Hopper kernel (gemm_wgmma.cuh), ADRANK_CUDA_WGMMA=1 (process-wide, read at first use): for
// products plan_logic.h's wgmma_takes gives it (over 64 rows, and 128×128 tiles covering at least
// half of the SMs; ADRANK_CUDA_WGMMA=force, or set_gemm_wgmma(true, true), drops the second
// condition) on a device whose code has it. gemm_wgmma_available() probes the current device once
// (a launch and a copy: call it before any graph capture; the backend does at construction) and
// the launcher takes the wgmma kernel only on a device probed available.
bool gemm_wgmma_available();
bool gemm_wgmma_enabled();
void set_gemm_wgmma(bool on, bool force = false);
// ADRANK_CUDA_WGMMA_TMA=1 (with the above): where A is plain rows (no gather, one segment, one
// batch) the wgmma kernel's operands come by bulk tensor copies from a producer warp
// (gemm_wgmma.cuh gemm_wgmma_tma_kernel); elsewhere the cp.async kernel.
bool gemm_wgmma_tma_enabled();
void set_gemm_wgmma_tma(bool on);

// CPU reference (fp32 math on bf16 inputs): c[i, j] = Σ_k a[i, k] · w[j, k], no epilogue.
// a [m, k] (lda), w [n, k] (ldw), c [m, n] (ldc). Used by the harness.
void gemm_bf16_reference(const bf16* a, int64_t lda, const bf16* w, int64_t ldw, float* c, int64_t ldc, int m, int n,
                         int k);

}  // namespace adrank::cuda
