// TEMPORARY straightforward implementation so the engine can be built against the API; the
// blocked AVX-512/AVX2 kernel replaces it.
#include "kernels/cpu/gemm.h"

#include <algorithm>

#include "kernels/cpu/parallel.h"

namespace adrank::cpu {

PackedMatrix::PackedMatrix(const float* w, int n, int k) : n_(n), k_(k), data_(w, w + int64_t(n) * k) {}

void gemm(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
          const Epilogue& ep, ThreadPool* pool) {
  auto rows = [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++)
      for (int j = 0; j < w.n(); j++) {
        float acc = 0;
        const float* wr = w.data() + int64_t(j) * w.k();
        for (int p = 0; p < w.k(); p++) acc += a[i * lda + p] * wr[p];
        if (ep.bias) acc += ep.bias[j];
        if (ep.relu) acc = std::max(acc, 0.f);
        if (ep.mul) acc *= ep.mul[i * ep.ld_mul + j];
        if (ep.add) acc += ep.add[i * ep.ld_add + j];
        c[i * ldc + j] = acc;
      }
  };
  if (pool) pool->parallel_for(m, rows, 8); else rows(0, m);
}

const char* gemm_isa() { return "scalar"; }

}  // namespace adrank::cpu
