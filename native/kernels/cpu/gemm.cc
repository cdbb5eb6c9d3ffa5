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
constexpr int kNc = 256;  // columns per task
// Below this many multiply-adds a job is not worth waking the pool for (~20 µs on one core).
constexpr int64_t kParallelMacs = int64_t(1) << 20;

// One micro-kernel call: C[0:MR, 0:ncols] (+)= Apanel · Wpanelᵀ over kc, with the epilogue
// on the last K block. All pointers are already offset to the tile's origin.
struct Tile {
  int kc;
  const float* a;   // packed A micro-panel, [kc][MR]
  const float* w;   // first W panel at this K block, [kc][16]; panel v at w + v * wstride
  int64_t wstride;  // floats between consecutive W panels (k * 16)
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

template <template <int, int> class K, int kMr, int kNp, int kSmallM, int kSmallNp>
constexpr Isa make_isa(const char* name) {
  return {name, kMr, kNp, kSmallM, kSmallNp, make_table<K, kMr, kNp, kSmallM, kSmallNp>(std::make_index_sequence<12>())};
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

const Isa kScalar = make_isa<ScalarKernel, 4, 1, 0, 1>("scalar");

#if defined(__x86_64__)

// ---- AVX2 + FMA: 6 × 16 tile (12 ymm accumulators); m <= 3: up to 3 × 32 -----------------------

template <int MR, int NP>
struct Avx2Kernel {
  static constexpr int V = 2 * NP;  // ymm vectors per row
  __attribute__((target("avx2,fma"))) static __m256 load(const float* p, bool full, __m256i mask) {
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
  }
  __attribute__((target("avx2,fma"))) static void run(const Tile& t) {
    const bool full = t.ncols == NP * kPanel;
    __m256i mask[V];
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int v = 0; v < V; v++) mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(t.ncols - 8 * v), lane);
    __m256 acc[MR][V];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < V; v++)
        acc[r][v] = t.first ? _mm256_setzero_ps() : load(t.c + r * t.ldc + 8 * v, full, mask[v]);
    const float* a = t.a;
    const float* w = t.w;
    for (int p = 0; p < t.kc; p++, a += MR, w += kPanel) {
      __m256 b[V];
      for (int v = 0; v < V; v++) b[v] = _mm256_load_ps(w + (v / 2) * t.wstride + 8 * (v % 2));
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++) {
        __m256 ar = _mm256_broadcast_ss(a + r);
        for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(ar, b[v], acc[r][v]);
      }
    }
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

const Isa kAvx2 = make_isa<Avx2Kernel, 6, 1, 3, 2>("avx2");

// ---- AVX-512: 12 × 32 tile (24 zmm accumulators over two W panels); m <= 4: up to 4 × 64 ------

template <int MR, int NP>
struct Avx512Kernel {
  __attribute__((target("avx512f,avx512vl,fma"))) static void run(const Tile& t) {
    __mmask16 mask[NP];
    for (int v = 0; v < NP; v++) {
      int cols = std::min(std::max(t.ncols - kPanel * v, 0), kPanel);
      mask[v] = __mmask16((1u << cols) - 1);
    }
    __m512 acc[MR][NP];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < NP; v++)
        acc[r][v] = t.first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], t.c + r * t.ldc + kPanel * v);
    const float* a = t.a;
    const float* w = t.w;
    for (int p = 0; p < t.kc; p++, a += MR, w += kPanel) {
      __m512 b[NP];
      for (int v = 0; v < NP; v++) b[v] = _mm512_load_ps(w + v * t.wstride);
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++) {
        __m512 ar = _mm512_set1_ps(a[r]);
        for (int v = 0; v < NP; v++) acc[r][v] = _mm512_fmadd_ps(ar, b[v], acc[r][v]);
      }
    }
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

const Isa kAvx512 = make_isa<Avx512Kernel, 12, 2, 4, 4>("avx512");

#endif  // __x86_64__

// ---- driver ---------------------------------------------------------------------------------

// Packed A blocks, one per thread (reused across calls).
thread_local std::vector<float, CacheAlignedAllocator<float>> tls_apack;


void gemm_with(const Isa& isa, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
               const Epilogue& ep, ThreadPool* pool) {
  const int n = w.n(), k = w.k();
  if (m <= 0 || n <= 0) return;
  const int mr = isa.mr;
  const int nr = (m <= isa.small_m ? isa.small_np : isa.np) * kPanel;

  const TaskGrid grid(m, n, k, mr, nr, kMc, kNc, kKc, pool ? pool->size() : 1, kParallelMacs);
  const int64_t mc = grid.mc, cb = grid.cb, ncu = grid.ncu, kblocks = grid.kblocks;

  auto run_tasks = [&](int64_t t0, int64_t t1) {
    auto& buf = tls_apack;
    if (buf.size() < size_t(mc) * kKc) buf.resize(size_t(mc) * kKc);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t i0 = (task / cb) * mc, i1 = std::min<int64_t>(m, i0 + mc);
      const int64_t j0 = (task % cb) * ncu * nr, j1 = std::min<int64_t>(n, j0 + ncu * nr);
      for (int64_t kb = 0; kb < kblocks; kb++) {
        const int64_t p0 = kb * kKc;
        const int kc = int(std::min<int64_t>(kKc, k - p0));
        // Pack A[i0:i1, p0:p0+kc] as micro-panels [kc][rows] (rows = mr, or fewer at the end).
        for (int64_t ir = i0; ir < i1; ir += mr) {
          const int rows = int(std::min<int64_t>(mr, i1 - ir));
          float* dst = buf.data() + (ir - i0) * kc;
          for (int r = 0; r < rows; r++) {
            const float* src = a + (ir + r) * lda + p0;
            for (int p = 0; p < kc; p++) dst[p * rows + r] = src[p];
          }
        }
        Tile t{};
        t.kc = kc;
        t.wstride = int64_t(k) * kPanel;
        t.ldc = ldc;
        t.first = kb == 0;
        t.last = kb == kblocks - 1;
        t.relu = ep.relu;
        t.ld_mul = ep.ld_mul;
        t.ld_add = ep.ld_add;
        for (int64_t j = j0; j < j1; j += nr) {
          t.ncols = int(std::min<int64_t>(nr, j1 - j));
          const int np = int(ceil_div(t.ncols, kPanel));
          t.w = w.data() + ((j / kPanel) * int64_t(k) + p0) * kPanel;
          t.bias = ep.bias ? ep.bias + j : nullptr;
          for (int64_t ir = i0; ir < i1; ir += mr) {
            const int rows = int(std::min<int64_t>(mr, i1 - ir));
            t.a = buf.data() + (ir - i0) * kc;
            t.c = c + ir * ldc + j;
            t.mul = ep.mul ? ep.mul + ir * ep.ld_mul + j : nullptr;
            t.add = ep.add ? ep.add + ir * ep.ld_add + j : nullptr;
            isa.uk[rows - 1][np - 1](t);
          }
        }
      }
    }
  };
  if (grid.parallel && grid.tasks > 1)
    pool->parallel_for(grid.tasks, run_tasks, 1);
  else
    run_tasks(0, grid.tasks);
}

std::vector<const Isa*> available() {
  std::vector<const Isa*> out;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    out.push_back(&kAvx512);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(&kAvx2);
#endif
  out.push_back(&kScalar);
  return out;
}

const Isa& chosen() {
  static const Isa* isa = [] {
    auto paths = available();
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
  gemm_with(chosen(), a, m, lda, w, c, ldc, ep, pool);
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
    if (std::strcmp(p->name, isa) == 0) return gemm_with(*p, a, m, lda, w, c, ldc, ep, pool);
  throw std::invalid_argument(std::string("expected an ISA path this CPU runs for gemm_on, got ") + isa);
}

}  // namespace adrank::cpu
