#include "addon/wire_wrap.h"

#include <atomic>
#include <cstring>

#include "addon/convert.h"
#include "engine/clock.h"

namespace adrank::addon {

namespace {

// Marks this addon's WireRequest objects so that From() tells them from any other object, one of
// another copy of the addon (a test-hooks build in the same process) included: the tag's second
// half is an address inside this copy.
const napi_type_tag* wire_tag() {
  static const char marker = 0;
  static const napi_type_tag tag = {0x6164726b77697265ull, uint64_t(reinterpret_cast<uintptr_t>(&marker))};
  return &tag;
}

std::atomic<uint64_t> made_total{0}, released_total{0};

template <typename T>
Napi::Value typed(Napi::Env env, const std::vector<T>& v, napi_typedarray_type type) {
  Napi::ArrayBuffer b = Napi::ArrayBuffer::New(env, v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.Data(), v.data(), v.size() * sizeof(T));
  return Napi::TypedArrayOf<T>::New(env, v.size(), b, 0, type);
}

}  // namespace

Napi::Function WireWrap::Define(Napi::Env env) {
  return DefineClass(env, "WireRequest",
                     {
                         InstanceAccessor<&WireWrap::RequestId>("requestId"),
                         InstanceAccessor<&WireWrap::ModelVersion>("modelVersion"),
                         InstanceAccessor<&WireWrap::AllowFallback>("allowFallback"),
                         InstanceAccessor<&WireWrap::Surface>("surface"),
                         InstanceAccessor<&WireWrap::DecodeUs>("decodeUs"),
                         InstanceMethod<&WireWrap::ToObject>("toObject"),
                         InstanceMethod<&WireWrap::Bundle>("bundle"),
                         InstanceMethod<&WireWrap::Release>("release"),
                     });
}

WireWrap* WireWrap::From(const Napi::Value& v) {
  if (!v.IsObject()) return nullptr;
  bool tagged = false;
  if (napi_check_object_type_tag(v.Env(), v, wire_tag(), &tagged) != napi_ok || !tagged) return nullptr;
  return Unwrap(v.As<Napi::Object>());
}

// new WireRequest(op: 0 rank | 1 retrieve | 2 retrieveAndRank, bytes: Uint8Array): parses the
// request message; malformed bytes throw (the message says what and where).
WireWrap::WireWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WireWrap>(info) {
  Napi::Env env = info.Env();
  const double t0 = steady_us();
  const double op = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(op == 0 || op == 1 || op == 2)) type_error(env, "op", "0 (rank), 1 (retrieve) or 2 (retrieveAndRank)", info[0]);
  const Napi::TypedArray bytes = typed_array(info[1], napi_uint8_array, -1, "bytes");
  kind_ = wire::Kind(int(op));
  try {
    msg_ = wire::parse_wire(typed_data<uint8_t>(bytes), bytes.ByteLength(), kind_);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("malformed request: ") + e.what());
  }
  napi_type_tag_object(env, info.This(), wire_tag());
  meta_.decode_us = steady_us() - t0;
  made_total++;
}

uint64_t WireWrap::made_count() { return made_total.load(); }
uint64_t WireWrap::released_count() { return released_total.load(); }

// release(): frees the parsed message and the feature bundle now rather than when the object is
// collected. V8 does not see a request's native memory (tens of KiB for a Rank of 1,000), so
// requests served at a high rate and left to their finalizers pile up between collections (a
// loop of parse and prepare grew by 2 GB in 4 s). After it the request keeps its id, version and
// fallback flag; it can no longer be prepared, run or read. A second release does nothing.
Napi::Value WireWrap::Release(const Napi::CallbackInfo& info) {
  if (released_) return info.Env().Undefined();
  wire::WireMessage kept;
  kept.request_id = std::move(msg_.request_id);
  kept.surface = std::move(msg_.surface);
  kept.model_version = std::move(msg_.model_version);
  kept.allow_fallback = msg_.allow_fallback;
  msg_ = std::move(kept);
  prep_ = wire::Prepared{};
  prepared_ = false;
  released_ = true;
  released_total++;
  return info.Env().Undefined();
}

Napi::Value WireWrap::RequestId(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), msg_.request_id); }
Napi::Value WireWrap::ModelVersion(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), msg_.model_version); }
Napi::Value WireWrap::AllowFallback(const Napi::CallbackInfo& info) {
  if (msg_.allow_fallback < 0) return info.Env().Undefined();
  return Napi::Boolean::New(info.Env(), msg_.allow_fallback == 1);
}
Napi::Value WireWrap::Surface(const Napi::CallbackInfo& info) {
  return prepared_ ? Napi::Value(Napi::Number::New(info.Env(), prep_.surface)) : info.Env().Undefined();
}
Napi::Value WireWrap::DecodeUs(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), meta_.decode_us); }

// The parsed message as plain values (for tests: the fuzz test compares it with protobufjs).
Napi::Value WireWrap::ToObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (released_) throw Napi::Error::New(env, "this WireRequest was released");
  const wire::WireMessage& m = msg_;
  Napi::Object o = Napi::Object::New(env);
  o.Set("requestId", m.request_id);
  o.Set("surface", m.surface);
  o.Set("modelVersion", m.model_version);
  o.Set("hasUser", m.has_user);
  o.Set("dense", typed(env, m.dense, napi_float32_array));
  o.Set("embedding", typed(env, m.embedding, napi_float32_array));
  Napi::Array sparse = Napi::Array::New(env, m.sparse.size());
  for (size_t i = 0; i < m.sparse.size(); i++) {
    Napi::Array e = Napi::Array::New(env, 2);
    e.Set(0u, m.sparse[i].first);
    e.Set(1u, typed(env, m.sparse[i].second, napi_bigint64_array));
    sparse.Set(uint32_t(i), e);
  }
  o.Set("sparse", sparse);
  o.Set("seqItems", typed(env, m.seq_items, napi_bigint64_array));
  o.Set("seqActions", typed(env, m.seq_actions, napi_uint32_array));
  o.Set("targeting", typed(env, m.targeting, napi_uint32_array));
  o.Set("excludedAdvertisers", typed(env, m.excluded_advertisers, napi_bigint64_array));
  o.Set("excludedAds", typed(env, m.excluded_ads, napi_bigint64_array));
  o.Set("k", double(m.k));
  o.Set("cap", double(m.cap));
  Napi::Array tw = Napi::Array::New(env, m.task_weights.size());
  for (size_t i = 0; i < m.task_weights.size(); i++) {
    Napi::Array e = Napi::Array::New(env, 2);
    e.Set(0u, m.task_weights[i].first);
    e.Set(1u, double(m.task_weights[i].second));
    tw.Set(uint32_t(i), e);
  }
  o.Set("taskWeights", tw);
  o.Set("hasRanking", m.has_ranking);
  o.Set("mode", double(m.mode));
  o.Set("partitions", double(m.partitions));
  if (m.has_reserve) o.Set("reserve", double(m.reserve));
  o.Set("candidates", typed(env, m.candidates, napi_bigint64_array));
  o.Set("price", m.price);
  o.Set("retrieveCount", double(m.retrieve_count));
  o.Set("candidateQuota", double(m.candidate_quota));
  if (m.allow_fallback >= 0) o.Set("allowFallback", m.allow_fallback == 1);
  return o;
}

// A copy of the feature bundle Engine.prepare wrote (for tests); undefined before.
Napi::Value WireWrap::Bundle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!prepared_) return env.Undefined();
  Napi::ArrayBuffer b = Napi::ArrayBuffer::New(env, prep_.bundle_len);
  std::memcpy(b.Data(), prep_.bundle.data(), prep_.bundle_len);
  return Napi::Uint8Array::New(env, prep_.bundle_len, b, 0);
}

}  // namespace adrank::addon
