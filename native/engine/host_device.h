// ADRANK_HOST_DEVICE: a function compiled for the host and, under nvcc, for the device too, so the
// CPU and CUDA backends (and the host tests of device logic) run one definition.
#pragma once

#if defined(__CUDACC__)
#define ADRANK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define ADRANK_HOST_DEVICE inline
#endif
