// Row LayerNorm, fp32: y = (x − mean) / sqrt(var + eps) · gamma + beta, eps 1e-5, biased variance
// (torch.nn.LayerNorm), optionally followed by ReLU (MaskNet block output o_i).
//   x [m, n] leading dimension ldx; y [m, n] leading dimension ldy; y may equal x (in place).
#pragma once

#include <cstdint>

namespace adrank::cpu {

struct LayerNormParams {
  const float* x = nullptr;
  int64_t ldx = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  int m = 0, n = 0;
  const float* gamma = nullptr;  // [n]
  const float* beta = nullptr;   // [n]
  bool relu = false;
};

constexpr float kLayerNormEps = 1e-5f;

void layer_norm(const LayerNormParams& p);

}  // namespace adrank::cpu
