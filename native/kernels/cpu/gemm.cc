// C = epilogue(A · Wᵀ) on the CPU, fp32. GotoBLAS-style blocking around a register-blocked
// micro-kernel; see gemm.h for the operands and the epilogue.
//
// Blocking (one task = one MC-row × NC-column block of C, all of K):
//   for K block of kKc                 (W micro-panel kKc × 32 floats = 32 KiB stays in L1/L2)
//     pack A[rows, K block] into micro-panels [kc][mr]   (contiguous broadcasts; ≤ 240 KiB, L2)
//     for column tile of nr (32 AVX-512, 16 AVX2/scalar; 64 / 32 when m <= 4 / 3) in the task
//       for row tile of mr (12 AVX-512, 6 AVX2, 4 scalar) in the task's rows
//         micro-kernel: mr × nr accumulators in registers, one FMA chain per element over p,
//         C loaded back between K blocks; on the last K block the epilogue is applied in
//         registers and the tile stored (masked where n is not a multiple of 16).
// Tasks are spread over the ThreadPool. Every element of C is one fixed-order FMA chain over
// p = 0..k-1 (the store/reload between K blocks is exact), so the result does not depend on the
// task grid or the thread count; it differs between ISA paths only by rounding (the scalar path
// does not fuse multiply and add).
//
// Stream order (m <= kStreamRows, gemm.h): all of A is packed first, then per column tile all K
// blocks back to back, W prefetched into L2 ahead of the reads (gemm.h kStreamPrefetch); with a
// pool one column range per thread.
//
// bf16 weights widened in registers (PackedMatrix::pack_bf16; gemm_bf16_kernel() "avx2", or
// "avx512" on CPUs with AVX-512 but without AVX512-BF16): a task with one row tile runs the path's
// bf16 kernel (Avx2Bf16Kernel, Avx512Bf16Kernel), which widens the pairs in registers; a task with
// more widens each W tile once per K block into 16–32 KiB that stay in L1 (stream order: the first
// row tile's bf16 kernel stores what it widened; blocked order: widen_bf16 first) and runs the
// fp32 kernels on it for the other row tiles. Either way the result is bitwise the fp32 path's on
// the bf16-rounded W. Row tiles are balanced over a task's rows (balanced_rows, gemm.h).
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/cpu/parallel.h"

namespace adrank::cpu {

namespace {

constexpr int kPanel = PackedMatrix::kPanel;
constexpr int kKc = 256;  // K block: W micro-panel 256 × 32 × 4 B = 32 KiB
constexpr int kMc = 240;  // rows per task (packed A block 240 × 256 × 4 B = 240 KiB, in L2)
constexpr int kNc = 1536;  // columns per task (a DCN layer's all: A packed once per K block; 3–6% over 256)
// Below this many multiply-adds a job is not worth waking the pool for (~20 µs on one core).
constexpr int64_t kParallelMacs = int64_t(1) << 20;

// One micro-kernel call: C[0:MR, 0:ncols] (+)= Apanel · Wpanelᵀ over kc, with the epilogue
// on the last K block. All pointers are already offset to the tile's origin.
struct Tile {
  int kc;
  const float* a;   // packed A micro-panel, [kc][MR]
  const float* w;   // first W panel at this K block, [kc][16]; panel v at w + v * wstride
  int64_t wstride;  // floats between consecutive W panels (k * 16)
  const uint32_t* wb;  // bf16 kernels: first W panel at this K block, [kc/2][16] bf16 pairs
  int64_t wbstride;    // pairs between consecutive bf16 W panels (ceil(k/2) * 16)
  int prefetch;     // stream order: prefetch W this many bytes ahead (0: none)
  float* wout;      // bf16 kernels: also store the widened W here, fp32 panels [kc][16] (null: don't)
  float* c;
  int64_t ldc;
  int ncols;        // valid columns in the tile, 1 .. NP * 16 (the tile's W panels are all real)
  bool first;       // first K block: start from 0 instead of loading C
  bool last;        // last K block: apply the epilogue
  const float* bias;
  bool relu;
  const float* mul;
  int64_t ld_mul;
  const float* add;
  int64_t ld_add;
};

using Ukernel = void (*)(const Tile&);

// The micro-kernels of one ISA: uk[mr - 1][np - 1] handles an mr × (np · 16) tile. Full tiles
// are mr × (np · 16); a call with m <= small_m uses tiles of small_np panels instead, so a
// single row (the user side) still has enough independent FMA chains to hide their latency.
struct Isa {
  const char* name;
  int mr;        // rows per full tile
  int np;        // W panels per full tile
  int small_m;   // m up to which wide tiles are used (0: never)
  int small_np;  // W panels per wide tile
  std::array<std::array<Ukernel, 4>, 12> uk;
  std::array<std::array<Ukernel, 4>, 12> ukb;  // the same tiles reading bf16 W (null: no bf16 kernel)
};

constexpr bool has_kernel(int mr, int np, int mr_max, int np_max, int small_m, int small_np) {
  return mr <= mr_max && (np <= np_max || (mr <= small_m && np <= small_np));
}

template <template <int, int> class K, int MR, int NP, bool kHas>
constexpr Ukernel kernel_or_null() {
  if constexpr (kHas) return &K<MR, NP>::run;
  else return nullptr;
}

template <template <int, int> class K, int kMr, int kNp, int kSmallM, int kSmallNp, int MR, size_t... NP>
constexpr std::array<Ukernel, 4> table_row(std::index_sequence<NP...>) {
  return {kernel_or_null<K, MR, int(NP) + 1, has_kernel(MR, int(NP) + 1, kMr, kNp, kSmallM, kSmallNp)>()...};
}

// The table for a micro-kernel template K<MR, NP>: MR in 1..kMr with NP in 1..kNp, plus
// NP up to kSmallNp for MR <= kSmallM.
template <template <int, int> class K, int kMr, int kNp, int kSmallM, int kSmallNp, size_t... R>
constexpr std::array<std::array<Ukernel, 4>, 12> make_table(std::index_sequence<R...>) {
  return {table_row<K, kMr, kNp, kSmallM, kSmallNp, int(R) + 1>(std::make_index_sequence<4>())...};
}

// KB: the bf16-weight micro-kernel of the same tiles, or K with kBf16 = false (none).
template <template <int, int> class K, template <int, int> class KB, bool kBf16, int kMr, int kNp, int kSmallM, int kSmallNp>
constexpr Isa make_isa(const char* name) {
  return {name, kMr, kNp, kSmallM, kSmallNp, make_table<K, kMr, kNp, kSmallM, kSmallNp>(std::make_index_sequence<12>()),
          make_table<KB, kBf16 ? kMr : 0, kNp, kSmallM, kSmallNp>(std::make_index_sequence<12>())};
}

// ---- portable scalar path ----------------------------------------------------------------

template <int MR, int NP>
struct ScalarKernel {
  static void run(const Tile& t) {
    static_assert(NP == 1, "the scalar path uses one panel per tile");
    float acc[MR][kPanel];
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < kPanel; j++) acc[r][j] = (t.first || j >= t.ncols) ? 0.f : t.c[r * t.ldc + j];
    for (int p = 0; p < t.kc; p++) {
      const float* w = t.w + p * kPanel;
      for (int r = 0; r < MR; r++) {
        float a = t.a[p * MR + r];
        for (int j = 0; j < kPanel; j++) acc[r][j] += a * w[j];
      }
    }
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < t.ncols; j++) {
        float v = acc[r][j];
        if (t.last) {
          if (t.bias) v += t.bias[j];
          if (t.relu) v = std::max(v, 0.f);
          if (t.mul) v *= t.mul[r * t.ld_mul + j];
          if (t.add) v += t.add[r * t.ld_add + j];
        }
        t.c[r * t.ldc + j] = v;
      }
  }
};

const Isa kScalar = make_isa<ScalarKernel, ScalarKernel, false, 4, 1, 0, 1>("scalar");

#if defined(__x86_64__)

// ---- AVX2 + FMA: 6 × 16 tile (12 ymm accumulators); m <= 3: up to 3 × 32 -----------------------

template <int MR, int NP>
struct Avx2Kernel {
  static constexpr int V = 2 * NP;  // ymm vectors per row
  __attribute__((target("avx2,fma"))) static __m256 load(const float* p, bool full, __m256i mask) {
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
  }
  // The column masks (n edge) and the accumulators' start: 0 on the first K block, else C.
  __attribute__((target("avx2,fma"))) static bool start(const Tile& t, __m256 (&acc)[MR][V], __m256i (&mask)[V]) {
    const bool full = t.ncols == NP * kPanel;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int v = 0; v < V; v++) mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(t.ncols - 8 * v), lane);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < V; v++)
        acc[r][v] = t.first ? _mm256_setzero_ps() : load(t.c + r * t.ldc + 8 * v, full, mask[v]);
    return full;
  }
  __attribute__((target("avx2,fma"))) static void run(const Tile& t) {
    __m256i mask[V];
    __m256 acc[MR][V];
    const bool full = start(t, acc, mask);
    const float* a = t.a;
    const float* w = t.w;
    for (int p = 0; p < t.kc; p++, a += MR, w += kPanel) {
      if (t.prefetch)
        for (int v = 0; v < NP; v++) _mm_prefetch(reinterpret_cast<const char*>(w + v * t.wstride) + t.prefetch, _MM_HINT_T1);
      __m256 b[V];
      for (int v = 0; v < V; v++) b[v] = _mm256_load_ps(w + (v / 2) * t.wstride + 8 * (v % 2));
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++) {
        __m256 ar = _mm256_broadcast_ss(a + r);
        for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(ar, b[v], acc[r][v]);
      }
    }
    finish(t, acc, full, mask);
  }
  // The epilogue on the last K block and the (masked) store of C.
  __attribute__((target("avx2,fma"))) static void finish(const Tile& t, __m256 (&acc)[MR][V], bool full, const __m256i (&mask)[V]) {
    if (t.last) {
      __m256 bias[V], zero = _mm256_setzero_ps();
      for (int v = 0; v < V; v++) bias[v] = t.bias ? load(t.bias + 8 * v, full, mask[v]) : zero;
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++)
        for (int v = 0; v < V; v++) {
          __m256 x = _mm256_add_ps(acc[r][v], bias[v]);
          if (t.relu) x = _mm256_max_ps(x, zero);
          if (t.mul) x = _mm256_mul_ps(x, load(t.mul + r * t.ld_mul + 8 * v, full, mask[v]));
          if (t.add) x = _mm256_add_ps(x, load(t.add + r * t.ld_add + 8 * v, full, mask[v]));
          acc[r][v] = x;
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < V; v++) {
        float* c = t.c + r * t.ldc + 8 * v;
        if (full) _mm256_storeu_ps(c, acc[r][v]);
        else _mm256_maskstore_ps(c, mask[v], acc[r][v]);
      }
  }
};

// The same tiles reading W as bf16 pairs (PackedMatrix::pack_bf16): 8 pairs of a panel row (one
// 256-bit load) hold k = 2q and 2q + 1 of 8 columns; shifting each 32-bit lane left by 16 gives
// the 8 fp32 weights of k = 2q, clearing its low half those of k = 2q + 1 (a bf16 is the upper
// half of an fp32). Then the fp32 FMAs in the order of Avx2Kernel, p = 0, 1, 2, ... per element,
// so the result is bitwise Avx2Kernel's on the bf16-rounded W. Half the bytes of W streamed.
template <int MR, int NP>
struct Avx2Bf16Kernel {
  static constexpr int V = 2 * NP;
  static void run(const Tile& t) {
    if (t.wout) loop<true>(t);
    else loop<false>(t);
  }
  // W vector v (8 pairs) of the pair row at w; where its widened halves go in wout, row p.
  __attribute__((target("avx2,fma"))) static __m256i pairs_at(const uint32_t* w, int64_t wbstride, int v) {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(w + (v / 2) * wbstride + 8 * (v % 2)));
  }
  static float* out_at(float* wout, int kc, int v, int p) { return wout + (v / 2) * int64_t(kc) * kPanel + p * kPanel + 8 * (v % 2); }
  // kStore: also store the widened W at t.wout (a template parameter: no branch in the loop). The
  // loops over v are unrolled by pragma: left to GCC 12's -O3 they were not, the accumulators were
  // then also stored to the stack on every pair of k (the 5-row kernel at m = 10: 10 stores per
  // 20 FMAs), and the AVX2 bf16 path ran 1.2–1.3× slower at 1–16 rows (kernel check, Zen 4).
  template <bool kStore>
  __attribute__((target("avx2,fma"))) static void loop(const Tile& t) {
    using K = Avx2Kernel<MR, NP>;
    __m256i mask[V];
    __m256 acc[MR][V];
    const bool full = K::start(t, acc, mask);
    const __m256i high = _mm256_set1_epi32(int(0xFFFF0000u));
    const int kc = t.kc, prefetch = t.prefetch;
    const int64_t wbstride = t.wbstride;
    float* const wout = t.wout;
    const float* a = t.a;
    const uint32_t* w = t.wb;
    int p = 0;
    for (; p + 2 <= kc; p += 2, a += 2 * MR, w += kPanel) {
      if (prefetch)
        for (int v = 0; v < NP; v++) _mm_prefetch(reinterpret_cast<const char*>(w + v * wbstride) + prefetch, _MM_HINT_T1);
      if constexpr (MR * V + 2 * V <= 15) {
        // Every vector of the pair widened first, then each A value broadcast once for all V
        // (2 MR broadcasts per pair instead of 2 MR V: the loads, not the FMAs, were the limit).
        // The accumulators, the widened W and one broadcast fit the 16 ymm registers.
        __m256 even[V], odd[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) {
          const __m256i pairs = pairs_at(w, wbstride, v);
          even[v] = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
          odd[v] = _mm256_castsi256_ps(_mm256_and_si256(pairs, high));
          if constexpr (kStore) {
            _mm256_store_ps(out_at(wout, kc, v, p), even[v]);
            _mm256_store_ps(out_at(wout, kc, v, p) + kPanel, odd[v]);
          }
        }
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
          const __m256 a0 = _mm256_broadcast_ss(a + r);
          for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(a0, even[v], acc[r][v]);
          const __m256 a1 = _mm256_broadcast_ss(a + MR + r);
          for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(a1, odd[v], acc[r][v]);
        }
      } else {
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) {
          const __m256i pairs = pairs_at(w, wbstride, v);
          const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
          const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(pairs, high));
          if constexpr (kStore) {
            _mm256_store_ps(out_at(wout, kc, v, p), even);
            _mm256_store_ps(out_at(wout, kc, v, p) + kPanel, odd);
          }
          // The same A values are broadcast again for every v. An empty asm makes this v's pointer
          // opaque, so GCC does not merge the broadcasts across v (merged, all 2 MR of them stay
          // live beside the accumulators and spill).
          const float* av = a;
          asm volatile("" : "+r"(av));
#pragma GCC unroll 12
          for (int r = 0; r < MR; r++) {
            acc[r][v] = _mm256_fmadd_ps(_mm256_broadcast_ss(av + r), even, acc[r][v]);
            acc[r][v] = _mm256_fmadd_ps(_mm256_broadcast_ss(av + MR + r), odd, acc[r][v]);
          }
        }
      }
    }
    if (p < kc) {  // odd k: the last pair's upper half is padding
#pragma GCC unroll 8
      for (int v = 0; v < V; v++) {
        const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(pairs_at(w, wbstride, v), 16));
        if constexpr (kStore) _mm256_store_ps(out_at(wout, kc, v, p), even);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) acc[r][v] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + r), even, acc[r][v]);
      }
    }
    K::finish(t, acc, full, mask);
  }
};

const Isa kAvx2 = make_isa<Avx2Kernel, Avx2Bf16Kernel, true, 6, 1, 3, 2>("avx2");

// Widens np bf16 panels of one K block (kc k values; pairs at w, panel v at w + v * wbstride) into
// fp32 panels [kc][16] at dst + v * kc * 16: the fp32 kernels then run on them unchanged. Used when a
// task has several row tiles, so each weight is widened once, not once per row tile.
__attribute__((target("avx2,fma"))) void widen_bf16(const uint32_t* w, int64_t wbstride, int np, int kc, float* dst) {
  const __m256i high = _mm256_set1_epi32(int(0xFFFF0000u));
  for (int v = 0; v < np; v++) {
    const uint32_t* src = w + v * wbstride;
    float* out = dst + int64_t(v) * kc * kPanel;
    for (int p = 0; p < kc; p += 2, src += kPanel, out += 2 * kPanel) {
      for (int h = 0; h < 2; h++) {
        const __m256i pairs = _mm256_load_si256(reinterpret_cast<const __m256i*>(src + 8 * h));
        _mm256_store_ps(out + 8 * h, _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16)));
        if (p + 1 < kc) _mm256_store_ps(out + kPanel + 8 * h, _mm256_castsi256_ps(_mm256_and_si256(pairs, high)));
      }
    }
  }
}

// ---- AVX-512: 12 × 32 tile (24 zmm accumulators over two W panels); m <= 4: up to 4 × 64 ------

#define ADRANK_AVX512_TARGET __attribute__((target("avx512f,avx512vl,fma")))

template <int MR, int NP>
struct Avx512Kernel {
  // The column masks (n edge) and the accumulators' start: 0 on the first K block, else C.
  ADRANK_AVX512_TARGET static void start(const Tile& t, __m512 (&acc)[MR][NP], __mmask16 (&mask)[NP]) {
    for (int v = 0; v < NP; v++) {
      int cols = std::min(std::max(t.ncols - kPanel * v, 0), kPanel);
      mask[v] = __mmask16((1u << cols) - 1);
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < NP; v++)
        acc[r][v] = t.first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], t.c + r * t.ldc + kPanel * v);
  }
  ADRANK_AVX512_TARGET static void run(const Tile& t) {
    __mmask16 mask[NP];
    __m512 acc[MR][NP];
    start(t, acc, mask);
    const float* a = t.a;
    const float* w = t.w;
    for (int p = 0; p < t.kc; p++, a += MR, w += kPanel) {
      if (t.prefetch)
        for (int v = 0; v < NP; v++) _mm_prefetch(reinterpret_cast<const char*>(w + v * t.wstride) + t.prefetch, _MM_HINT_T1);
      __m512 b[NP];
      for (int v = 0; v < NP; v++) b[v] = _mm512_load_ps(w + v * t.wstride);
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++) {
        __m512 ar = _mm512_set1_ps(a[r]);
        for (int v = 0; v < NP; v++) acc[r][v] = _mm512_fmadd_ps(ar, b[v], acc[r][v]);
      }
    }
    finish(t, acc, mask);
  }
  // The epilogue on the last K block and the masked store of C.
  ADRANK_AVX512_TARGET static void finish(const Tile& t, __m512 (&acc)[MR][NP], const __mmask16 (&mask)[NP]) {
    if (t.last) {
      __m512 bias[NP], zero = _mm512_setzero_ps();
      for (int v = 0; v < NP; v++) bias[v] = t.bias ? _mm512_maskz_loadu_ps(mask[v], t.bias + kPanel * v) : zero;
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++)
        for (int v = 0; v < NP; v++) {
          __m512 x = _mm512_add_ps(acc[r][v], bias[v]);
          if (t.relu) x = _mm512_maskz_max_ps(__mmask16(0xFFFF), x, zero);  // not _mm512_max_ps: GCC 12 -Wmaybe-uninitialized
          if (t.mul) x = _mm512_mul_ps(x, _mm512_maskz_loadu_ps(mask[v], t.mul + r * t.ld_mul + kPanel * v));
          if (t.add) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], t.add + r * t.ld_add + kPanel * v));
          acc[r][v] = x;
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < NP; v++) _mm512_mask_storeu_ps(t.c + r * t.ldc + kPanel * v, mask[v], acc[r][v]);
  }
};

// The same tiles reading W as bf16 pairs, for CPUs with AVX-512 but without AVX512-BF16 (Intel
// Skylake-SP to Ice Lake; AVX512-BF16 turned off): one 512-bit load holds the 16 pairs of a panel
// row (k = 2q and 2q + 1 of its 16 columns); a shift left by 16 gives the 16 fp32 weights of k = 2q,
// clearing the low halves those of 2q + 1. Then the fp32 FMAs in Avx512Kernel's order, so the
// result is bitwise Avx512Kernel's on the bf16-rounded W, at the fp32 AVX-512 FMA rate with half
// the bytes of W. Every tile of the table fits the 32 zmm registers with the widened W of a pair
// and one broadcast (12 × 2: 24 + 4 + 1; 4 × 4: 16 + 8 + 1), so each A value is broadcast once.
template <int MR, int NP>
struct Avx512Bf16Kernel {
  static_assert(MR * NP + 2 * NP + 1 <= 32, "the accumulators, a pair's widened W and a broadcast fit the registers");
  static void run(const Tile& t) {
    if (t.wout) loop<true>(t);
    else loop<false>(t);
  }
  // kStore: also store the widened W at t.wout, fp32 panels [kc][16] (the other row tiles' input).
  template <bool kStore>
  ADRANK_AVX512_TARGET static void loop(const Tile& t) {
    using K = Avx512Kernel<MR, NP>;
    __mmask16 mask[NP];
    __m512 acc[MR][NP];
    K::start(t, acc, mask);
    const __m512i high = _mm512_set1_epi32(int(0xFFFF0000u));
    const int kc = t.kc, prefetch = t.prefetch;
    const int64_t wbstride = t.wbstride;
    float* const wout = t.wout;
    const float* a = t.a;
    const uint32_t* w = t.wb;
    int p = 0;
    for (; p + 2 <= kc; p += 2, a += 2 * MR, w += kPanel) {
      if (prefetch)
        for (int v = 0; v < NP; v++) _mm_prefetch(reinterpret_cast<const char*>(w + v * wbstride) + prefetch, _MM_HINT_T1);
      __m512 even[NP], odd[NP];
#pragma GCC unroll 4
      for (int v = 0; v < NP; v++) {
        const __m512i pairs = _mm512_load_si512(w + v * wbstride);
        // maskz with all lanes, not _mm512_slli_epi32: GCC 12 -Wmaybe-uninitialized (as in finish)
        even[v] = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(__mmask16(0xFFFF), pairs, 16));
        odd[v] = _mm512_castsi512_ps(_mm512_and_si512(pairs, high));
        if constexpr (kStore) {
          float* o = wout + v * int64_t(kc) * kPanel + p * kPanel;
          _mm512_store_ps(o, even[v]);
          _mm512_store_ps(o + kPanel, odd[v]);
        }
      }
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++) {
        const __m512 a0 = _mm512_set1_ps(a[r]);
#pragma GCC unroll 4
        for (int v = 0; v < NP; v++) acc[r][v] = _mm512_fmadd_ps(a0, even[v], acc[r][v]);
        const __m512 a1 = _mm512_set1_ps(a[MR + r]);
#pragma GCC unroll 4
        for (int v = 0; v < NP; v++) acc[r][v] = _mm512_fmadd_ps(a1, odd[v], acc[r][v]);
      }
    }
    if (p < kc) {  // odd k: the last pair's upper half is padding
#pragma GCC unroll 4
      for (int v = 0; v < NP; v++) {
        const __m512 even = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(__mmask16(0xFFFF), _mm512_load_si512(w + v * wbstride), 16));
        if constexpr (kStore) _mm512_store_ps(wout + v * int64_t(kc) * kPanel + p * kPanel, even);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) acc[r][v] = _mm512_fmadd_ps(_mm512_set1_ps(a[r]), even, acc[r][v]);
      }
    }
    K::finish(t, acc, mask);
  }
};

const Isa kAvx512 = make_isa<Avx512Kernel, Avx512Bf16Kernel, true, 12, 2, 4, 4>("avx512");

#endif  // __x86_64__

// ---- driver ---------------------------------------------------------------------------------

// Packed A blocks, and widened bf16 W tiles, one each per thread (reused across calls).
thread_local std::vector<float, CacheAlignedAllocator<float>> tls_apack;
thread_local std::vector<float, CacheAlignedAllocator<float>> tls_wide;


// bf16w: read W's bf16 pairs with isa.ukb (the caller checked both exist).
void gemm_with(const Isa& isa, bool bf16w, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c,
               int64_t ldc, const Epilogue& ep, ThreadPool* pool) {
  const int n = w.n(), k = w.k();
  if (m <= 0 || n <= 0) return;
  const int mr = isa.mr;
  const int nr = (m <= isa.small_m ? isa.small_np : isa.np) * kPanel;
  const auto& uk = bf16w ? isa.ukb : isa.uk;
  const int64_t k2 = (int64_t(k) + 1) / 2;
  const uint32_t* wb = bf16w ? reinterpret_cast<const uint32_t*>(w.bf16_data()) : nullptr;

  const TaskGrid grid(m, n, k, mr, nr, kMc, kNc, kKc, pool ? pool->size() : 1, kParallelMacs);
  const int64_t mc = grid.mc, cb = grid.cb, ncu = grid.ncu, kblocks = grid.kblocks;
  // Blocked order: one packed A block (mc × kKc) at a time. Stream order: all of A packed first,
  // block kb at kb · mc · kKc.
  const size_t abuf = size_t(mc) * kKc * size_t(grid.stream ? kblocks : 1);

  auto run_tasks = [&](int64_t t0, int64_t t1) {
    auto& buf = tls_apack;
    if (buf.size() < abuf) buf.resize(abuf);
    auto& wide = tls_wide;
    if (bf16w && wide.size() < size_t(nr) * kKc) wide.resize(size_t(nr) * kKc);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t i0 = (task / cb) * mc, i1 = std::min<int64_t>(m, i0 + mc);
      const int64_t j0 = (task % cb) * ncu * nr, j1 = std::min<int64_t>(n, j0 + ncu * nr);
      const int tr = balanced_rows(i1 - i0, mr);
      // Pack A[i0:i1, K block kb] as micro-panels [kc][rows] (rows = tr, or fewer at the end).
      auto pack = [&](int64_t kb, float* block) {
        const int64_t p0 = kb * kKc;
        const int kc = int(std::min<int64_t>(kKc, k - p0));
        for (int64_t ir = i0; ir < i1; ir += tr) {
          const int rows = int(std::min<int64_t>(tr, i1 - ir));
          float* dst = block + (ir - i0) * kc;
          for (int r = 0; r < rows; r++) {
            const float* src = a + (ir + r) * lda + p0;
            for (int p = 0; p < kc; p++) dst[p * rows + r] = src[p];
          }
        }
      };
      // The row tiles of columns [j, j + nr) over K block kb, A block packed at `block`.
      auto tiles = [&](int64_t kb, int64_t j, const float* block) {
        const int64_t p0 = kb * kKc;
        Tile t{};
        t.kc = int(std::min<int64_t>(kKc, k - p0));
        t.wstride = int64_t(k) * kPanel;
        t.wbstride = k2 * kPanel;
        t.ldc = ldc;
        t.first = kb == 0;
        t.last = kb == kblocks - 1;
        t.relu = ep.relu;
        t.ld_mul = ep.ld_mul;
        t.ld_add = ep.ld_add;
        t.ncols = int(std::min<int64_t>(nr, j1 - j));
        const int np = int(ceil_div(t.ncols, kPanel));
        t.w = w.data() + ((j / kPanel) * int64_t(k) + p0) * kPanel;
        if (wb) t.wb = wb + ((j / kPanel) * k2 + p0 / 2) * kPanel;
        t.bias = ep.bias ? ep.bias + j : nullptr;
        // bf16 W and more than one row tile: widen the tile's W once and run the fp32 kernels on it.
        // In stream order (W from memory) the first row tile widens in registers, its FMAs
        // overlapping the reads, and stores the widened W for the others; else widen_bf16 first.
        const bool widen = bf16w && i1 - i0 > tr;
        bool first_widens = false;
        if (widen) {
          if (grid.stream) {
            first_widens = true;
          } else {
#if defined(__x86_64__)
            widen_bf16(t.wb, t.wbstride, np, t.kc, wide.data());
#endif
          }
        }
        for (int64_t ir = i0; ir < i1; ir += tr) {
          const int rows = int(std::min<int64_t>(tr, i1 - ir));
          t.prefetch = stream_prefetch_bytes(grid.stream, (ir - i0) / tr);
          t.a = block + (ir - i0) * t.kc;
          t.c = c + ir * ldc + j;
          t.mul = ep.mul ? ep.mul + ir * ep.ld_mul + j : nullptr;
          t.add = ep.add ? ep.add + ir * ep.ld_add + j : nullptr;
          if (first_widens && ir == i0) {
            t.wout = wide.data();
            uk[rows - 1][np - 1](t);
            t.wout = nullptr;
            continue;
          }
          if (widen) {
            t.w = wide.data();
            t.wstride = int64_t(t.kc) * kPanel;
          }
          const auto& kern = widen ? isa.uk : uk;
          kern[rows - 1][np - 1](t);
        }
      };
      if (grid.stream) {
        for (int64_t kb = 0; kb < kblocks; kb++) pack(kb, buf.data() + kb * mc * kKc);
        for (int64_t j = j0; j < j1; j += nr)
          for (int64_t kb = 0; kb < kblocks; kb++) tiles(kb, j, buf.data() + kb * mc * kKc);
      } else {
        for (int64_t kb = 0; kb < kblocks; kb++) {
          pack(kb, buf.data());
          for (int64_t j = j0; j < j1; j += nr) tiles(kb, j, buf.data());
        }
      }
    }
  };
  if (grid.parallel && grid.tasks > 1)
    pool->parallel_for(grid.tasks, run_tasks, 1);
  else
    run_tasks(0, grid.tasks);
}

// The paths this CPU runs, best first: read once (a GEMM's dispatch consults it on every call).
const std::vector<const Isa*>& available() {
  static const std::vector<const Isa*> paths = [] {
    std::vector<const Isa*> out;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
      out.push_back(&kAvx512);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(&kAvx2);
#endif
    out.push_back(&kScalar);
    return out;
  }();
  return paths;
}

const Isa& chosen() {
  static const Isa* isa = [] {
    const auto& paths = available();
    const Isa* best = paths.front();
    if (const char* env = std::getenv("ADRANK_CPU_ISA")) {
      // A forced path is taken only when it is available and not above the best one.
      for (const Isa* p : paths)
        if (std::strcmp(p->name, env) == 0) best = p;
    }
    return best;
  }();
  return *isa;
}

}  // namespace

PackedMatrix::PackedMatrix(const float* w, int n, int k)
    : n_(n), k_(k), data_(size_t(ceil_div(n, kPanel)) * kPanel * size_t(k), 0.f) {
  for (int j = 0; j < n; j++)
    for (int p = 0; p < k; p++) data_[(int64_t(j / kPanel) * k + p) * kPanel + j % kPanel] = w[int64_t(j) * k + p];
}

void gemm(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc, const Epilogue& ep,
          ThreadPool* pool) {
  if (w.has_bf16() && gemm_bf16_available()) return gemm_bf16(a, m, lda, w, c, ldc, ep, pool);
  gemm_with(chosen(), false, a, m, lda, w, c, ldc, ep, pool);
}

const char* gemm_isa() { return chosen().name; }

std::vector<const char*> gemm_isas_available() {
  std::vector<const char*> names;
  for (const Isa* p : available()) names.push_back(p->name);
  return names;
}

void gemm_on(const char* isa, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
             const Epilogue& ep, ThreadPool* pool) {
  for (const Isa* p : available())
    if (std::strcmp(p->name, isa) == 0) return gemm_with(*p, false, a, m, lda, w, c, ldc, ep, pool);
  throw std::invalid_argument(std::string("expected an ISA path this CPU runs for gemm_on, got ") + isa);
}

namespace detail {

std::vector<const char*> widened_bf16_isas() {
  std::vector<const char*> out;
  for (const Isa* p : available())
    if (p->ukb[0][0]) out.push_back(p->name);
  return out;
}

void gemm_bf16_widened(const char* isa, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                       const Epilogue& ep, ThreadPool* pool) {
  for (const Isa* p : available())
    if (p->ukb[0][0] && std::strcmp(p->name, isa) == 0) return gemm_with(*p, true, a, m, lda, w, c, ldc, ep, pool);
  throw std::invalid_argument(std::string("expected a path with a bf16-weight kernel this CPU runs (avx512, avx2), got ") + isa);
}

}  // namespace detail

}  // namespace adrank::cpu
