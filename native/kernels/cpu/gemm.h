// Linear layers on the CPU: C = epilogue(A · Wᵀ), cache-blocked, AVX-512 / AVX2 chosen at run time,
// work split over a ThreadPool. fp32 by default; a PackedMatrix that also holds bf16 weights
// (pack_bf16) runs on a bf16 kernel: AVX512-BF16 where the CPU has it (gemm_bf16.cc), else bf16
// weights widened to fp32 on AVX-512 or AVX2 (gemm.cc).
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
//
// Determinism: each element of C is one fp32 FMA chain over p = 0..k-1 in order, so on one ISA
// path the result is bitwise the same for any thread count, task split or batch (a row computed
// alone equals that row inside any m). Paths differ from each other only by rounding.
//
// bf16 kernels (gemm_bf16_kernel() below): avx512bf16 (vdpbf16ps) rounds W and A to bf16 (round
// to nearest even) and accumulates the products in fp32 (one fixed-order chain over k pairs per
// element, so the same determinism holds); the widening avx512 and avx2 round only W and run the
// fp32 chain. The epilogue runs in fp32 on the fp32 accumulator and C is fp32. The error per
// element is at most 2^-7 (widening: 2^-8) of the sum of |a·w| terms, not of the result (a bf16
// rounding is ≤ 2^-8).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace adrank::cpu {

class ThreadPool;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows up to which a GEMM runs in stream order: the whole of A is packed first (at most
// 128 × K floats, 768 KiB at the DCN's K = 1536), then every tile of columns runs all its K blocks
// back to back (W panels read once, in order, with software prefetch; the tile's C stays in L1
// from one K block to the next), and with a pool the columns are cut into one contiguous range
// per thread (each core streams its own part of W). Results are bitwise those of the blocked
// order. Below ~16 rows the product is bound by reading W and this order is what streams it; up
// to 128 it was measured faster than the blocked order too (docs/cpu-bf16.md "Small requests: the
// weight stream"): one thread, the DCN layer (1536 × 1536) at 20–128 rows, AVX2 4–18% and AVX-512
// up to 4% less time with W in L3, 8–37% (AVX2) and 3–17% (AVX-512) with the four layers' W from
// DRAM; the forward chunks of a Rank of 17 to 256 candidates are such products. At 250 rows (the chunks
// of a Rank(1,000)) the two orders measured the same within the noise, so above 128 rows, where
// A no longer fits a 1 MiB L2, the blocked order stays.
constexpr int kStreamRows = 128;

// Stream order's software prefetch of W: row tile i of a task prefetches every W panel it reads
// (i + 1) · kStreamPrefetch bytes ahead (64 cache lines per tile), so while the later tiles compute
// from cache the reads run on into the next K block. Into L2 (_MM_HINT_T1), not L1: measured on
// Zen 4 (2 cores, W from DRAM), an fp32 Rank(10)'s DCN streamed its 37.7 MB of weights at 33–38 GB/s
// with L2 prefetches against 21–26 GB/s with L1 ones (bf16: 40–45 against 30–36 GB/s); an L1
// prefetch holds one of the core's few L1 miss buffers for the whole trip to DRAM, competing with
// the demand loads, while the L2's queue is deeper and the loads then hit in L2.
constexpr int kStreamPrefetch = 4096;
// The prefetch distance of row tile `tile` (0-based) of a task: 0 (none) outside stream order.
inline int stream_prefetch_bytes(bool stream, int64_t tile) { return stream ? int(kStreamPrefetch * (tile + 1)) : 0; }

// How the GEMMs (gemm.cc fp32, gemm_bf16.cc bf16) split C[m × n] into tasks: row blocks of `mc`
// rows (at most max_rows, a multiple of mr), column blocks of `ncu` tiles of nr columns (at most
// max_cols), both balanced; when the product reaches parallel_macs and the pool has threads and
// there are fewer than 4 row blocks per thread, the columns are cut too, into the fewest blocks
// that keep the threads' shares even (below). Task t covers rows (t / cb) · mc and columns
// (t % cb) · ncu · nr. K runs in kblocks blocks of kc.
// Stream order (m <= kStreamRows): one task without a pool; with one, parallel once W has 2^18
// elements or the product reaches parallel_macs, and then exactly one column range per thread.
struct TaskGrid {
  bool parallel = false, stream = false;
  int64_t mc = 0, cb = 0, ncu = 0, kblocks = 0, tasks = 0;

  TaskGrid(int64_t m, int64_t n, int64_t k, int mr, int nr, int max_rows, int max_cols, int kc, int pool_threads, int64_t parallel_macs)
      : parallel(pool_threads > 1 && m * n * k >= parallel_macs), stream(m <= kStreamRows) {
    if (stream) parallel = pool_threads > 1 && (n * k >= (int64_t(1) << 18) || m * n * k >= parallel_macs);
    int64_t rb = ceil_div(m, max_rows);
    mc = ceil_div(ceil_div(m, rb), mr) * mr;
    rb = ceil_div(m, mc);
    const int64_t tiles = ceil_div(n, nr);
    cb = ceil_div(n, max_cols);
    if (stream) cb = parallel ? std::min<int64_t>(tiles, pool_threads) : 1;
    else if (parallel && rb < 4 * int64_t(pool_threads)) {
      // Few row blocks: split the columns too, into the fewest blocks that keep the threads' shares
      // even. Each column block packs its rows of A again, so a block more is taken only when it
      // shortens the product (rounds of tasks × tiles per task) by 5% or more, trying up to
      // `threads` more blocks than every thread needs for one task; with 4 or more row blocks per
      // thread the last round's imbalance is small and the columns stay whole. Zen 4, 2 threads,
      // medians of interleaved runs: against the earlier "≥ 4 tasks per thread", products of 32 to
      // 256 rows ran 5–80% faster (fp32 256 × 1536 at 32–100 rows: 35–37% → 62–65% of the FMA
      // peak; the DCN layer: 66–69% → 80–85%), 1,000 rows the same.
      const int64_t c0 = std::min(tiles, std::max(cb, ceil_div(pool_threads, rb)));
      auto span = [&](int64_t c) {
        const int64_t per = ceil_div(tiles, c);
        return ceil_div(rb * ceil_div(tiles, per), pool_threads) * per;
      };
      cb = c0;
      for (int64_t c = c0 + 1; c <= std::min(tiles, c0 + pool_threads - 1); c++)
        if (20 * span(c) < 19 * span(cb)) cb = c;
    }
    ncu = ceil_div(tiles, cb);
    cb = ceil_div(tiles, ncu);
    kblocks = std::max<int64_t>(1, ceil_div(k, kc));
    tasks = rb * cb;
  }
};

// Rows per micro-tile for a task of `rows` rows on a path whose tiles hold up to mr: as many tiles
// as mr requires, balanced (10 rows at mr = 6: 5 + 5, not 6 + 4; 7: 4 + 3, not 6 + 1), so no tile
// is left with too few rows to hide the FMA latency. The last tile may be smaller.
inline int balanced_rows(int64_t rows, int mr) { return int(ceil_div(rows, ceil_div(rows, mr))); }

// 64-byte aligned storage, so every packed row of a panel is exactly one cache line.
template <class T>
struct CacheAlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheAlignedAllocator() = default;
  template <class U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlign); }
  template <class U>
  bool operator==(const CacheAlignedAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheAlignedAllocator<U>&) const { return false; }
};

// W [n, k] re-laid out once for the micro-kernel: panels of kPanel = 16 output columns, each
// panel [k][16] (the 16 weights that meet A[i, p] are contiguous), the last panel zero-padded.
// Element (j, p) lives at data()[((j / 16) * k + p) * 16 + j % 16].
class PackedMatrix {
 public:
  static constexpr int kPanel = 16;
  PackedMatrix() = default;
  // w: [n, k] row-major, copied and re-laid out for the micro-kernel.
  PackedMatrix(const float* w, int n, int k);
  int n() const { return n_; }
  int k() const { return k_; }
  const float* data() const { return data_.data(); }

  // Adds a bf16 copy (round to nearest even) for the bf16 kernels; the fp32 data stays (the CUDA
  // backend reads it, and gemm_on runs on it). Layout: panels of 16 columns, each
  // [ceil(k/2)][16][2] (the two bf16 of one k pair of one column are adjacent, as vdpbf16ps
  // takes them), zero-padded in n and k: element (j, p) lives at
  // bf16_data()[((j / 16) * ceil(k/2) + p / 2) * 32 + (j % 16) * 2 + p % 2].
  void pack_bf16();
  bool has_bf16() const { return has_bf16_; }
  const uint16_t* bf16_data() const { return bf16_.data(); }

 private:
  int n_ = 0, k_ = 0;
  std::vector<float, CacheAlignedAllocator<float>> data_;
  bool has_bf16_ = false;
  std::vector<uint16_t, CacheAlignedAllocator<uint16_t>> bf16_;
};

struct Epilogue {
  const float* bias = nullptr;  // [n]
  bool relu = false;
  const float* mul = nullptr;   // [m, n], leading dimension ld_mul
  int64_t ld_mul = 0;
  const float* add = nullptr;   // [m, n], leading dimension ld_add
  int64_t ld_add = 0;
};

// pool may be null (runs on the calling thread). Runs the bf16 kernel gemm_bf16_kernel() when
// w.has_bf16() and there is one, else the fp32 path of gemm_isa().
void gemm(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
          const Epilogue& ep, ThreadPool* pool);

// Which vector code gemm runs on this CPU: "avx512", "avx2" or "scalar". Chosen once, on first
// use, from __builtin_cpu_supports; the environment variable ADRANK_CPU_ISA=avx2|scalar (read at
// that moment) forces a lower path, e.g. to test every path on one machine. A path the CPU
// cannot run is never chosen.
const char* gemm_isa();

// The paths this CPU can run, best first: a subset of {"avx512", "avx2", "scalar"}.
std::vector<const char*> gemm_isas_available();

// gemm on a named path regardless of gemm_isa() (the validation harness checks each one), always
// in fp32 (the bf16 copy of w, if any, is not read). Throws std::invalid_argument when this CPU
// cannot run `isa`.
void gemm_on(const char* isa, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c,
             int64_t ldc, const Epilogue& ep, ThreadPool* pool);

// The bf16 kernels (for matrices packed with pack_bf16):
//   "avx512bf16"  vdpbf16ps: A and W in bf16, fp32 accumulation (gemm_bf16.cc). Error per element
//                 at most 2^-7 of Σ|a·w| (two roundings).
//   "avx512"      W in bf16, widened to fp32 in registers (a shift and an AND per 16 pairs), A in
//                 fp32, the fp32 AVX-512 FMA chain (gemm.cc): bitwise the avx512 fp32 path on the
//                 bf16-rounded W. Error at most 2^-8 of Σ|a·w| (one rounding). Half the weight bytes
//                 of fp32 at its FMA rate, for CPUs with AVX-512 but without AVX512-BF16.
//   "avx2"        the same on AVX2 (a shift and an AND per 8 pairs): bitwise the avx2 fp32 path on
//                 the bf16-rounded W, for CPUs with AVX2 and FMA but without AVX-512.
// gemm_bf16_kernel() is the one gemm runs: "avx512bf16" where the CPU has AVX512-BF16 and the fp32
// path in use is avx512; else the widening kernel of the fp32 path in use, "avx512" or "avx2" (so
// ADRANK_CPU_ISA=avx2 selects "avx2" on any AVX2 CPU); else "" (the scalar path has no bf16
// kernel). ADRANK_CPU_BF16=off (read once) hides AVX512-BF16 as on a CPU without it: on an AVX-512
// machine the "AVX-512 without BF16" case, for tests and proxy measurements.
const char* gemm_bf16_kernel();

// The bf16 kernels this CPU can run, best first: a subset of {"avx512bf16", "avx512", "avx2"}.
std::vector<const char*> gemm_bf16_kernels_available();

// Whether gemm runs a bf16 kernel here (gemm_bf16_kernel() is not "").
bool gemm_bf16_available();

// What gemm_bf16_kernel() is and why, e.g. "this CPU has AVX512-BF16 (vdpbf16ps)" or "this CPU has
// no AVX512-BF16: bf16 weights widened to fp32 on AVX-512".
const char* gemm_bf16_reason();

// Whether precision auto should choose bf16 here, and why (gemm_bf16_auto_reason): yes wherever
// there is a bf16 kernel: avx512bf16 is faster at every size, and a widening kernel runs at its
// fp32 path's FMA rate with half the bytes (as fast where the FMAs bound it, faster where the
// weight stream does); no on the scalar path.
bool gemm_bf16_auto();
const char* gemm_bf16_auto_reason();

// Rounds x to bf16, round to nearest even (NaN stays NaN); the bits.
uint16_t to_bf16(float x);

// The bf16 kernel gemm_bf16_kernel() regardless of the dispatch (the harness and tests use it).
// Throws std::invalid_argument when !gemm_bf16_available() or !w.has_bf16().
void gemm_bf16(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc, const Epilogue& ep,
               ThreadPool* pool);

// A named bf16 kernel (gemm_bf16_kernels_available()). Throws std::invalid_argument when this CPU
// cannot run it or !w.has_bf16().
void gemm_bf16_on(const char* kernel, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                  const Epilogue& ep, ThreadPool* pool);

namespace detail {
// The kernels behind gemm_bf16_on (no checks): vdpbf16ps in gemm_bf16.cc; the fp32 paths' kernels
// that widen bf16 W in registers in gemm.cc, by path name ("avx512", "avx2": the ones this CPU
// runs, best first, from widened_bf16_isas).
void gemm_bf16_avx512bf16(const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                          const Epilogue& ep, ThreadPool* pool);
std::vector<const char*> widened_bf16_isas();
void gemm_bf16_widened(const char* isa, const float* a, int m, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                       const Epilogue& ep, ThreadPool* pool);
}  // namespace detail

}  // namespace adrank::cpu
