// The ranking model's forward pass on the device (docs/design.md §4), for one request on one stream:
//   enqueue_request_side   once per request: sequence encoder, u, the user half of MaskNet's first
//                          layer (as a per-request bias), and the retrieval query.
//   enqueue_candidates     per candidate row list: target attention + x̂, MaskNet, DCN, MLP, heads,
//                          calibration and utility.
// Row counts live on the device (`*m_dev`), bounded by the bucket capacity m_cap, so the whole
// sequence can be captured once per bucket in a CUDA graph.
// What has run on a GPU and what is only compiled: docs/cuda.md "What is verified".
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/device_model.cuh"

namespace adrank::cuda {

// Per-stream scratch (see forward_workspace_bytes). Candidate intermediates hold `chunk` rows; the
// outputs (logits, probs, value, utility) hold m_cap rows. Requests with more rows than `chunk` run
// enqueue_candidates once per chunk.
struct ForwardWorkspace {
  int m_cap = 0, chunk = 0;
  // request side, fp32
  float *seq_x = nullptr, *seq_h = nullptr, *seq_qkv = nullptr, *seq_attn = nullptr, *seq_ffn = nullptr, *seq_H = nullptr;
  float* u = nullptr;           // [du]
  float* mask1_bias = nullptr;  // [B*h_pad] = mask.0 bias + W_user · u
  float *tower_a = nullptr, *tower_b = nullptr;
  float* query = nullptr;       // [d_r_pad], L2-normalised retrieval query
  // candidates
  bf16* ta = nullptr;           // [chunk, k1 - da_pad] target attention (bf16 GEMM operand)
  float* xhat = nullptr;        // [chunk, d_pad] input_norm(x), fp32
  bf16* hidden = nullptr;       // [chunk, B*h_pad]
  bf16* masked = nullptr;       // [B][chunk, d_pad]
  float* proj = nullptr;        // [chunk, B*o_pad]
  float* x0_f32 = nullptr;      // [chunk, D_pad]
  bf16* x0_bf16 = nullptr;
  float *xa_f32 = nullptr, *xb_f32 = nullptr;
  bf16 *xa_bf16 = nullptr, *xb_bf16 = nullptr;
  bf16* lowrank = nullptr;      // [chunk, r_pad]
  bf16 *mlp_a = nullptr, *mlp_b = nullptr;  // [chunk, max MLP width]
  float* last_f32 = nullptr;    // [chunk, last_pad]
  float* logits = nullptr;      // [m_cap, T]
  float* probs = nullptr;       // [m_cap, T]
  float* value = nullptr;       // [m_cap] Σ_t w_t p_t
  float* utility = nullptr;     // [m_cap]
};

// Bytes of device memory a ForwardWorkspace needs for m_cap rows; carve() lays it out in `base`.
size_t forward_workspace_bytes(const DeviceModel& m, int m_cap, int chunk);
ForwardWorkspace forward_workspace_carve(const DeviceModel& m, int m_cap, int chunk, void* base);

void enqueue_request_side(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle,
                          ForwardWorkspace& ws, bool need_query, bool need_rank, cudaStream_t st);

// One chunk: rows [rows_cap] ad-table rows, *m_dev of them present (rows_cap <= ws.chunk sizes the
// grids); outputs go to rows [out_offset, out_offset + *m_dev) of ws.logits/probs/value/utility.
// marks: null or 4 events recorded after gather, masknet, dcn, mlp+heads (stage timings).
void enqueue_candidates(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle, const int* rows,
                        const int* m_dev, int rows_cap, int out_offset, ForwardWorkspace& ws, cudaStream_t st,
                        const cudaEvent_t* marks);

// CPU reference of the fused heads + calibration + utility step (harness): one row.
void heads_utility_reference(const float* h, int last, const float* heads_w, const float* heads_b, int T,
                             const float* scale, const float* bias, const float* w, float bid, float* probs,
                             float* value, float* utility);

// Row LayerNorm (+ReLU) from fp32 to fp32 and bf16, the second pass of the MaskNet block norm
// when a GEMM tile does not hold the whole row. x [m, groups·ldg] → y at column g·n_out + j.
void layer_norm_relu(const float* x, int64_t ldx, int group_stride, int n, int groups, const float* gamma,
                     const float* beta, float* y_f32, bf16* y_bf16, int64_t ldy, int y_cols_pad, const int* m_dev,
                     int m_cap, cudaStream_t st);
void layer_norm_relu_reference(const float* x, int n, const float* gamma, const float* beta, float* y);

}  // namespace adrank::cuda
