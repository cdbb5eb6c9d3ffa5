// bf16 GEMM with fused epilogues (see gemm_bf16.cuh for the contract).
// Layout of this file: CPU reference, device primitives (inline PTX), the kernel, the launchers.
//
#include "kernels/cuda/gemm_bf16.cuh"

#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include <atomic>
#include <map>
#include <mutex>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/cuda/gemm_device.cuh"
#include "kernels/cuda/gemm_wgmma.cuh"

namespace adrank::cuda {

// ---- CPU reference --------------------------------------------------------------------------------

void gemm_bf16_reference(const bf16* a, int64_t lda, const bf16* w, int64_t ldw, float* c, int64_t ldc, int m, int n,
                         int k) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double acc = 0;
      for (int t = 0; t < k; ++t) acc += double(__bfloat162float(a[i * lda + t])) * double(__bfloat162float(w[j * ldw + t]));
      c[i * ldc + j] = float(acc);
    }
}

// ---- device primitives ----------------------------------------------------------------------------

namespace {

using namespace gemm_detail;

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

// d = a · b + d, a 16×16 (row), b 16×8 (col), bf16 in, fp32 accumulate.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_>
struct TileConfig {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_, STAGES = STAGES_;
  static constexpr int kWarpsM = BM / WM, kWarpsN = BN / WN;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  static constexpr int kLds = BK + 8;  // padded shared row (elements): 80 B for BK = 32
  static constexpr int kChunksPerRow = BK / 8;
  static constexpr int kAChunks = BM * kChunksPerRow / kThreads;  // 16-byte chunks per thread
  static constexpr int kBChunks = BN * kChunksPerRow / kThreads;
  static constexpr int kFragM = WM / 16, kFragN = WN / 8;
  static constexpr size_t kSmemBytes = size_t(STAGES) * (BM + BN) * kLds * sizeof(bf16);
  static_assert(BM * kChunksPerRow % kThreads == 0 && BN * kChunksPerRow % kThreads == 0, "chunks per thread");
  static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 16 == 0, "fragment shape");
};

using BigTile = TileConfig<128, 128, 32, 64, 32, 4>;   // 8 warps, 80 KiB shared
using SmallTile = TileConfig<64, 64, 32, 32, 32, 4>;   // 4 warps, 40 KiB shared

// kPdl: launched as a programmatic dependent of the kernel before it. Before pdl_wait the block
// reads only what no earlier kernel of the request writes: the shape and the weights (W, loaded
// into the prologue's stages); A, the row count *m_dev and everything the epilogue reads come after.
// It lets the next grid launch once its main loop is done, so the next GEMM's weight loads overlap
// this one's epilogue.
template <class Cfg, class Epi, bool kPdl>
__global__ void __launch_bounds__(Cfg::kThreads) gemm_bf16_kernel(GemmShape s, ASource a, Epi epi) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, LDS = Cfg::kLds, STAGES = Cfg::STAGES;
  bf16* sA = reinterpret_cast<bf16*>(smem_raw);
  bf16* sB = sA + STAGES * BM * LDS;

  const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN, z = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm0 = (warp / Cfg::kWarpsN) * Cfg::WM, wn0 = (warp % Cfg::kWarpsN) * Cfg::WN;
  const int ktiles = s.k / BK;

  // W: per-thread source rows, fixed across k tiles.
  const bf16* b_src[Cfg::kBChunks];
  int b_dst[Cfg::kBChunks], b_kc[Cfg::kBChunks];
  bool b_ok[Cfg::kBChunks];
#pragma unroll
  for (int c = 0; c < Cfg::kBChunks; ++c) {
    const int chunk = tid + c * Cfg::kThreads, row = chunk / Cfg::kChunksPerRow;
    b_kc[c] = (chunk % Cfg::kChunksPerRow) * 8;
    b_dst[c] = row * LDS + b_kc[c];
    b_ok[c] = bn0 + row < s.n;
    b_src[c] = w_row(s, z, bn0 + row, b_ok[c]);
  }
  auto load_b = [&](int stage, int kt) {
    bf16* sb = sB + stage * BN * LDS;
#pragma unroll
    for (int c = 0; c < Cfg::kBChunks; ++c) {
      const int kk = kt * BK + b_kc[c];
      cp_async16(sb + b_dst[c], b_ok[c] ? b_src[c] + kk : s.w, b_ok[c] ? 16 : 0);
    }
  };
  if constexpr (kPdl) {
    // the prologue's weights before the wait: they go into the first commit group below, with A of
    // stage 0, so the main loop's wait_group counts are unchanged
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st)
      if (st < ktiles) load_b(st, st);
    pdl_wait();
  }

  const int m = s.m_dev ? min(s.m, *s.m_dev) : s.m;
  if (bm0 >= m) {  // whole block outside the rows present (uniform exit, before any barrier)
    if constexpr (kPdl) cp_async_wait<0>();  // no copy may land after the block is gone
    return;
  }

  // Per-thread source rows, fixed across k tiles.
  ARow a_row[Cfg::kAChunks];
  int a_dst[Cfg::kAChunks], a_kc[Cfg::kAChunks];
  bool a_ok[Cfg::kAChunks];
#pragma unroll
  for (int c = 0; c < Cfg::kAChunks; ++c) {
    const int chunk = tid + c * Cfg::kThreads, row = chunk / Cfg::kChunksPerRow;
    a_kc[c] = (chunk % Cfg::kChunksPerRow) * 8;
    a_dst[c] = row * LDS + a_kc[c];
    a_ok[c] = bm0 + row < m;
    a_row[c].init(a, z, bm0 + row, a_ok[c]);
  }
  const int k0 = a.seg1 ? a.k0 : s.k;

  auto load_a = [&](int stage, int kt) {
    bf16* sa = sA + stage * BM * LDS;
#pragma unroll
    for (int c = 0; c < Cfg::kAChunks; ++c) {
      const int kk = kt * BK + a_kc[c];
      cp_async16(sa + a_dst[c], a_ok[c] ? a_row[c].at(kk, k0) : a.seg0, a_ok[c] ? 16 : 0);
    }
  };
  auto load_tile = [&](int stage, int kt) {
    load_a(stage, kt);
    load_b(stage, kt);
  };

  float acc[Cfg::kFragM][Cfg::kFragN][4];
#pragma unroll
  for (int i = 0; i < Cfg::kFragM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::kFragN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  // Prologue: STAGES-1 tiles in flight. Empty groups are committed too so wait_group counts match.
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < ktiles) {
      if constexpr (kPdl) load_a(st, st);  // W of this stage is already in flight
      else load_tile(st, st);
    }
    cp_async_commit();
  }

  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<STAGES - 2>();  // tile kt has landed (for this thread's copies) ...
    __syncthreads();              // ... and for everyone's; stage (kt-1) % STAGES is free again
    {
      const int pf = kt + STAGES - 1;
      if (pf < ktiles) load_tile(pf % STAGES, pf);
      cp_async_commit();
    }
    const bf16* sa = sA + (kt % STAGES) * BM * LDS;
    const bf16* sb = sB + (kt % STAGES) * BN * LDS;
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      unsigned af[Cfg::kFragM][4];
      unsigned bfr[Cfg::kFragN][2];
#pragma unroll
      for (int i = 0; i < Cfg::kFragM; ++i)
        ldmatrix_x4(af[i], sa + (wm0 + i * 16 + (lane & 15)) * LDS + ks * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int j = 0; j < Cfg::kFragN / 2; ++j) {
        unsigned r[4];
        ldmatrix_x4(r, sb + (wn0 + j * 16 + (lane & 7) + ((lane >> 4) << 3)) * LDS + ks * 16 + ((lane >> 3) & 1) * 8);
        bfr[2 * j][0] = r[0];
        bfr[2 * j][1] = r[1];
        bfr[2 * j + 1][0] = r[2];
        bfr[2 * j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < Cfg::kFragM; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::kFragN; ++j) mma_bf16_16816(acc[i][j], af[i], bfr[j][0], bfr[j][1]);
    }
  }
  cp_async_wait<0>();
  if constexpr (kPdl) pdl_launch_dependents();

  // Epilogue straight from the accumulators: c0,c1 at (lane/4, 2·(lane%4)), c2,c3 eight rows down.
#pragma unroll
  for (int i = 0; i < Cfg::kFragM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::kFragN; ++j) {
      const int row = bm0 + wm0 + i * 16 + (lane >> 2);
      const int col = bn0 + wn0 + j * 8 + (lane & 3) * 2;
      if (col < s.n) {
        if (row < m) epi(z, row, col, acc[i][j][0], acc[i][j][1]);
        if (row + 8 < m) epi(z, row + 8, col, acc[i][j][2], acc[i][j][3]);
      }
    }
}

void check_shape(const GemmShape& s, const ASource& a) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("gemm_bf16: " + what); };
  auto al16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  if (s.m < 0 || s.n <= 0 || s.k <= 0 || s.batch < 1) bad("bad m/n/k/batch");
  if (s.k % 32) bad("k must be a multiple of 32 (got " + std::to_string(s.k) + ")");
  if (s.n % 8) bad("n must be a multiple of 8 (got " + std::to_string(s.n) + ")");
  if (!s.w || !a.seg0) bad("null operand");
  if (s.ldw % 8 || a.ld0 % 8 || a.ld1 % 8 || a.z_stride0 % 8 || a.z_stride1 % 8 || s.w_z % 8) bad("leading dimensions must be multiples of 8");
  if (a.seg1 && (a.k0 % 8 || a.k0 <= 0 || a.k0 >= s.k)) bad("k0 must be a multiple of 8 inside (0, k)");
  if (!al16(s.w) || !al16(a.seg0) || (a.seg1 && !al16(a.seg1))) bad("operands must be 16-byte aligned");
}

std::atomic<int>& policy_slot() {
  static std::atomic<int> p{int(parse_tile_policy(std::getenv("ADRANK_CUDA_TILE")))};
  return p;
}

bool prefer_big(const GemmShape& s) {
  return tile_is_big(gemm_tile_policy(), s.m, s.n, s.batch, device_sm_count(), BigTile::BM, BigTile::BN);
}

template <class Cfg, class Epi>
void launch_cfg(const GemmShape& s, const ASource& a, const Epi& ep, cudaStream_t st) {
  const dim3 grid(ceil_div(s.n, Cfg::BN), ceil_div(s.m, Cfg::BM), s.batch);
  const bool pdl = pdl_enabled();
  auto kernel = pdl ? gemm_bf16_kernel<Cfg, Epi, true> : gemm_bf16_kernel<Cfg, Epi, false>;
  // > 48 KiB of dynamic shared memory, opted in per device (common.cuh).
  opt_in_smem(reinterpret_cast<const void*>(kernel), int(Cfg::kSmemBytes), "gemm_bf16_kernel");
  launch_kernel(kernel, grid, dim3(Cfg::kThreads), Cfg::kSmemBytes, st, pdl, "gemm_bf16_kernel", s, a, ep);
}

// ADRANK_CUDA_WGMMA (process-wide, read at first use; set_gemm_wgmma for the harness): 0 off, 1 by
// shape (plan_logic.h wgmma_takes), 2 every product over 64 rows ("force").
std::atomic<int>& wgmma_slot() {
  static std::atomic<int> on{[] {
    const char* v = std::getenv("ADRANK_CUDA_WGMMA");
    return !v ? 0 : std::string(v) == "1" ? 1 : std::string(v) == "force" ? 2 : 0;
  }()};
  return on;
}

// Per device: whether its code has the wgmma body. Probed by gemm_wgmma_available (a launch and a
// copy: never inside a capture); the launcher only reads what was probed.
std::mutex g_wgmma_mu;
std::map<int, bool> g_wgmma_probed;

bool wgmma_probed_here() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(g_wgmma_mu);
  auto it = g_wgmma_probed.find(dev);
  return it != g_wgmma_probed.end() && it->second;
}

// The wgmma kernel where plan_logic.h's wgmma_takes says so (more than 64 rows, a grid of 128×128
// tiles over at least half the SMs, unless forced), on a device probed to have it.
bool use_wgmma(const GemmShape& s) {
  const int mode = wgmma_slot().load(std::memory_order_relaxed);
  return mode != 0 && wgmma_takes(s.m, s.n, s.batch, device_sm_count(), mode == 2) && wgmma_probed_here();
}

// ADRANK_CUDA_WGMMA_TMA=1 (with ADRANK_CUDA_WGMMA; process-wide, read at first use): products whose
// A is plain rows take the bulk-tensor-copy kernel (gemm_wgmma.cuh gemm_wgmma_tma_kernel).
std::atomic<int>& wgmma_tma_slot() {
  static std::atomic<int> on{[] {
    const char* v = std::getenv("ADRANK_CUDA_WGMMA_TMA");
    return v && std::string(v) == "1" ? 1 : 0;
  }()};
  return on;
}

bool tma_fits(const GemmShape& s, const ASource& a) {
  return wgmma_tma_slot().load(std::memory_order_relaxed) && !a.rows0 && !a.seg1 && s.batch == 1;
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (only cudart is linked).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !p)
      throw std::runtime_error("gemm_bf16: cuTensorMapEncodeTiled is not available from the driver");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// A [rows, cols] bf16 matrix with leading dimension ld (elements), read in 64 × 128 boxes (64 along
// K: one 128-byte row of the box, swizzled as the wgmma descriptors expect), zeros past its edges.
CUtensorMap tile_map(const bf16* base, int64_t rows, int64_t cols, int64_t ld) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(ld) * sizeof(bf16)};
  const cuuint32_t box[2] = {cuuint32_t(wg::kBK), cuuint32_t(wg::kBM)};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<bf16*>(base), dims, strides, box, elem,
                                          CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw std::runtime_error("gemm_bf16: cuTensorMapEncodeTiled failed (" + std::to_string(int(r)) + ")");
  return map;
}

template <class Epi>
void launch_wgmma(const GemmShape& s, const ASource& a, const Epi& ep, cudaStream_t st) {
  static_assert(wg::kBM == wg::kBN, "one box shape serves A and W");
  if (tma_fits(s, a)) {
    auto kernel = wg::gemm_wgmma_tma_kernel<Epi>;
    opt_in_smem(reinterpret_cast<const void*>(kernel), int(wg::kTmaSmemBytes), "gemm_wgmma_tma_kernel");
    const CUtensorMap map_a = tile_map(a.seg0, s.m, s.k, a.ld0), map_w = tile_map(s.w, s.n, s.k, s.ldw);
    const dim3 grid(ceil_div(s.n, wg::kBN), ceil_div(s.m, wg::kBM), 1);
    kernel<<<grid, wg::kTmaThreads, wg::kTmaSmemBytes, st>>>(map_a, map_w, s, ep);
    CUDA_CHECK_LAUNCH("gemm_wgmma_tma_kernel");
    return;
  }
  auto kernel = wg::gemm_wgmma_kernel<Epi>;
  opt_in_smem(reinterpret_cast<const void*>(kernel), int(wg::kSmemBytes), "gemm_wgmma_kernel");
  const dim3 grid(ceil_div(s.n, wg::kBN), ceil_div(s.m, wg::kBM), s.batch);
  kernel<<<grid, wg::kThreads, wg::kSmemBytes, st>>>(s, a, ep);
  CUDA_CHECK_LAUNCH("gemm_wgmma_kernel");
}

template <class Epi>
void dispatch(const GemmShape& s, const ASource& a, const Epi& ep, cudaStream_t st) {
  check_shape(s, a);
  if (s.m == 0) return;
  if (use_wgmma(s))
    launch_wgmma(s, a, ep, st);
  else if (prefer_big(s))
    launch_cfg<BigTile>(s, a, ep, st);
  else
    launch_cfg<SmallTile>(s, a, ep, st);
}

}  // namespace

bool gemm_wgmma_available() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  {
    std::lock_guard<std::mutex> lock(g_wgmma_mu);
    auto it = g_wgmma_probed.find(dev);
    if (it != g_wgmma_probed.end()) return it->second;
  }
  // On a non-blocking stream of its own: another engine's streams may be capturing a graph
  // meanwhile, and work on the legacy stream would join (and break) such a capture.
  int* flag = nullptr;
  int host = 0;
  cudaStream_t st = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaError_t err = cudaMalloc(&flag, sizeof(int));
  if (err == cudaSuccess) {
    wg::wgmma_probe_kernel<<<1, 1, 0, st>>>(flag);
    err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, st);
    if (err == cudaSuccess) err = cudaStreamSynchronize(st);
    cudaFree(flag);
  }
  cudaStreamDestroy(st);
  CUDA_CHECK(err);
  std::lock_guard<std::mutex> lock(g_wgmma_mu);
  return g_wgmma_probed[dev] = host == 1;
}
bool gemm_wgmma_enabled() { return wgmma_slot().load(std::memory_order_relaxed) != 0; }
bool gemm_wgmma_tma_enabled() { return wgmma_tma_slot().load(std::memory_order_relaxed) != 0; }
void set_gemm_wgmma_tma(bool on) { wgmma_tma_slot().store(on ? 1 : 0, std::memory_order_relaxed); }
void set_gemm_wgmma(bool on, bool force) { wgmma_slot().store(on ? (force ? 2 : 1) : 0, std::memory_order_relaxed); }

TilePolicy gemm_tile_policy() { return TilePolicy(policy_slot().load(std::memory_order_relaxed)); }
void set_gemm_tile_policy(TilePolicy p) { policy_slot().store(int(p), std::memory_order_relaxed); }

// ---- launchers ------------------------------------------------------------------------------------

void gemm_bf16(const GemmShape& s, const ASource& a, const BiasActEpilogue<false>& ep, cudaStream_t st) { dispatch(s, a, ep, st); }
void gemm_bf16(const GemmShape& s, const ASource& a, const BiasActEpilogue<true>& ep, cudaStream_t st) { dispatch(s, a, ep, st); }
void gemm_bf16(const GemmShape& s, const ASource& a, const MaskProductEpilogue& ep, cudaStream_t st) { dispatch(s, a, ep, st); }
void gemm_bf16(const GemmShape& s, const ASource& a, const CrossEpilogue& ep, cudaStream_t st) { dispatch(s, a, ep, st); }

const char* gemm_bf16_config(const GemmShape& s) {
  return use_wgmma(s) ? (gemm_wgmma_tma_enabled() && s.batch == 1 ? "wgmma 128x128x64/4st (tma for plain A)" : "wgmma 128x128x64/4st")
         : prefer_big(s) ? "128x128x32/4st"
                         : "64x64x32/4st";
}

}  // namespace adrank::cuda
