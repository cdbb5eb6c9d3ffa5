// Attention on the CPU, fp32.
//
// Multi-head self-attention core (torch.nn.MultiheadAttention after in_proj, before out_proj):
//   qkv [n, 3·d] rows = [q ; k ; v] (in_proj output), heads h, dh = d / h
//   out[i, head] = Σ_j softmax_j(q_i,head · k_j,head / √dh) v_j,head          out [n, d]
// No mask: every one of the n tokens is a real engagement.
#pragma once

#include <cstdint>

namespace adrank::cpu {

struct SelfAttentionParams {
  const float* qkv = nullptr;  // [n, 3d]
  float* out = nullptr;        // [n, d]
  int n = 0, d = 0, heads = 1;
  float* scratch = nullptr;    // [n] floats
};

void self_attention(const SelfAttentionParams& p);

}  // namespace adrank::cpu
