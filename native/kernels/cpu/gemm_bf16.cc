// C = epilogue(A · Wᵀ) with bf16 operands and fp32 accumulation on AVX512-BF16 (vdpbf16ps); see
// gemm.h for the operands, the epilogue and the bf16 weight layout.
//
// Compiled without -march like the rest: every function that uses AVX512-BF16 carries its own
// target attribute and is only called where the CPU has it, so the same binary runs on CPUs
// without it (they take gemm.cc's kernels that widen bf16 W on AVX-512 or AVX2, or its fp32 paths).
// This file also chooses the bf16 kernel and what precision auto means (support(), gemm.h).
//
// Blocking (one task = one row block × one column block of C, all of K):
//   for K block of kKc elements (kKc / 2 bf16 pairs)
//     convert A[rows, K block] to bf16 pairs, row-major with a fixed row stride of kKc / 2 pairs
//       (vcvtneps2bf16, 16 floats an instruction; odd k padded with a 0)
//     for column tile of nr (32; 64 when m <= 4) in the task
//       for row tile of up to 12 (balanced_rows) in the task's rows
//         micro-kernel: 12 × 32 fp32 accumulators (24 zmm) in registers; per k pair 2 W loads,
//         12 broadcasts of one A pair, 24 vdpbf16ps; C loaded back between K blocks (exact), on the
//         last K block the fp32 epilogue in registers and a (masked) store.
// Stream order (m <= kStreamRows): all K blocks of A converted first, then per column tile all K
// blocks back to back, W prefetched ahead, one column range per thread (gemm.h TaskGrid).
// A is not transposed into micro-panels as on the fp32 path: with a compile-time row stride the
// 12 broadcasts are loads at fixed offsets from one pointer, and the conversion stays a straight
// vector loop.
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

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace adrank::cpu {

uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays a (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

void PackedMatrix::pack_bf16() {
  const int64_t k2 = (int64_t(k_) + 1) / 2, panels = (int64_t(n_) + kPanel - 1) / kPanel;
  bf16_.assign(size_t(panels * k2 * 2 * kPanel), 0);
  for (int j = 0; j < n_; j++)
    for (int p = 0; p < k_; p++)
      bf16_[size_t(((j / kPanel) * k2 + p / 2) * 2 * kPanel + (j % kPanel) * 2 + p % 2)] =
          to_bf16(data_[size_t((int64_t(j / kPanel) * k_ + p) * kPanel + j % kPanel)]);
  has_bf16_ = true;
}

namespace {

constexpr int kPanel = PackedMatrix::kPanel;
constexpr int kMr = 12;           // rows per micro-tile
// Block sizes, measured on Zen 4 (harness shapes at m = 250, best of interleaved runs): K blocks of
// 512 and all of a DCN layer's 1,536 columns in one task beat 256 × 512 by ~5% on the DCN shape
// (the A block is converted once per K block instead of once per column block, C is reloaded
// half as often) and tie elsewhere.
constexpr int kKc = 512;          // K block (elements): W micro-panel 256 pairs × 32 × 4 B = 32 KiB
constexpr int kKc2 = kKc / 2;     // pairs per K block, also the row stride of the converted A block
constexpr int kMc = 264;          // rows per task: an engine chunk of ≤ 256 rows is one row block (A block 264 KiB)
constexpr int kNc = 1536;         // columns per task (threads split columns further)
constexpr int64_t kParallelMacs = int64_t(1) << 20;


#if defined(__x86_64__)
#define ADRANK_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

struct Tile {
  int kc2;              // k pairs in this K block
  const uint32_t* a;    // A pairs, row r at a + r * kKc2
  const uint32_t* w;    // W panel 0 at this K block, [kc2][16] pairs; panel v at w + v * wstride
  int64_t wstride;      // pairs between consecutive W panels (ceil(k/2) * 16)
  float* c;
  int64_t ldc;
  int ncols;            // valid columns, 1 .. NP * 16
  bool first, last;
  int prefetch;         // stream order: prefetch W this many bytes ahead (0: none)
  const float* bias;
  bool relu;
  const float* mul;
  int64_t ld_mul;
  const float* add;
  int64_t ld_add;
};

using Ukernel = void (*)(const Tile&);

template <int MR, int NP>
struct Bf16Kernel {
  ADRANK_BF16_TARGET static void run(const Tile& t) {
    __mmask16 mask[NP];
    for (int v = 0; v < NP; v++) {
      const int cols = std::min(std::max(t.ncols - kPanel * v, 0), kPanel);
      mask[v] = __mmask16((1u << cols) - 1);
    }
    __m512 acc[MR][NP];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < NP; v++)
        acc[r][v] = t.first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], t.c + r * t.ldc + kPanel * v);
    const uint32_t* a = t.a;
    const uint32_t* w = t.w;
    for (int p = 0; p < t.kc2; p++, a++, w += kPanel) {
      if (t.prefetch)
        for (int v = 0; v < NP; v++) _mm_prefetch(reinterpret_cast<const char*>(w + v * t.wstride) + t.prefetch, _MM_HINT_T1);
      __m512bh b[NP];
      for (int v = 0; v < NP; v++) b[v] = (__m512bh)_mm512_load_si512(w + v * t.wstride);
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++) {
        const __m512bh ar = (__m512bh)_mm512_set1_epi32(int(a[r * kKc2]));
        for (int v = 0; v < NP; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], ar, b[v]);
      }
    }
    if (t.last) {
      __m512 bias[NP], zero = _mm512_setzero_ps();
      for (int v = 0; v < NP; v++) bias[v] = t.bias ? _mm512_maskz_loadu_ps(mask[v], t.bias + kPanel * v) : zero;
#pragma GCC unroll 12
      for (int r = 0; r < MR; r++)
        for (int v = 0; v < NP; v++) {
          __m512 x = _mm512_add_ps(acc[r][v], bias[v]);
          if (t.relu) x = _mm512_maskz_max_ps(__mmask16(0xFFFF), x, zero);
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

// uk[mr - 1][np - 1]: np 1..2 for every mr, np 3..4 only for mr <= 4 (wide tiles for tiny m, so
// one row still has enough independent accumulator chains to hide vdpbf16ps's latency).
template <int MR, int NP>
constexpr Ukernel kernel_for() {
  if constexpr (NP <= 2 || MR <= 4) return &Bf16Kernel<MR, NP>::run;
  else return nullptr;
}
template <int MR, size_t... NP>
constexpr std::array<Ukernel, 4> row_of(std::index_sequence<NP...>) {
  return {kernel_for<MR, int(NP) + 1>()...};
}
template <size_t... R>
constexpr std::array<std::array<Ukernel, 4>, kMr> make_table(std::index_sequence<R...>) {
  return {row_of<int(R) + 1>(std::make_index_sequence<4>())...};
}
constexpr std::array<std::array<Ukernel, 4>, kMr> kTable = make_table(std::make_index_sequence<kMr>());

// A[i0 + r, p0 .. p0 + kc) → bf16 pairs at dst + r * kKc2 (round to nearest even; an odd kc
// gets a 0 in the last pair's upper half).
ADRANK_BF16_TARGET void convert_block(const float* a, int64_t lda, int rows, int kc, uint32_t* dst) {
  for (int r = 0; r < rows; r++) {
    const float* src = a + r * lda;
    uint16_t* d = reinterpret_cast<uint16_t*>(dst + int64_t(r) * kKc2);
    int p = 0;
    for (; p + 16 <= kc; p += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + p), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + p)));
    if (p < kc) {
      const int left = kc - p, padded = left + (left & 1);
      const __m512 x = _mm512_maskz_loadu_ps(__mmask16((1u << left) - 1), src + p);
      _mm256_mask_storeu_epi16(d + p, __mmask16((1u << padded) - 1), (__m256i)_mm512_cvtneps_pbh(x));
    }
  }
}

// Packed A blocks, one per thread (reused across calls).
thread_local std::vector<uint32_t, CacheAlignedAllocator<uint32_t>> tls_abuf;

void gemm_bf16_x86(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                   const Epilogue& ep, ThreadPool* pool) {
  const int n = w.n(), k = w.k();
  if (m <= 0 || n <= 0) return;
  const int64_t k2 = (int64_t(k) + 1) / 2;
  const int nr = (m <= 4 ? 4 : 2) * kPanel;
  const uint32_t* wb = reinterpret_cast<const uint32_t*>(w.bf16_data());

  const TaskGrid grid(m, n, k, kMr, nr, kMc, kNc, kKc, pool ? pool->size() : 1, kParallelMacs);
  const int64_t mc = grid.mc, cb = grid.cb, ncu = grid.ncu, kblocks = grid.kblocks;
  // Blocked order: one converted A block at a time. Stream order: all of A first, block kb at
  // kb · mc · kKc2.
  const size_t abuf = size_t(mc) * kKc2 * size_t(grid.stream ? kblocks : 1);

  auto run_tasks = [&](int64_t t0, int64_t t1) {
    auto& buf = tls_abuf;
    if (buf.size() < abuf) buf.resize(abuf);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t i0 = (task / cb) * mc, i1 = std::min<int64_t>(m, i0 + mc);
      const int64_t j0 = (task % cb) * ncu * nr, j1 = std::min<int64_t>(n, j0 + ncu * nr);
      const int tr = balanced_rows(i1 - i0, kMr);
      auto convert = [&](int64_t kb, uint32_t* block) {
        const int64_t p0 = kb * kKc;
        convert_block(a + i0 * lda + p0, lda, int(i1 - i0), int(std::min<int64_t>(kKc, k - p0)), block);
      };
      // The row tiles of columns [j, j + nr) over K block kb, A block converted at `block`.
      auto tiles = [&](int64_t kb, int64_t j, const uint32_t* block) {
        const int64_t p0 = kb * kKc;
        const int kc = int(std::min<int64_t>(kKc, k - p0));
        Tile t{};
        t.kc2 = (kc + 1) / 2;
        t.wstride = k2 * kPanel;
        t.ldc = ldc;
        t.first = kb == 0;
        t.last = kb == kblocks - 1;
        t.relu = ep.relu;
        t.ld_mul = ep.ld_mul;
        t.ld_add = ep.ld_add;
        t.ncols = int(std::min<int64_t>(nr, j1 - j));
        const int np = int(ceil_div(t.ncols, kPanel));
        t.w = wb + ((j / kPanel) * k2 + p0 / 2) * kPanel;
        t.bias = ep.bias ? ep.bias + j : nullptr;
        for (int64_t ir = i0; ir < i1; ir += tr) {
          const int rows = int(std::min<int64_t>(tr, i1 - ir));
          t.prefetch = stream_prefetch_bytes(grid.stream, (ir - i0) / tr);
          t.a = block + (ir - i0) * kKc2;
          t.c = c + ir * ldc + j;
          t.mul = ep.mul ? ep.mul + ir * ep.ld_mul + j : nullptr;
          t.add = ep.add ? ep.add + ir * ep.ld_add + j : nullptr;
          kTable[rows - 1][np - 1](t);
        }
      };
      if (grid.stream) {
        for (int64_t kb = 0; kb < kblocks; kb++) convert(kb, buf.data() + kb * mc * kKc2);
        for (int64_t j = j0; j < j1; j += nr)
          for (int64_t kb = 0; kb < kblocks; kb++) tiles(kb, j, buf.data() + kb * mc * kKc2);
      } else {
        for (int64_t kb = 0; kb < kblocks; kb++) {
          convert(kb, buf.data());
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
#endif  // __x86_64__

struct Support {
  const char* kernel = "";  // gemm_bf16_kernel()
  std::string reason;
  bool automatic = false;   // gemm_bf16_auto()
  std::string auto_reason;
};

// ADRANK_CPU_BF16=off (read once) hides AVX512-BF16, as on a CPU without it: on an AVX-512 machine
// that is the "AVX-512 without BF16" case (avx512 fp32 path, its bf16-widening kernel "avx512").
bool bf16_hidden() {
  static const bool hidden = [] {
    const char* env = std::getenv("ADRANK_CPU_BF16");
    return env && std::strcmp(env, "off") == 0;
  }();
  return hidden;
}

bool cpu_has_avx512bf16() {
  if (bf16_hidden()) return false;
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const Support& support() {
  static const Support s = [] {
    Support r;
    const char* isa = gemm_isa();  // a static name
    const bool vdp = cpu_has_avx512bf16();
    const auto widened = detail::widened_bf16_isas();
    const bool widens = std::any_of(widened.begin(), widened.end(), [&](const char* x) { return std::strcmp(x, isa) == 0; });
    if (vdp && std::strcmp(isa, "avx512") == 0) {
      r.kernel = "avx512bf16";
      r.reason = "this CPU has AVX512-BF16 (vdpbf16ps)";
      r.automatic = true;
      r.auto_reason = r.reason;
    } else if (widens) {
      // The fp32 path in use has a kernel that widens bf16 W in registers: its FMA rate, half the
      // weight bytes.
      r.kernel = isa;
      const std::string widen = std::string("bf16 weights widened to fp32 on ") + (std::strcmp(isa, "avx512") == 0 ? "AVX-512" : "AVX2");
      if (vdp)
        r.reason = std::string("the fp32 path in use is ") + isa + " (ADRANK_CPU_ISA): " + widen;
      else if (bf16_hidden())
        r.reason = "AVX512-BF16 turned off (ADRANK_CPU_BF16=off): " + widen;
      else
        r.reason = "this CPU has no AVX512-BF16: " + widen;
      r.automatic = true;
      r.auto_reason = r.reason + " (half the weight bytes of fp32, as fast where the FMAs bound it)";
    } else {
#if defined(__x86_64__)
      r.reason = std::string("the fp32 path in use is ") + isa + ", which has no bf16 kernel (needs AVX512-BF16, AVX-512, or AVX2 and FMA)";
#else
      r.reason = "not an x86-64 CPU (the bf16 kernels need AVX512-BF16, AVX-512, or AVX2 and FMA)";
#endif
      r.auto_reason = r.reason;
    }
    return r;
  }();
  return s;
}

}  // namespace

namespace detail {

void gemm_bf16_avx512bf16(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                          const Epilogue& ep, ThreadPool* pool) {
#if defined(__x86_64__)
  gemm_bf16_x86(a, m, lda, w, c, ldc, ep, pool);
#else
  (void)a, (void)m, (void)lda, (void)w, (void)c, (void)ldc, (void)ep, (void)pool;
#endif
}

}  // namespace detail

const char* gemm_bf16_kernel() { return support().kernel; }

bool gemm_bf16_available() { return *support().kernel != 0; }

const char* gemm_bf16_reason() { return support().reason.c_str(); }

bool gemm_bf16_auto() { return support().automatic; }

const char* gemm_bf16_auto_reason() { return support().auto_reason.c_str(); }

std::vector<const char*> gemm_bf16_kernels_available() {
  std::vector<const char*> out;
  if (cpu_has_avx512bf16()) out.push_back("avx512bf16");
  for (const char* isa : detail::widened_bf16_isas()) out.push_back(isa);
  return out;
}

namespace {

// Runs bf16 kernel `kernel`, which the caller knows this CPU runs.
void run_bf16_kernel(const char* kernel, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                     const Epilogue& ep, ThreadPool* pool) {
  if (std::strcmp(kernel, "avx512bf16") == 0) detail::gemm_bf16_avx512bf16(a, m, lda, w, c, ldc, ep, pool);
  else detail::gemm_bf16_widened(kernel, a, m, lda, w, c, ldc, ep, pool);
}

}  // namespace

void gemm_bf16_on(const char* kernel, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                  const Epilogue& ep, ThreadPool* pool) {
  if (!w.has_bf16()) throw std::invalid_argument("expected a matrix packed with pack_bf16() for gemm_bf16");
  const std::string k = kernel;
  bool runs = false;
  for (const char* name : gemm_bf16_kernels_available()) runs = runs || k == name;
  if (!runs) throw std::invalid_argument("expected a bf16 kernel this CPU runs (avx512bf16, avx512 or avx2) for gemm_bf16_on, got " + k);
  run_bf16_kernel(kernel, a, m, lda, w, c, ldc, ep, pool);
}

void gemm_bf16(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc, const Epilogue& ep,
               ThreadPool* pool) {
  if (!w.has_bf16()) throw std::invalid_argument("expected a matrix packed with pack_bf16() for gemm_bf16");
  if (!gemm_bf16_available())
    throw std::invalid_argument(std::string("expected a CPU with a bf16 kernel (AVX512-BF16, or AVX2 and FMA) for gemm_bf16: ") +
                                gemm_bf16_reason());
  // support().kernel is one this CPU runs: no need for gemm_bf16_on's check, which builds the list
  // of kernels on every call
  run_bf16_kernel(gemm_bf16_kernel(), a, m, lda, w, c, ldc, ep, pool);
}

}  // namespace adrank::cpu
