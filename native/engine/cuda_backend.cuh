// The CUDA backend's entry points, as plain C++ (no CUDA headers), so the engine and the addon can
// include this from .cc files compiled by the host compiler. Only defined when the addon is built
// with ADRANK_WITH_CUDA=1 (cuda_backend.cu).
//
// What has run on a GPU and what is only compiled: docs/cuda.md "What is verified".
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace adrank {
class Backend;
class Model;
class AdStateTable;
namespace cpu {
class ThreadPool;
}
}  // namespace adrank

namespace adrank::cuda {

// Usable devices for capabilities(): devices of compute capability 9.0 (the build carries sm_90a
// code only). 0 with *reason set when none (driver missing, no device, wrong architecture).
int cuda_device_count(std::string* reason);

// The backend itself is created through adrank::make_cuda_backend (engine/backend.h), which
// cuda_backend.cu defines when ADRANK_WITH_CUDA is set: it copies the model's tables and weights to
// the device (bf16 where they are GEMM operands), builds the id hash tables and allocates the stream
// pool; it throws std::runtime_error (CUDA errors carry file:line and the CUDA error name). The CPU
// thread pool is only used by explain(), which runs on the CPU backend.

// Live ad state → device mirror. rows = null: the whole table; else only those rows. Synchronous:
// later requests see the update. Until this is called once, every request re-uploads the whole
// table (correct, slow for large corpora). `backend` must come from make_cuda_backend.
void cuda_backend_sync_ad_state(Backend& backend, const AdStateTable& state, const int32_t* rows, size_t n);

}  // namespace adrank::cuda
