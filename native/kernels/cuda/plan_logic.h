// Host-side choices of the CUDA path that need no GPU to check: the GEMM tile, the graph's copy
// size, whether a selection's fallback round can act. Plain C++ (no CUDA headers), so the CPU tests
// compile it with the host compiler (native/kernels/cuda/harness/plan_check.cc, test/23).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace adrank::cuda {

// GEMM tile choice (docs/cuda.md "Settings", ADRANK_CUDA_TILE). kFill, the default: the 128×128
// tile only when its grid alone fills every SM with one wave, else 64×64. kShape: the 128×128 tile
// once its grid covers at least half of the SMs, so a 1,024-row bucket's 1536-wide layers (96 big
// tiles on 132 SMs) read A 12 times and the weights 8 times instead of 24 and 16. kBig / kSmall
// force one tile (the harness times each).
enum class TilePolicy : int { kFill = 0, kShape = 1, kBig = 2, kSmall = 3 };

inline TilePolicy parse_tile_policy(const char* name) {
  if (!name) return TilePolicy::kFill;
  if (!std::strcmp(name, "shape")) return TilePolicy::kShape;
  if (!std::strcmp(name, "big")) return TilePolicy::kBig;
  if (!std::strcmp(name, "small")) return TilePolicy::kSmall;
  return TilePolicy::kFill;
}
inline const char* tile_policy_name(TilePolicy p) {
  return p == TilePolicy::kShape ? "shape" : p == TilePolicy::kBig ? "big" : p == TilePolicy::kSmall ? "small" : "fill";
}

// Whether `p` takes the big tile (big_m × big_n) for an m × n × batch product on `sms` SMs.
inline bool tile_is_big(TilePolicy p, int64_t m, int64_t n, int64_t batch, int sms, int big_m = 128, int big_n = 128) {
  const int64_t blocks = ((m + big_m - 1) / big_m) * ((n + big_n - 1) / big_n) * batch;
  switch (p) {
    case TilePolicy::kBig: return true;
    case TilePolicy::kSmall: return false;
    case TilePolicy::kShape: return 2 * blocks >= sms;
    case TilePolicy::kFill:
    default: return blocks >= sms;
  }
}

// ADRANK_CUDA_WGMMA's choice per product (the wgmma kernel's tile is 128 × 128): more than 64 rows
// (one warpgroup's M) and a grid that covers at least half of the SMs, as kShape asks of the big
// mma.sync tile. A narrow layer (a 1,024-row bucket's 256-wide MLP: 16 tiles) keeps mma.sync's
// 64 × 64 tiles, which spread it over more SMs. `force` (the harness) drops the grid condition.
inline bool wgmma_takes(int64_t m, int64_t n, int64_t batch, int sms, bool force = false) {
  return m > 64 && (force || tile_is_big(TilePolicy::kShape, m, n, batch, sms, 128, 128));
}

inline int64_t next_pow2_i64(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// ADRANK_CUDA_GRAPH_IO: the bytes the graph's own H2D copy moves for a packed request of `bytes`:
// the next power of two from 4 KiB, at most the slot's staging size `cap` (a power of two >= every
// packed request). Requests of similar size share one graph; the copy never reads past the staging.
inline int64_t io_bucket(int64_t bytes, int64_t cap) { return std::min(next_pow2_i64(std::max<int64_t>(bytes, 4096)), cap); }

// Whether the fallback round of a global (non-local) selection can act. Round 0 keeps L = min(4(K+1),
// E) keys with a cap and min(K+1, E) without; the fallback runs when round 0's qualifiers are fewer
// than K (+1 with a runner-up) and L < E. Without a cap every kept key qualifies, so that needs
// L < K+1 <= L: never. The host knows `capped` from the request, so an uncapped graph can leave
// the round's kernels out (ADRANK_CUDA_SKIP_IDLE_ROUND).
inline bool fallback_round_can_act(bool capped, bool local) { return capped && !local; }

}  // namespace adrank::cuda
