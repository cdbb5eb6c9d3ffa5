#include "kernels/cpu/layer_norm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/simd.h"

namespace adrank::cpu {

namespace {

constexpr int kLanes = 16;

// Two-pass mean / variance of one row (numerically safer than E[x²] − E[x]²).
ADRANK_MULTIVERSION
void row_moments(const float* x, int n, float* mean_out, float* var_out) {
  float acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) acc[l] += x[i + l];
  float s = 0;
  for (; i < n; i++) s += x[i];
  for (int l = 0; l < kLanes; l++) s += acc[l];
  const float mean = s / float(n);
  float acc2[kLanes] = {};
  i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) {
      const float d = x[i + l] - mean;
      acc2[l] += d * d;
    }
  float v = 0;
  for (; i < n; i++) v += (x[i] - mean) * (x[i] - mean);
  for (int l = 0; l < kLanes; l++) v += acc2[l];
  *mean_out = mean;
  *var_out = v / float(n);
}

ADRANK_MULTIVERSION
void row_affine(const float* x, float* y, int n, float mean, float rstd, const float* g, const float* b, bool relu) {
  if (relu) {
    for (int i = 0; i < n; i++) y[i] = std::max((x[i] - mean) * rstd * g[i] + b[i], 0.0f);
  } else {
    for (int i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * g[i] + b[i];
  }
}

}  // namespace

void layer_norm(const LayerNormParams& p) {
  for (int r = 0; r < p.m; r++) {
    const float* x = p.x + r * p.ldx;
    float mean, var;
    row_moments(x, p.n, &mean, &var);
    const float rstd = 1.0f / std::sqrt(var + kLayerNormEps);
    row_affine(x, p.y + r * p.ldy, p.n, mean, rstd, p.gamma, p.beta, p.relu);
  }
}

}  // namespace adrank::cpu
