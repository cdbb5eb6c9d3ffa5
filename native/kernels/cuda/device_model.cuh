// Device-resident model and per-request descriptor shared by the CUDA kernels and the backend.
//
// Padding convention: every bf16 GEMM operand has its K padded to a multiple of 32 and its N to a
// multiple of 32 with zero weights and zero biases, so padded columns of every activation are 0
// (bias 0, ReLU(0) = 0, x̂·0 = 0, x0·0 + 0 = 0) and the next GEMM can read them as zero K columns.
// What has run on a GPU and what is only compiled: docs/cuda.md "What is verified".
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace adrank::cuda {

using bf16 = __nv_bfloat16;

constexpr int kMaxSparseFields = 16;
constexpr int kMaxMaskBlocks = 8;
constexpr int kMaxDcnLayers = 8;
constexpr int kMaxMlpLayers = 8;
constexpr int kMaxSeqLayers = 4;
constexpr int kMaxTasks = 16;
constexpr int kMaxTowerLayers = 6;

// Request descriptor: the host parses the feature bundle header (it validated the buffer anyway)
// and writes this struct into the pinned staging area just ahead of the bundle, so descriptor and
// bundle reach the device in ONE copy and every kernel reads its request's offsets from device
// memory (which keeps the captured CUDA graphs request-independent). Offsets are bytes from the
// bundle start.
struct RequestDesc {
  uint32_t surface, k, cap, mode, partitions, flags, retrieve_count, seq_len;
  uint32_t num_candidates, num_excluded_advertisers, num_excluded_ads, num_user_sparse_ids;
  float reserve;
  uint32_t pad0;
  uint64_t key;  // pacing key (FNV-1a 64 of the request id)
  uint64_t off_user_dense, off_user_embedding, off_task_weights, off_targeting, off_sparse_len, off_sparse_ids;
  uint64_t off_seq_items, off_seq_actions, off_candidates, off_excluded_advertisers, off_excluded_ads;
  uint64_t pad1[5];
};
static_assert(sizeof(RequestDesc) == 192, "RequestDesc must stay a multiple of 64 bytes");

struct DenseLinearF32 {  // fp32 y = W x + b, W [out, in]
  const float* w = nullptr;
  const float* b = nullptr;
  int out = 0, in = 0;
  // Wᵀ [in, out] (ADRANK_CUDA_LINEAR_T), else null: rows_linear_kernel's threads (one per output)
  // then read consecutive addresses, with the same sum in the same order
  const float* wt = nullptr;
};

struct SeqLayer {  // torch.nn.TransformerEncoderLayer, norm_first, relu, fp32 on the device
  const float *norm1_w, *norm1_b, *norm2_w, *norm2_b;
  DenseLinearF32 in_proj, out_proj, linear1, linear2;
};

// Everything the kernels read, as device pointers (owned by the backend).
struct DeviceModel {
  // dims
  int n_ud = 0, n_ad = 0, d_ue = 0, d_ae = 0, d_surf = 0, surfaces = 0, tasks = 0, targeting_dims = 0;
  float clip = 5.f;
  int n_user_sparse = 0, n_ad_sparse = 0;
  int user_sparse_dim[kMaxSparseFields] = {}, user_sparse_card[kMaxSparseFields] = {};
  int du = 0;       // dim(u)
  int da = 0;       // dim(a_c)
  int d = 0;        // dim(x) = du + da + d_s
  int64_t num_ads = 0;
  int num_advertisers = 0;

  // request side (fp32)
  const float *user_dense_mean = nullptr, *user_dense_std = nullptr;
  const float* user_sparse_table[kMaxSparseFields] = {};
  const float* surface_table = nullptr;  // [S, d_surf]
  int seq_max_len = 0, seq_item_buckets = 0, seq_actions = 0, d_s = 0, seq_heads = 1, seq_ffn = 0, seq_layers = 0;
  const float *seq_item = nullptr, *seq_action = nullptr, *seq_position = nullptr;
  SeqLayer seq[kMaxSeqLayers] = {};
  const float *seq_norm_w = nullptr, *seq_norm_b = nullptr;
  const float* ad_query = nullptr;  // target-attention query q_c = W_ta L2n(emb_c) + b_ta, [N, d_s] (static, from load)
  DenseLinearF32 tower[kMaxTowerLayers];
  int tower_layers = 0;
  int d_r = 0, d_r_pad = 0;     // retrieval dim, padded to 8

  // ad side
  const bf16* ad_features = nullptr;  // a_c precomputed at load, [N, da_pad] bf16 (gather source)
  int da_pad = 0;                      // multiple of 8
  const int64_t* ad_id = nullptr;
  const int* ad_advertiser = nullptr;  // dense advertiser index [N]
  const int64_t* advertiser_id = nullptr;  // [num_advertisers]
  const int* ad_id_rank = nullptr;     // position of the row in ascending ad-id order (tie break)
  const float* ad_bid = nullptr;
  const uint64_t* ad_targeting = nullptr;  // [N, targeting_dims]
  const bf16* ad_retrieval = nullptr;   // [N, d_r_pad]
  // the fp8 retrieval's copy (ADRANK_CUDA_RETRIEVE_FP8, fp8_logic.h), else null: e4m3 rows of d_r8
  // bytes (d_r padded to 16, zeros), the per-ad scale s and error term B
  const uint8_t* ad_retrieval_fp8 = nullptr;  // [N, d_r8]
  const float* ad_fp8_scale = nullptr;        // [N]
  const float* ad_fp8_bound = nullptr;        // [N]
  int d_r8 = 0;
  // live state, one word per ad packed like engine/ad_state.h:
  // pacing rate f32 bits | active << 32 | in_budget << 33 (written by the backend on updates)
  const uint64_t* ad_state = nullptr;
  // id → row tables: device copies of engine/id_map.h tables, looked up with its id_map_probe
  const int64_t* ad_hash_keys = nullptr;
  const int* ad_hash_rows = nullptr;
  uint64_t ad_hash_mask = 0;
  const int64_t* adv_hash_keys = nullptr;
  const int* adv_hash_vals = nullptr;
  uint64_t adv_hash_mask = 0;

  // MaskNet (bf16 weights, padded)
  int mask_blocks = 0, h = 0, h_pad = 0, o = 0, o_pad = 0, d_pad = 0;
  int k1 = 0;                            // first-layer K: da_pad + ta width, multiple of 32
  const float* input_norm_w = nullptr;   // [d]
  const float* input_norm_b = nullptr;
  const float* mask1_user_w = nullptr;   // [B*h_pad, du] fp32: user half of mask.0, broadcast
  const float* mask1_b = nullptr;        // [B*h_pad]
  const bf16* mask1_w = nullptr;         // [B*h_pad, k1]: ad + target-attention half of mask.0
  const bf16* mask2_w = nullptr;         // [B][d_pad, h_pad]
  const float* mask2_b = nullptr;        // [B][d_pad]
  const bf16* proj_w = nullptr;          // [B][o_pad, d_pad]
  const float* block_norm_w = nullptr;   // [B][o]
  const float* block_norm_b = nullptr;

  // DCN
  int dcn_layers = 0, dcn_rank = 0, dcn_rank_pad = 0, D = 0, D_pad = 0;
  const bf16* dcn_w[kMaxDcnLayers] = {};  // full [D_pad, D_pad]
  const bf16* dcn_v[kMaxDcnLayers] = {};  // low rank V [r_pad, D_pad]
  const bf16* dcn_u[kMaxDcnLayers] = {};  // low rank U [D_pad, r_pad]
  const float* dcn_b[kMaxDcnLayers] = {}; // [D_pad]

  // MLP + heads
  int mlp_layers = 0;
  int mlp_out[kMaxMlpLayers] = {}, mlp_out_pad[kMaxMlpLayers] = {};
  const bf16* mlp_w[kMaxMlpLayers] = {};
  const float* mlp_b[kMaxMlpLayers] = {};
  const float* heads_w = nullptr;  // [T, last] fp32
  const float* heads_b = nullptr;
  const float* calib_scale = nullptr;  // [S, T]
  const float* calib_bias = nullptr;
  const float* task_weights = nullptr; // [S, T]
};

// Bucket of an id: mathematical id mod cardinality (non-negative for negative ids).
__device__ __forceinline__ int64_t bucket_of(int64_t id, int64_t card) {
  const int64_t r = id % card;
  return r < 0 ? r + card : r;
}

template <class T>
__device__ __forceinline__ const T* section(const unsigned char* bundle, uint64_t off) {
  return reinterpret_cast<const T*>(bundle + off);
}

}  // namespace adrank::cuda
