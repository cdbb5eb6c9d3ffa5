// Linear layers on the CPU: C = epilogue(A · Wᵀ), fp32, cache-blocked, AVX-512 / AVX2 chosen at
// run time, work split over a ThreadPool.
//
//   A  [m, k] row-major (lda >= k)          activations, one row per candidate
//   W  [n, k] row-major                      weights as nn.Linear stores them (out × in),
//                                            packed once at load into PackedMatrix
//   C  [m, n] row-major (ldc >= n)
//
// Epilogue, per element (i, j), applied to the finished accumulator:
//   c = act(acc + bias[j]) * mul[i, j] + add[i, j]
// with each term optional. This covers the model's layers:
//   Linear + ReLU                       bias, relu
//   MaskNet mask product (x̂ ⊙ m)        bias, mul = x̂
//   DCNv2 cross layer x0 ⊙ (W x_l + b) + x_l    bias, mul = x0, add = x_l
// C must not alias A, mul or add.
#pragma once

#include <cstdint>
#include <vector>

namespace adrank::cpu {

class ThreadPool;

class PackedMatrix {
 public:
  PackedMatrix() = default;
  // w: [n, k] row-major, copied and re-laid out for the micro-kernel.
  PackedMatrix(const float* w, int n, int k);
  int n() const { return n_; }
  int k() const { return k_; }
  const float* data() const { return data_.data(); }

 private:
  int n_ = 0, k_ = 0;
  std::vector<float> data_;
};

struct Epilogue {
  const float* bias = nullptr;  // [n]
  bool relu = false;
  const float* mul = nullptr;   // [m, n], leading dimension ld_mul
  int64_t ld_mul = 0;
  const float* add = nullptr;   // [m, n], leading dimension ld_add
  int64_t ld_add = 0;
};

// pool may be null (runs on the calling thread).
void gemm(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
          const Epilogue& ep, ThreadPool* pool);

// Which vector code gemm runs on this CPU: "avx512", "avx2" or "scalar".
const char* gemm_isa();

}  // namespace adrank::cpu
