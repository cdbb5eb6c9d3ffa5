// The feature bundle: one request's features packed by the TypeScript front end
// (src/features/feature-bundle.ts) into one contiguous little-endian buffer, so the request moves
// to the device in one copy. This header and that file describe the same layout; keep them together.
//
//   header   u32[16]  (64 bytes), see HeaderField
//   key      u64      request key for the pacing hash (FNV-1a 64 of the request id's UTF-8 bytes)
//   then these sections, in this order, each starting on an 8-byte boundary:
//   f32 user_dense[n_ud]            raw values (z-normalised by the engine)
//   f32 user_embedding[d_ue]
//   f32 task_weights[T]             used when FLAG_TASK_WEIGHTS is set, else the surface defaults
//   u32 targeting[n_targeting_dims] value index per dimension (bit in ads.targeting); >= 64 = unknown
//   u32 user_sparse_len[F_user]     ids per user sparse field, config order
//   i64 user_sparse_ids[sum(len)]   concatenated in field order
//   i64 seq_items[n]                engagement sequence, most recent first, n <= max_len
//   u32 seq_actions[n]
//   i64 candidates[num_candidates]  Rank: the candidates. RetrieveAndRank: the caller's candidates, the
//                                   second source blended with retrieval (docs/funnel.md "Blended
//                                   retrieval sources"); 0 for Retrieve
//   i64 excluded_advertisers[...]
//   i64 excluded_ads[...]
//
// Model-dependent counts (n_ud, d_ue, T, targeting dims, user sparse fields) come from the loaded
// model; the engine recomputes the total size and refuses a buffer whose length differs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace adrank {

constexpr uint32_t kRequestMagic = 0x51524441u;  // "ADRQ"
constexpr uint32_t kRequestLayoutVersion = 1;

enum HeaderField : int {
  kMagic = 0,
  kLayoutVersion = 1,
  kSurface = 2,
  kK = 3,                    // winners wanted
  kCap = 4,                  // per-advertiser cap, 0 = none
  kMode = 5,                 // 0 = global, 1 = local
  kPartitions = 6,           // P for local mode
  kFlags = 7,                // RequestFlags
  kRetrieveCount = 8,        // RetrieveAndRank: R, ads retrieved before ranking
  kSeqLen = 9,               // n
  kNumCandidates = 10,
  kNumExcludedAdvertisers = 11,
  kNumExcludedAds = 12,
  kNumUserSparseIds = 13,
  kReserve = 14,             // f32 bits: auction reserve price in bid units
  kCandidateQuota = 15,      // RetrieveAndRank: most caller candidates ranked, 0 = all; 0 for Rank / Retrieve
  kHeaderWords = 16,
};

enum RequestFlags : uint32_t {
  kFlagTaskWeights = 1u << 0,  // task_weights section overrides utility.task_weights[surface]
  kFlagPrice = 1u << 1,        // compute GSP prices (always on for RetrieveAndRank)
};

enum RankingMode : uint32_t { kModeGlobal = 0, kModeLocal = 1 };

// Byte offset rounded up to the next multiple of 8.
inline size_t align8(size_t n) { return (n + 7) & ~size_t(7); }

}  // namespace adrank
