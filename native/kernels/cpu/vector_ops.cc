#include "kernels/cpu/vector_ops.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/simd.h"

namespace adrank::cpu {

namespace {
constexpr int kLanes = 16;
}

ADRANK_MULTIVERSION
float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) acc[l] += a[i + l] * b[i + l];
  float s = 0;
  for (; i < n; i++) s += a[i] * b[i];
  for (int l = 0; l < kLanes; l++) s += acc[l];
  return s;
}

void l2_normalize(float* x, int64_t n) {
  const float norm = std::sqrt(dot(x, x, n));
  const float inv = 1.0f / std::max(norm, 1e-12f);
  for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void softmax_inplace(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; i++) mx = std::max(mx, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; i++) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

ADRANK_MULTIVERSION
void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

}  // namespace adrank::cpu
