// Parses and validates one feature bundle (layout in request.h) against the loaded model's dims.
// The Request points into the caller's buffer, which must outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/model.h"
#include "engine/request.h"

namespace adrank {

// Funnel limits (docs/funnel.md "Limits").
constexpr uint32_t kMaxK = 10000;
constexpr uint32_t kMaxCandidates = 100000;
constexpr uint32_t kMaxRetrieve = 10000;

template <typename T>
struct Span {
  const T* data = nullptr;
  size_t size = 0;
  const T& operator[](size_t i) const { return data[i]; }
  const T* begin() const { return data; }
  const T* end() const { return data + size; }
};

enum class Op { kRank, kRetrieve, kRetrieveAndRank, kExplain };
const char* op_name(Op op);

struct Request {
  uint32_t surface = 0, k = 0, cap = 0, mode = kModeGlobal, partitions = 1, flags = 0, retrieve_count = 0;
  uint32_t candidate_quota = 0;  // RetrieveAndRank: most caller candidates ranked, 0 = all
  float reserve = 0;
  uint64_t key = 0;  // pacing key
  Span<float> user_dense, user_embedding, task_weights;
  Span<uint32_t> targeting;
  std::vector<Span<int64_t>> user_sparse;  // per field, config order
  Span<int64_t> seq_items;
  Span<uint32_t> seq_actions;
  // Rank: the candidates; RetrieveAndRank: the caller's candidates (the second source).
  Span<int64_t> candidates, excluded_advertisers, excluded_ads;

  bool price() const { return (flags & kFlagPrice) != 0; }
  bool weights_override() const { return (flags & kFlagTaskWeights) != 0; }
  bool local() const { return mode == kModeLocal; }
};

// Byte length of a bundle for these header counts under `dims` (mirrors featureBundleSize in
// src/features/feature-bundle.ts).
size_t feature_bundle_size(const ModelDims& dims, size_t num_user_sparse_ids, size_t seq_len, size_t candidates,
                           size_t excluded_advertisers, size_t excluded_ads);

// Throws std::runtime_error "expected <what> for <field>, got <value>".
Request parse_request(const uint8_t* data, size_t len, const ModelDims& dims, Op op);

}  // namespace adrank
