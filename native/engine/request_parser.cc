#include "engine/request_parser.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace adrank {

namespace {

template <typename V>
[[noreturn]] void bad(const std::string& field, const std::string& what, const V& got) {
  std::ostringstream os;
  os << "expected " << what << " for " << field << ", got " << got;
  throw std::runtime_error(os.str());
}

std::string hex(uint32_t v) {
  std::ostringstream os;
  os << "0x" << std::hex << v;
  return os.str();
}

void check_finite(const char* field, Span<float> s) {
  for (size_t i = 0; i < s.size; i++)
    if (!std::isfinite(s[i])) bad(std::string(field) + "[" + std::to_string(i) + "]", "a finite number", s[i]);
}

// Walks the sections in order; each starts on an 8-byte boundary.
class Cursor {
 public:
  explicit Cursor(const uint8_t* base) : base_(base) {}
  template <typename T>
  Span<T> take(size_t n, bool align = true) {
    Span<T> s{reinterpret_cast<const T*>(base_ + off_), n};
    off_ += sizeof(T) * n;
    if (align) off_ = align8(off_);
    return s;
  }
  void align() { off_ = align8(off_); }

 private:
  const uint8_t* base_;
  size_t off_ = kHeaderWords * 4 + 8;
};

}  // namespace

const char* op_name(Op op) {
  switch (op) {
    case Op::kRank: return "rank";
    case Op::kRetrieve: return "retrieve";
    case Op::kRetrieveAndRank: return "retrieveAndRank";
    case Op::kExplain: return "explain";
  }
  return "?";
}

size_t feature_bundle_size(const ModelDims& d, size_t sparse_ids, size_t seq_len, size_t candidates, size_t excl_adv,
                           size_t excl_ads) {
  size_t n = kHeaderWords * 4 + 8;
  n = align8(n + 4 * size_t(d.user_dense));
  n = align8(n + 4 * size_t(d.user_embedding_dim));
  n = align8(n + 4 * size_t(d.tasks));
  n = align8(n + 4 * size_t(d.targeting_dims));
  n = align8(n + 4 * d.user_sparse.size());
  n = align8(n + 8 * sparse_ids);
  n = align8(n + 8 * seq_len);
  n = align8(n + 4 * seq_len);
  n = align8(n + 8 * candidates);
  n = align8(n + 8 * excl_adv);
  n = align8(n + 8 * excl_ads);
  return n;
}

Request parse_request(const uint8_t* data, size_t len, const ModelDims& d, Op op) {
  constexpr size_t kFixed = kHeaderWords * 4 + 8;
  if (data == nullptr || len < kFixed) bad("feature bundle length", "at least " + std::to_string(kFixed) + " bytes", len);
  if (reinterpret_cast<uintptr_t>(data) % 8 != 0) bad("feature bundle address", "8-byte alignment", reinterpret_cast<uintptr_t>(data) % 8);
  uint32_t h[kHeaderWords];
  std::memcpy(h, data, sizeof h);
  if (h[kMagic] != kRequestMagic) bad("feature bundle magic", hex(kRequestMagic) + " (\"ADRQ\")", hex(h[kMagic]));
  if (h[kLayoutVersion] != kRequestLayoutVersion) bad("feature bundle layout version", std::to_string(kRequestLayoutVersion), h[kLayoutVersion]);
  if (h[kNumCandidates] > kMaxCandidates) bad("candidates", "at most " + std::to_string(kMaxCandidates) + " ids", h[kNumCandidates]);

  const size_t want = feature_bundle_size(d, h[kNumUserSparseIds], h[kSeqLen], h[kNumCandidates], h[kNumExcludedAdvertisers],
                                          h[kNumExcludedAds]);
  if (len != want) bad("feature bundle length", std::to_string(want) + " bytes (from the model dims and header counts)", len);

  Request r;
  r.surface = h[kSurface];
  r.k = h[kK];
  r.cap = h[kCap];
  r.mode = h[kMode];
  r.partitions = h[kPartitions];
  r.flags = h[kFlags];
  r.retrieve_count = h[kRetrieveCount];
  r.candidate_quota = h[kCandidateQuota];
  std::memcpy(&r.reserve, &h[kReserve], 4);
  std::memcpy(&r.key, data + kHeaderWords * 4, 8);

  if (r.surface >= uint32_t(d.surfaces)) bad("surface", "a surface index below " + std::to_string(d.surfaces), r.surface);
  if (r.k > kMaxK) bad("k", "at most " + std::to_string(kMaxK), r.k);
  if (r.mode != kModeGlobal && r.mode != kModeLocal) bad("mode", "0 (global) or 1 (local)", r.mode);
  if (r.mode == kModeLocal && r.partitions < 1) bad("partitions", "at least 1 in local mode", r.partitions);
  if (r.flags & ~uint32_t(kFlagTaskWeights | kFlagPrice)) bad("flags", "only bits 0 (task weights) and 1 (price)", hex(r.flags));
  if (r.retrieve_count > kMaxRetrieve) bad("retrieveCount", "at most " + std::to_string(kMaxRetrieve), r.retrieve_count);
  if (!std::isfinite(r.reserve) || r.reserve < 0) bad("reserve", "a finite non-negative price", r.reserve);
  if (h[kSeqLen] > uint32_t(d.seq_max_len)) bad("seqItems", "at most " + std::to_string(d.seq_max_len) + " engagements (max_len)", h[kSeqLen]);
  if (op == Op::kRetrieve && h[kNumCandidates] != 0)
    bad("candidates", std::string("no candidate ids for ") + op_name(op), h[kNumCandidates]);
  if (op != Op::kRetrieveAndRank && op != Op::kExplain && r.candidate_quota != 0)
    bad("candidateQuota", std::string("0 for ") + op_name(op), r.candidate_quota);

  Cursor c(data);
  r.user_dense = c.take<float>(d.user_dense);
  r.user_embedding = c.take<float>(d.user_embedding_dim);
  r.task_weights = c.take<float>(d.tasks);
  r.targeting = c.take<uint32_t>(d.targeting_dims);
  // Copied once: the caller's buffer may change under us (JS owns it), so the lengths that are
  // summed and checked must be the ones used.
  const Span<uint32_t> lens_in = c.take<uint32_t>(d.user_sparse.size());
  const std::vector<uint32_t> lens(lens_in.begin(), lens_in.end());
  uint64_t total = 0;
  for (uint32_t l : lens) total += l;
  if (total != h[kNumUserSparseIds])
    bad("userSparse", "id list lengths summing to the header's " + std::to_string(h[kNumUserSparseIds]) + " ids", total);
  for (uint32_t l : lens) r.user_sparse.push_back(c.take<int64_t>(l, false));
  c.align();
  r.seq_items = c.take<int64_t>(h[kSeqLen]);
  r.seq_actions = c.take<uint32_t>(h[kSeqLen]);
  r.candidates = c.take<int64_t>(h[kNumCandidates]);
  r.excluded_advertisers = c.take<int64_t>(h[kNumExcludedAdvertisers]);
  r.excluded_ads = c.take<int64_t>(h[kNumExcludedAds]);

  check_finite("userDense", r.user_dense);
  check_finite("userEmbedding", r.user_embedding);
  if (r.weights_override()) check_finite("taskWeights", r.task_weights);
  for (size_t i = 0; i < r.seq_actions.size; i++)
    if (r.seq_actions[i] >= uint32_t(d.seq_actions))
      bad("seqActions[" + std::to_string(i) + "]", "an action below " + std::to_string(d.seq_actions), r.seq_actions[i]);
  return r;
}

}  // namespace adrank
