// The engine RPCs' wire format, read and written in native code (docs/wire.md):
//   parse_wire      request bytes → WireMessage, one pass, protobuf semantics as protobufjs applies
//                   them (scalars: last one wins; repeated fields, packed or not: appended;
//                   sub-messages: merged; map entries: the last one per key wins; unknown fields
//                   skipped, groups included);
//   prepare_wire    WireMessage → the feature bundle (engine/request.h), with the checks of
//                   src/handlers/validate.ts in the same order, so a refusal names the same field;
//   encode_response Result → the whole response message, timings last at a fixed layout.
// Pure C++ (no Node-API): the fuzz test (test/27.wire.test.ts) holds it to protobufjs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/results.h"

namespace adrank::wire {

// The three engine RPCs; the values are the batcher's op numbers (src/batcher/batcher.ts BATCH_OP).
enum class Kind : uint8_t { kRank = 0, kRetrieve = 1, kRetrieveAndRank = 2 };

// Bytes that are not a valid message of the request type (the message says where).
struct WireError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct WireMessage {
  std::string request_id, surface, model_version;  // well-formed UTF-8 (anything else is malformed)
  bool has_user = false;
  std::vector<float> dense, embedding;
  // user.sparse: in the order a JS object enumerates its keys (array-index keys ascending, then the
  // others in first-insertion order); an entry repeated for a key replaces the earlier one
  std::vector<std::pair<std::string, std::vector<int64_t>>> sparse;
  std::vector<int64_t> seq_items;
  std::vector<uint32_t> seq_actions;
  std::vector<uint32_t> targeting;
  std::vector<int64_t> excluded_advertisers, excluded_ads;
  uint32_t k = 0;
  int32_t cap = 0;
  std::vector<std::pair<std::string, float>> task_weights;  // key order as `sparse`
  bool has_ranking = false;
  int32_t mode = 0;
  uint32_t partitions = 0;
  bool has_reserve = false;
  float reserve = 0;
  std::vector<int64_t> candidates;
  bool price = false;
  uint32_t retrieve_count = 0, candidate_quota = 0;
  int allow_fallback = -1;  // -1 absent, 0 false, 1 true
};

WireMessage parse_wire(const uint8_t* data, size_t len, Kind kind);

// What validation needs of the model (src/model/config.ts) and the server (--max-candidates).
struct WireSchema {
  std::vector<std::string> surfaces, tasks, user_sparse;
  uint32_t user_dense = 0, user_embedding_dim = 0, targeting_dims = 0, seq_max_len = 0, seq_actions = 0;
  float reserve_price = 0;
  std::string model_name;
};

// A validated request: the feature bundle (8-byte aligned) and what the front end reads of it.
struct Prepared {
  std::vector<uint64_t> bundle;
  size_t bundle_len = 0;
  uint32_t surface = 0;
  double size = 0;  // the batcher's and the recent-latency buckets' size (src/handlers/*.ts `size`)
};

// A refusal: the field path as validate.ts names it and a message "expected <what> for <field>, got <value>".
struct Refusal {
  std::string field, message;
};

// false (and *why) when the request is refused; the checks and their order are validate.ts's.
bool prepare_wire(const WireMessage& m, Kind kind, const WireSchema& s, uint32_t max_candidates, Prepared* out, Refusal* why);

// The fields of the response beside the engine's Result.
struct ResponseMeta {
  Kind kind = Kind::kRank;
  std::string request_id, model_name, version;
  bool ads_only = false;     // an ads-only engine answers no probabilities or values
  int fallback_reason = 0;   // the proto's FallbackReason, 0 = not a fallback answer
  double decode_us = 0, validate_us = 0, bundle_us = 0;
};

// The timings message is the last field of every response, all kTimingFields doubles written, so
// that each sits at a fixed offset from the end: total_us and batch_wait_us are written into the
// response in place by the front end (src/server/codec.ts).
constexpr int kTimingFields = 15;

// Appends the encoded response to `out`; encode_us covers everything before the timings.
void encode_response(const Result& r, const ResponseMeta& meta, std::string* out);

}  // namespace adrank::wire
