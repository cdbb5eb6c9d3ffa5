#include "kernels/cpu/attention.h"

#include <cmath>
#include <cstring>

#include "kernels/cpu/vector_ops.h"

namespace adrank::cpu {

void self_attention(const SelfAttentionParams& p) {
  const int d = p.d, dh = d / p.heads, ld = 3 * d;
  const float scale = 1.0f / std::sqrt(float(dh));
  std::memset(p.out, 0, sizeof(float) * size_t(p.n) * d);
  for (int hd = 0; hd < p.heads; hd++) {
    for (int i = 0; i < p.n; i++) {
      const float* q = p.qkv + int64_t(i) * ld + hd * dh;
      for (int j = 0; j < p.n; j++) p.scratch[j] = dot(q, p.qkv + int64_t(j) * ld + d + hd * dh, dh) * scale;
      softmax_inplace(p.scratch, p.n);
      float* o = p.out + int64_t(i) * d + hd * dh;
      for (int j = 0; j < p.n; j++) axpy(p.scratch[j], p.qkv + int64_t(j) * ld + 2 * d + hd * dh, o, dh);
    }
  }
}

}  // namespace adrank::cpu
