// Shared helpers for the CUDA kernels and backend: error checks that throw (never abort), NVTX
// ranges named after the pipeline stages, small device utilities.
//
// Honesty note: everything under native/kernels/cuda was written and compiled (for sm_80, sm_89,
// sm_90a and PTX compute_90) without access to a GPU. None of it has run yet; see docs/cuda.md.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "engine/hash.h"

namespace adrank::cuda {

// A CUDA error as a C++ exception carrying file:line, the error name and its description.
class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const char* what, const char* file, int line)
      : std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + what + " failed: " +
                           cudaGetErrorName(code) + " (" + cudaGetErrorString(code) + ")"),
        code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

inline void check(cudaError_t code, const char* what, const char* file, int line) {
  if (code != cudaSuccess) throw CudaError(code, what, file, line);
}

}  // namespace adrank::cuda

// CUDA_CHECK(cudaMalloc(...)): throws adrank::cuda::CudaError on failure.
#define CUDA_CHECK(expr) ::adrank::cuda::check((expr), #expr, __FILE__, __LINE__)
// After a <<<>>> launch: catches bad configurations (and, asynchronously, earlier faults).
// cudaGetLastError also clears the sticky-free error so the next request is not blamed.
#define CUDA_CHECK_LAUNCH(name) ::adrank::cuda::check(cudaGetLastError(), "launch " name, __FILE__, __LINE__)

namespace adrank::cuda {

// Records a stage mark on `st`. While `st` is being captured the record becomes an event node of the
// graph (cudaEventRecordExternal), so graph replays time their stages too; outside a capture that
// flag is invalid (cudaErrorIllegalState, seen on the first H200 run), so a plain record is used.
inline void record_mark(cudaEvent_t e, cudaStream_t st) {
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(st, &capturing), "cudaStreamIsCapturing", __FILE__, __LINE__);
  // Any capture state but none (active or already invalidated) takes the capture form: an
  // invalidated capture then fails here, and the capture is abandoned, instead of a plain record
  // going into the broken capture.
  check(capturing != cudaStreamCaptureStatusNone ? cudaEventRecordWithFlags(e, st, cudaEventRecordExternal) : cudaEventRecord(e, st),
        "cudaEventRecord (stage mark)", __FILE__, __LINE__);
}

// The most dynamic shared memory one block may opt in to on the current device (227 KiB on
// sm_90, 163 KiB on sm_80, 99 KiB on sm_89).
inline int max_smem_optin() {
  int dev = 0, bytes = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", __FILE__, __LINE__);
  check(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute", __FILE__, __LINE__);
  return bytes;
}

// The current device's multiprocessor count (132 on an H100 SXM or H200, 108 on an A100, 58 on an
// L40S, 114 on an H100 PCIe), read once per device: grid sizes scale with it, never with a constant.
inline int device_sm_count() {
  static std::mutex mu;
  static std::map<int, int> known;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", __FILE__, __LINE__);
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find(dev);
  if (it != known.end()) return it->second;
  int v = 0;
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute (SM count)", __FILE__, __LINE__);
  known[dev] = v < 1 ? 1 : v;
  return known[dev];
}

// Programmatic dependent launch (ADRANK_CUDA_PDL=1, sm_90 and later; process-wide, read once):
// the GEMMs and the request side's kernels are launched as programmatic dependents of the kernel
// before them (cudaLaunchKernelEx with programmatic stream serialization; kept as programmatic
// edges in a captured graph), so a launch overlaps the tail of the kernel before it.
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("ADRANK_CUDA_PDL");
    if (!v || std::string(v) != "1") return false;
    int dev = 0, major = 0;
    return cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
           major >= 9;
  }();
  return on;
}

// In a kernel launched as a programmatic dependent: wait for the grids it depends on (complete, their
// writes visible) / let the next grid be scheduled. No-ops when the grid was launched without the
// attribute, and compiled out below sm_90. A kernel must not read what an earlier kernel writes
// before pdl_wait().
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Both at once, first thing: for a kernel launched as a programmatic dependent that reads what the
// kernel before it wrote from its first instruction (the request side's small kernels).
__device__ __forceinline__ void pdl_begin() {
  pdl_wait();
  pdl_launch_dependents();
}

// kernel<<<grid, block, smem, st>>>(args...), or with pdl as a programmatic dependent of the
// kernel before it on `st`; checked either way (throws CudaError naming `name`).
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, bool pdl, const char* name,
                   Args&&... args) {
  if (pdl) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), name, __FILE__, __LINE__);
  } else {
    kernel<<<grid, block, smem, st>>>(std::forward<Args>(args)...);
  }
  check(cudaGetLastError(), name, __FILE__, __LINE__);
}

// Opts `kernel` in to `bytes` of dynamic shared memory on the current device. The attribute is per
// device, so this remembers the largest value set per (kernel, device) rather than running once per
// process. Not a stream operation: call it before any graph capture (the backend warms up first).
inline void opt_in_smem(const void* kernel, int bytes, const char* name) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> done;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", __FILE__, __LINE__);
  std::lock_guard<std::mutex> lock(mu);
  int& have = done[{kernel, dev}];
  if (have >= bytes) return;
  if (bytes > max_smem_optin())
    throw std::invalid_argument(std::string(name) + ": needs " + std::to_string(bytes) + " bytes of shared memory, the device allows " +
                                std::to_string(max_smem_optin()));
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), name, __FILE__, __LINE__);
  have = bytes;
}

// Scoped NVTX range. Stage names used across the pipeline (docs/design.md §6): decode, bundle, h2d, user,
// gather, masknet, dcn, mlp, select, d2h. Host-side ranges: they bracket the enqueue, and with
// `nsys --cuda-graph-trace=node` the kernels launched inside them are attributed to the range.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

namespace stage {
constexpr const char* kDecode = "decode";
constexpr const char* kBundle = "bundle";
constexpr const char* kH2D = "h2d";
constexpr const char* kUser = "user";
constexpr const char* kGather = "gather";
constexpr const char* kMaskNet = "masknet";
constexpr const char* kDcn = "dcn";
constexpr const char* kMlp = "mlp";
constexpr const char* kSelect = "select";
constexpr const char* kD2H = "d2h";
}  // namespace stage

inline constexpr int ceil_div(int64_t a, int64_t b) { return int((a + b - 1) / b); }
inline constexpr int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Carves one preallocated workspace into 256-byte-aligned arrays. With base = null it only adds up
// the size, so the same carving code both sizes and lays out a workspace.
struct Carver {
  char* base;
  size_t off = 0;
  template <class T>
  T* take(size_t count) {
    T* p = base ? reinterpret_cast<T*>(base + off) : nullptr;
    off += round_up(int64_t(count * sizeof(T)), 256);
    return p;
  }
};

// Grid size for a grid-stride loop over n items with `threads` per block, capped.
inline int grid_for(int64_t n, int threads, int cap = 65535) {
  int64_t g = (n + threads - 1) / threads;
  if (g < 1) g = 1;
  return int(g > cap ? cap : g);
}

// ---- device utilities ----------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum; `scratch` holds >= 32 floats; every thread gets the result. Calls __syncthreads.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(r);
}

// splitmix64 (the pacing hash, and the device id tables' hash) and the pacing test: the CPU
// backend's own definitions (engine/hash.h), compiled for the device too.
using ::adrank::pacing_pass;
using ::adrank::splitmix64;

}  // namespace adrank::cuda
