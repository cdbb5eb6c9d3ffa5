// Row-vector helpers shared by the CPU engine: dot products, L2 normalisation, softmax.
//   dot(a, b, n)            Σ a_i b_i
//   l2_normalize(x, n)      x ← x / max(‖x‖₂, 1e-12)              (docs/design.md §4 L2n)
//   softmax_inplace(x, n)   x ← exp(x − max x) / Σ exp(x − max x)
#pragma once

#include <cstdint>

namespace adrank::cpu {

float dot(const float* a, const float* b, int64_t n);
void l2_normalize(float* x, int64_t n);
void softmax_inplace(float* x, int64_t n);
// y[i] += alpha * x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace adrank::cpu
