// The hashes both backends share (docs/funnel.md "Pacing hash"): splitmix64, which also places ids
// in the id → row tables (engine/id_map.h on the host, kernels/cuda on the device), and the pacing
// test. One definition, compiled for the host and, under nvcc, for the device too, so the CPU and
// CUDA backends pace exactly the same ads.
#pragma once

#include <cstdint>

#include "engine/host_device.h"

namespace adrank {

// splitmix64 as documented in docs/funnel.md.
ADRANK_HOST_DEVICE uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  uint64_t z = x;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The ad participates iff ((splitmix64(key ^ ad_id) >> 11) · 2^-53) < rate, in double.
ADRANK_HOST_DEVICE bool pacing_pass(uint64_t key, int64_t ad_id, float rate) {
  const uint64_t h = splitmix64(key ^ uint64_t(ad_id));
  const double u = double(h >> 11) * (1.0 / 9007199254740992.0);
  return u < double(rate);
}

}  // namespace adrank
