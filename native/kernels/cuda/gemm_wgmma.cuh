// The Hopper path of gemm_bf16 (ADRANK_CUDA_WGMMA, sm_90a): the same contract as gemm_bf16.cuh
// (ASource with its gather and two segments, the epilogue functors, *m_dev, gridDim.z batches), on
// the warpgroup tensor-core instruction `wgmma.mma_async` instead of the per-warp `mma.sync`.
// Included by gemm_bf16.cu only.
//
// Block: 256 threads, two warpgroups; a 128 × 128 output tile, each warpgroup 64 rows × 128
// columns (m64n128k16, 64 fp32 accumulators per thread). K steps of 64: one 128-byte row of bf16
// per tile row, stored with the 128-byte swizzle the tensor cores read (16-byte chunk c of row r at
// chunk c ^ (r mod 8); each 8-row group is 1,024 bytes), so every operand is read from shared
// memory without bank conflicts and no ldmatrix is needed. Operands arrive by cp.async (not the
// bulk tensor copy: A's rows can be gathered through ASource::rows0, which a tensor map cannot
// express), kStages deep. After its copies land, each thread fences them into the async proxy
// (`fence.proxy.async.shared::cta`) before the barrier that lets the tensor cores read them.
//
// Pipeline per K step kt: wait for tile kt's copies; wait for this warpgroup's wgmma of step kt-1
// (so both warpgroups are done with its stage once the barrier passes); barrier; issue the four
// k16 wgmmas of step kt (asynchronous); then the copies of step kt + kStages - 1 into the stage
// step kt-1 used. The tensor cores work on step kt while the copies are issued and the next
// iteration waits.
//
// Compiled only for sm_90a (`__CUDA_ARCH_FEAT_SM90_ALL`); elsewhere the kernel body is empty and the
// launcher never chooses it: `wgmma_probe_kernel` says, per device, whether the code the device
// runs has the body (gemm_bf16.cu `gemm_wgmma_available`).
#pragma once

#include <cuda.h>  // CUtensorMap (the type only: the tensor maps are encoded through the runtime's driver entry point)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/gemm_bf16.cuh"
#include "kernels/cuda/gemm_device.cuh"

namespace adrank::cuda::wg {

using namespace gemm_detail;

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ADRANK_WGMMA_BODY 1
#else
#define ADRANK_WGMMA_BODY 0
#endif

constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 4, kThreads = 256;
constexpr int kTileBytesA = kBM * kBK * 2;  // 16 KiB per stage
constexpr int kTileBytesB = kBN * kBK * 2;  // 16 KiB per stage
constexpr int kChunks = kBK / 8;             // 16-byte chunks per tile row
constexpr int kAChunks = kBM * kChunks / kThreads, kBChunks = kBN * kChunks / kThreads;
// the stages plus up to 1 KiB to align the first one to the swizzle's 1,024-byte period
constexpr size_t kSmemBytes = size_t(kStages) * (kTileBytesA + kTileBytesB) + 1024;
static_assert(kBM * kChunks % kThreads == 0 && kBN * kChunks % kThreads == 0, "chunks per thread");

// Byte offset of 16-byte chunk `c` of row `r` in a 128-byte-swizzled tile.
__device__ __forceinline__ uint32_t swizzled(int r, int c) { return uint32_t(r) * 128u + (uint32_t(c ^ (r & 7)) << 4); }

// Shared-memory matrix descriptor (PTX "Matrix Descriptor Format"): start address >> 4 in bits
// 0-13, leading byte offset >> 4 in 16-29 (unused by a K-major swizzled operand whose K step fits
// the 128-byte row; 16 bytes, as is customary), stride byte offset >> 4 in 32-45 (1,024: from one
// 8-row group to the next), base offset 0 (stages are 1,024-aligned), layout 1 = 128-byte swizzle
// in bits 62-63.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(16 >> 4) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

__device__ __forceinline__ void fence_proxy_async() {
#if ADRANK_WGMMA_BODY
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_fence() {
#if ADRANK_WGMMA_BODY
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if ADRANK_WGMMA_BODY
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if ADRANK_WGMMA_BODY
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Keeps the compiler from moving accumulator reads or writes across an asynchronous wgmma.
__device__ __forceinline__ void fence_accumulators(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d += A(64 × 16, from da) · B(16 × 128, from db), both K-major bf16, fp32 accumulate.
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db) {
#if ADRANK_WGMMA_BODY
#define ADRANK_ACC8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : ADRANK_ACC8(0), ADRANK_ACC8(8), ADRANK_ACC8(16), ADRANK_ACC8(24), ADRANK_ACC8(32), ADRANK_ACC8(40), ADRANK_ACC8(48),
        ADRANK_ACC8(56)
      : "l"(da), "l"(db), "r"(1));
#undef ADRANK_ACC8
#else
  (void)d, (void)da, (void)db;
#endif
}

// One K step of a warpgroup: its 64 rows of the A stage at a_addr times the 128 × 64 W stage at
// b_addr (both 128-byte swizzled), four k16 wgmmas, committed as one group (not waited for).
__device__ __forceinline__ void wgmma_k_step(float (&acc)[64], uint32_t a_addr, uint32_t b_addr) {
  const uint64_t da = smem_desc(a_addr), db = smem_desc(b_addr);
  fence_accumulators(acc);
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kBK / 16; ++ks)  // 16 bf16 = 32 bytes further along the (swizzled) row
    wgmma_m64n128k16(acc, da + uint64_t(ks * 32 >> 4), db + uint64_t(ks * 32 >> 4));
  wgmma_commit();
}

// The epilogue of a warpgroup whose 64 rows start at row0 and 128 columns at col0. Accumulator
// layout of m64nNk16: warp w of the warpgroup holds rows 16w .. 16w+15; acc[4j], acc[4j+1] at
// (lane/4, 8j + 2·(lane%4)), acc[4j+2], acc[4j+3] eight rows down. Rows >= m, columns >= n: none.
template <class Epi>
__device__ __forceinline__ void store_accumulators(const Epi& epi, int z, int row0, int col0, int m, int n, const float (&acc)[64]) {
  const int lane = threadIdx.x & 31, row = row0 + ((threadIdx.x >> 5) & 3) * 16 + (lane >> 2);
#pragma unroll
  for (int j = 0; j < kBN / 8; ++j) {
    const int col = col0 + j * 8 + (lane & 3) * 2;
    if (col < n) {
      if (row < m) epi(z, row, col, acc[4 * j], acc[4 * j + 1]);
      if (row + 8 < m) epi(z, row + 8, col, acc[4 * j + 2], acc[4 * j + 3]);
    }
  }
}

// Writes 1 to *flag when the code this device runs has the wgmma body.
__global__ void wgmma_probe_kernel(int* flag) { *flag = ADRANK_WGMMA_BODY; }

template <class Epi>
__global__ void __launch_bounds__(kThreads, 1) gemm_wgmma_kernel(GemmShape s, ASource a, Epi epi) {
#if ADRANK_WGMMA_BODY
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t base = (raw + 1023u) & ~1023u;  // stage 0 of A; the swizzle repeats every 1,024 bytes
  unsigned char* smem = smem_raw + (base - raw);
  const uint32_t a_base = base, b_base = base + kStages * kTileBytesA;

  const int bm0 = blockIdx.y * kBM, bn0 = blockIdx.x * kBN, z = blockIdx.z;
  const int m = s.m_dev ? min(s.m, *s.m_dev) : s.m;
  if (bm0 >= m) return;  // whole block outside the rows present (uniform, before any barrier)
  const int tid = threadIdx.x, wg = tid >> 7;
  const int ktiles = (s.k + kBK - 1) / kBK;
  const int k0 = a.seg1 ? a.k0 : s.k;

  // Per-thread copies, fixed across K steps: A and W rows, the chunk column, the swizzled offset.
  ARow a_row[kAChunks];
  int a_kc[kAChunks];
  uint32_t a_dst[kAChunks];
  bool a_ok[kAChunks];
#pragma unroll
  for (int c = 0; c < kAChunks; ++c) {
    const int chunk = tid + c * kThreads, r = chunk / kChunks, cc = chunk % kChunks;
    a_kc[c] = cc * 8;
    a_dst[c] = swizzled(r, cc);
    a_ok[c] = bm0 + r < m;
    a_row[c].init(a, z, bm0 + r, a_ok[c]);
  }
  const bf16* b_src[kBChunks];
  int b_kc[kBChunks];
  uint32_t b_dst[kBChunks];
  bool b_ok[kBChunks];
#pragma unroll
  for (int c = 0; c < kBChunks; ++c) {
    const int chunk = tid + c * kThreads, r = chunk / kChunks, cc = chunk % kChunks;
    b_kc[c] = cc * 8;
    b_dst[c] = swizzled(r, cc);
    b_ok[c] = bn0 + r < s.n;
    b_src[c] = w_row(s, z, bn0 + r, b_ok[c]);
  }
  auto load_tile = [&](int stage, int kt) {
    unsigned char* sa = smem + stage * kTileBytesA;
    unsigned char* sb = smem + kStages * kTileBytesA + stage * kTileBytesB;
#pragma unroll
    for (int c = 0; c < kAChunks; ++c) {
      const int kk = kt * kBK + a_kc[c];
      const bool ok = a_ok[c] && kk < s.k;  // columns past K are zero-filled
      cp_async16(sa + a_dst[c], ok ? a_row[c].at(kk, k0) : a.seg0, ok ? 16 : 0);
    }
#pragma unroll
    for (int c = 0; c < kBChunks; ++c) {
      const int kk = kt * kBK + b_kc[c];
      const bool ok = b_ok[c] && kk < s.k;
      cp_async16(sb + b_dst[c], ok ? b_src[c] + kk : s.w, ok ? 16 : 0);
    }
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;

#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < ktiles) load_tile(st, st);
    cp_async_commit();  // empty groups too, so the wait counts below hold
  }

  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();  // this thread's copies of step kt have landed
    fence_proxy_async();           // ... and are visible to the tensor cores
    wgmma_wait<0>();               // this warpgroup's wgmmas of step kt-1 are done
    fence_accumulators(acc);
    __syncthreads();               // everyone's copies of step kt; step kt-1's stage is free
    const int stage = kt % kStages;
    wgmma_k_step(acc, a_base + stage * kTileBytesA + wg * 64 * 128, b_base + stage * kTileBytesB);
    const int pf = kt + kStages - 1;
    if (pf < ktiles) load_tile(pf % kStages, pf);
    cp_async_commit();
  }
  wgmma_wait<0>();
  fence_accumulators(acc);
  cp_async_wait<0>();

  store_accumulators(epi, z, bm0 + wg * 64, bn0, m, s.n, acc);
#else
  (void)s, (void)a, (void)epi;
#endif
}

// ---- the bulk-tensor-copy variant (ADRANK_CUDA_WGMMA_TMA) --------------------------------------
// For products whose A is plain rows (no gather, one segment, one batch: the cross layers and the
// MLP; the gathered first MaskNet layer and the batched ones keep the cp.async kernel above). One
// producer warp issues `cp.async.bulk.tensor` copies of A's and W's 128 × 64 tiles (the tensor maps
// carry the 128-byte swizzle, the same layout as `swizzled`), each stage guarded by two mbarriers:
// `full` (the producer arms it with the stage's byte count; the copy engine completes it) and
// `empty` (each consumer warpgroup arrives once its wgmmas of that stage are done: a step later, so
// one step's wgmmas are always in flight). Two consumer
// warpgroups (warps 4-11, so each starts at a warp index divisible by 4) run the same wgmmas and
// epilogue as the kernel above. Block: 384 threads, warpgroup 0 the producer (one thread issues).
constexpr int kTmaThreads = 384;
constexpr int kTmaStages = 4;
constexpr size_t kTmaSmemBytes = size_t(kTmaStages) * (kTileBytesA + kTileBytesB) + 1024 + 2 * kTmaStages * sizeof(uint64_t);

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
#if ADRANK_WGMMA_BODY
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if ADRANK_WGMMA_BODY
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if ADRANK_WGMMA_BODY
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Whether the phase with this parity has completed (a fresh barrier: parity 1 at once); each try
// waits a little in hardware before it says no.
__device__ __forceinline__ bool mbar_try_wait(uint32_t bar, uint32_t parity) {
#if ADRANK_WGMMA_BODY
  uint32_t done = 0;
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n"
      "}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
#else
  return true;
#endif
}
// Returns once the phase has completed. A phase that never completes (a wrong byte count or parity:
// this kernel has not run on a GPU yet) traps after ~2^24 tries instead of hanging the stream, so
// a check run loses its step, not its time limit.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  for (uint32_t tries = 0; !mbar_try_wait(bar, parity); ++tries)
    if (tries == (1u << 24)) __trap();
}
// One 2-D tile (x = the K element, y = the row) into shared memory, completing `bar` by its bytes.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int x, int y, uint32_t bar) {
#if ADRANK_WGMMA_BODY
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(bar)
      : "memory");
#endif
}

template <class Epi>
__global__ void __launch_bounds__(kTmaThreads, 1)
    gemm_wgmma_tma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_w, GemmShape s, Epi epi) {
#if ADRANK_WGMMA_BODY
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t base = (raw + 1023u) & ~1023u;
  const uint32_t a_base = base, b_base = base + kTmaStages * kTileBytesA;
  const uint32_t bars = b_base + kTmaStages * kTileBytesB;  // full[kTmaStages], then empty[kTmaStages]
  const auto full = [&](int st) { return bars + uint32_t(st) * 8u; };
  const auto empty = [&](int st) { return bars + uint32_t(kTmaStages + st) * 8u; };

  const int bm0 = blockIdx.y * kBM, bn0 = blockIdx.x * kBN;
  const int m = s.m_dev ? min(s.m, *s.m_dev) : s.m;
  if (bm0 >= m) return;  // uniform, before any barrier
  const int tid = threadIdx.x, wg = tid >> 7;
  const int ktiles = (s.k + kBK - 1) / kBK;

  if (tid == 0) {
    for (int st = 0; st < kTmaStages; ++st) {
      mbar_init(full(st), 1);   // the producer's arrive (plus the copies' bytes)
      mbar_init(empty(st), 2);  // one arrive per consumer warpgroup
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    // producer: one thread walks the K steps, waiting for each stage to be released
    if (tid == 0) {
      for (int kt = 0; kt < ktiles; ++kt) {
        const int st = kt % kTmaStages;
        mbar_wait(empty(st), ((kt / kTmaStages) & 1) ^ 1);
        mbar_arrive_expect_tx(full(st), uint32_t(kTileBytesA + kTileBytesB));
        tma_load_2d(a_base + st * kTileBytesA, &map_a, kt * kBK, bm0, full(st));
        tma_load_2d(b_base + st * kTileBytesB, &map_w, kt * kBK, bn0, full(st));
      }
    }
    return;  // the producer warpgroup takes part in no later barrier
  }

  // consumers: warpgroup c = wg - 1 owns rows c·64 .. c·64 + 63 of the tile
  const int c = wg - 1;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;
  for (int kt = 0; kt < ktiles; ++kt) {
    const int st = kt % kTmaStages;
    mbar_wait(full(st), (kt / kTmaStages) & 1);
    wgmma_k_step(acc, a_base + st * kTileBytesA + c * 64 * 128, b_base + st * kTileBytesB);
    // step kt's wgmmas stay in flight while step kt-1's are waited for: then kt-1's stage is read
    // and goes back to the producer, and the tensor cores never drain between K steps
    wgmma_wait<1>();
    fence_accumulators(acc);
    if (kt > 0 && (tid & 127) == 0) mbar_arrive(empty((kt - 1) % kTmaStages));
  }
  wgmma_wait<0>();
  fence_accumulators(acc);

  store_accumulators(epi, 0, bm0 + c * 64, bn0, m, s.n, acc);
#else
  (void)map_a, (void)map_w, (void)s, (void)epi;
#endif
}

}  // namespace adrank::cuda::wg
