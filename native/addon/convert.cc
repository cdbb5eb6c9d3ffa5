#include "addon/convert.h"

#include "addon/mapped.h"

#include <cmath>
#include <cstring>
#include <sstream>

namespace adrank::addon {

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsNumber()) {
    std::ostringstream os;
    os.precision(17);
    os << v.As<Napi::Number>().DoubleValue();
    return os.str();
  }
  if (v.IsString()) return "\"" + v.As<Napi::String>().Utf8Value() + "\"";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsTypedArray()) {
    static const char* names[] = {"Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array",
                                  "Uint32Array", "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array"};
    const Napi::TypedArray a = v.As<Napi::TypedArray>();
    const int t = int(a.TypedArrayType());
    const std::string name = t >= 0 && t < 11 ? names[t] : "TypedArray";
    return name + "(" + std::to_string(a.ElementLength()) + ")";
  }
  if (v.IsArray()) return "Array(" + std::to_string(v.As<Napi::Array>().Length()) + ")";
  if (v.IsFunction()) return "a function";
  if (v.IsObject()) return "an object";
  return "a value of another type";
}

void type_error(Napi::Env env, const std::string& field, const std::string& what, const Napi::Value& got) {
  throw Napi::TypeError::New(env, "expected " + what + " for " + field + ", got " + describe(got));
}

Napi::Object get_object(const Napi::Object& o, const char* key, const std::string& field) {
  const Napi::Value v = o.Get(key);
  if (!v.IsObject()) type_error(o.Env(), field, "an object", v);
  return v.As<Napi::Object>();
}

double get_number(const Napi::Object& o, const char* key, const std::string& field) {
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) type_error(o.Env(), field, "a finite number", v);
  return v.As<Napi::Number>().DoubleValue();
}

int get_int(const Napi::Object& o, const char* key, const std::string& field, double min, double max) {
  const Napi::Value v = o.Get(key);
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= min && d <= max && d == std::floor(d)))
    type_error(o.Env(), field, "an integer in [" + std::to_string(int64_t(min)) + ", " + std::to_string(int64_t(max)) + "]", v);
  return int(d);
}

bool get_bool(const Napi::Object& o, const char* key, const std::string& field) {
  const Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) type_error(o.Env(), field, "a boolean", v);
  return v.As<Napi::Boolean>().Value();
}

std::string get_string(const Napi::Object& o, const char* key, const std::string& field) {
  const Napi::Value v = o.Get(key);
  if (!v.IsString()) type_error(o.Env(), field, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

namespace {
Napi::Array get_array(const Napi::Object& o, const char* key, const std::string& field) {
  const Napi::Value v = o.Get(key);
  if (!v.IsArray()) type_error(o.Env(), field, "an array", v);
  return v.As<Napi::Array>();
}
}  // namespace

std::vector<double> get_number_array(const Napi::Object& o, const char* key, const std::string& field) {
  const Napi::Array a = get_array(o, key, field);
  std::vector<double> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    const Napi::Value v = a.Get(i);
    if (!v.IsNumber()) type_error(o.Env(), field + "[" + std::to_string(i) + "]", "a number", v);
    out.push_back(v.As<Napi::Number>().DoubleValue());
  }
  return out;
}

std::vector<int> get_int_array(const Napi::Object& o, const char* key, const std::string& field) {
  const Napi::Array a = get_array(o, key, field);
  std::vector<int> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    const Napi::Value v = a.Get(i);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= 0 && d <= 2147483647.0 && d == std::floor(d)))
      type_error(o.Env(), field + "[" + std::to_string(i) + "]", "a non-negative integer", v);
    out.push_back(int(d));
  }
  return out;
}

std::vector<std::string> get_string_array(const Napi::Object& o, const char* key, const std::string& field) {
  const Napi::Array a = get_array(o, key, field);
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    const Napi::Value v = a.Get(i);
    if (!v.IsString()) type_error(o.Env(), field + "[" + std::to_string(i) + "]", "a string", v);
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

Napi::TypedArray typed_array(const Napi::Value& v, napi_typedarray_type type, int64_t length, const std::string& field) {
  static const char* names[] = {"Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array",
                                "Uint32Array", "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array"};
  const std::string want = names[int(type)];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) type_error(v.Env(), field, "a " + want, v);
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  if (length >= 0 && int64_t(a.ElementLength()) != length)
    type_error(v.Env(), field, "a " + want + " of " + std::to_string(length) + " elements", v);
  return a;
}

ModelInit model_init(const Napi::Object& init) {
  ModelInit mi;
  const Napi::Value ads_only = init.Get("adsOnly");
  if (!ads_only.IsUndefined() && !ads_only.IsBoolean()) type_error(init.Env(), "adsOnly", "a boolean", ads_only);
  mi.ads_only = ads_only.IsBoolean() && ads_only.As<Napi::Boolean>().Value();
  const Napi::Object d = get_object(init, "dims", "dims");
  ModelDims& m = mi.dims;
  m.user_dense = get_int(d, "userDense", "dims.userDense");
  m.ad_dense = get_int(d, "adDense", "dims.adDense");
  m.dense_clip = float(get_number(d, "denseClip", "dims.denseClip"));
  auto fields = [&](const char* names, const char* cards, const char* dims, const std::string& prefix) {
    const auto n = get_string_array(d, names, "dims." + std::string(names));
    const auto c = get_number_array(d, cards, "dims." + std::string(cards));
    const auto w = get_int_array(d, dims, "dims." + std::string(dims));
    if (c.size() != n.size() || w.size() != n.size())
      throw Napi::TypeError::New(init.Env(), "expected " + std::to_string(n.size()) + " entries for dims." + cards + " and dims." +
                                                 dims + " (one per " + prefix + " field), got " + std::to_string(c.size()) + " and " +
                                                 std::to_string(w.size()));
    std::vector<SparseFieldDims> out;
    for (size_t i = 0; i < n.size(); i++) {
      if (!(c[i] >= 1 && c[i] == std::floor(c[i]) && c[i] < 9.0e15))
        throw Napi::TypeError::New(init.Env(), "expected a positive integer for dims." + std::string(cards) + "[" + std::to_string(i) +
                                                   "], got " + std::to_string(c[i]));
      out.push_back({n[i], int64_t(c[i]), w[i]});
    }
    return out;
  };
  m.user_sparse = fields("userSparseNames", "userSparseCardinality", "userSparseDim", "user sparse");
  m.ad_sparse = fields("adSparseNames", "adSparseCardinality", "adSparseDim", "ad sparse");
  m.user_embedding_dim = get_int(d, "userEmbeddingDim", "dims.userEmbeddingDim");
  m.ad_embedding_dim = get_int(d, "adEmbeddingDim", "dims.adEmbeddingDim");
  m.surface_dim = get_int(d, "surfaceDim", "dims.surfaceDim");
  m.surfaces = get_int(d, "surfaces", "dims.surfaces");
  m.tasks = get_int(d, "tasks", "dims.tasks");
  m.targeting_dims = get_int(d, "targetingDims", "dims.targetingDims");
  m.seq_max_len = get_int(d, "seqMaxLen", "dims.seqMaxLen");
  {
    const double b = get_number(d, "seqItemBuckets", "dims.seqItemBuckets");
    if (!(b >= 1 && b == std::floor(b) && b < 9.0e15))
      throw Napi::TypeError::New(init.Env(), "expected a positive integer for dims.seqItemBuckets, got " + describe(d.Get("seqItemBuckets")));
    m.seq_item_buckets = int64_t(b);
  }
  m.seq_actions = get_int(d, "seqActions", "dims.seqActions");
  m.seq_dim = get_int(d, "seqDim", "dims.seqDim");
  m.seq_heads = get_int(d, "seqHeads", "dims.seqHeads");
  m.seq_ffn_dim = get_int(d, "seqFfnDim", "dims.seqFfnDim");
  m.seq_layers = get_int(d, "seqLayers", "dims.seqLayers");
  m.masknet_blocks = get_int(d, "masknetBlocks", "dims.masknetBlocks");
  m.masknet_hidden = get_int(d, "masknetHidden", "dims.masknetHidden");
  m.masknet_output = get_int(d, "masknetOutput", "dims.masknetOutput");
  m.dcn_layers = get_int(d, "dcnLayers", "dims.dcnLayers");
  m.dcn_rank = get_int(d, "dcnRank", "dims.dcnRank");
  m.mlp = get_int_array(d, "mlp", "dims.mlp");
  m.retrieval_dim = get_int(d, "retrievalDim", "dims.retrievalDim");
  m.retrieval_hidden = get_int_array(d, "retrievalHidden", "dims.retrievalHidden");
  m.retrieval_bf16 = get_bool(d, "retrievalBf16", "dims.retrievalBf16");
  m.num_ads = get_int(d, "numAds", "dims.numAds");

  const Napi::Object t = get_object(init, "tensors", "tensors");
  const Napi::Array keys = t.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); i++) {
    const std::string name = keys.Get(i).As<Napi::String>().Utf8Value();
    const Napi::Value v = t.Get(name);
    if (!v.IsTypedArray()) type_error(init.Env(), "tensors[\"" + name + "\"]", "a Float32Array, BigInt64Array, BigUint64Array or Uint16Array", v);
    const Napi::TypedArray a = v.As<Napi::TypedArray>();
    TensorRef ref;
    switch (a.TypedArrayType()) {
      case napi_float32_array: ref.dtype = DType::F32; break;
      case napi_bigint64_array: ref.dtype = DType::I64; break;
      case napi_biguint64_array: ref.dtype = DType::U64; break;
      case napi_uint16_array: ref.dtype = DType::BF16; break;
      default:
        type_error(init.Env(), "tensors[\"" + name + "\"]", "a Float32Array, BigInt64Array, BigUint64Array or Uint16Array", v);
    }
    if (a.ByteOffset() % a.ElementSize() != 0)
      throw Napi::TypeError::New(init.Env(), "expected an element-aligned byteOffset for tensors[\"" + name + "\"], got " +
                                                 std::to_string(a.ByteOffset()));
    ref.data = typed_data<uint8_t>(a);
    ref.count = a.ElementLength();
    mi.tensors[name] = ref;
  }
  mi.mapping = mapped_file_of(init.Get("mapping"), "mapping");
  const Napi::Value scan = init.Get("retrievalScan");
  if (!scan.IsUndefined()) {
    const std::string s = scan.IsString() ? scan.As<Napi::String>().Utf8Value() : "";
    if (s != "fp32" && s != "bf16") type_error(init.Env(), "retrievalScan", "\"fp32\" or \"bf16\"", scan);
    mi.retrieval_bf16_scan = s == "bf16";
  }
  mi.id_map = id_index_of(init.Get("idIndex"), "idIndex");
  return mi;
}

Napi::Float32Array f32_array(Napi::Env env, const float* p, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), p, n * sizeof(float));
  return a;
}

namespace {
Napi::Float32Array f32(Napi::Env env, const std::vector<float>& v) { return f32_array(env, v.data(), v.size()); }
Napi::Int32Array i32(Napi::Env env, const std::vector<int32_t>& v) {
  auto a = Napi::Int32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * 4);
  return a;
}
Napi::Uint8Array u8(Napi::Env env, const std::vector<uint8_t>& v) {
  auto a = Napi::Uint8Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size());
  return a;
}

// A result crosses to JS as one block: a header of doubles (each array's byte offset and length,
// the counts, the timings, the per-source counts, where the response is), then the arrays,
// 8-byte aligned, then the response bytes; a small JS function, compiled once per JS thread,
// makes the result object from it: views on the one ArrayBuffer, object literals for counts and
// timings. That is one allocation and one call per result instead of ten ArrayBuffers and about
// forty property sets through Node-API, the larger part of a small request's time on the JS
// thread after its run (docs/wire.md "The result object").

constexpr int kArrays = 8;           // adIds, advertisers, rows, scores, probs, prices, values, sources
constexpr int kRetrievedAt = 2 * kArrays;
constexpr int kCountsAt = kRetrievedAt + 1;
constexpr int kCountFields = 11;
constexpr int kTimingsAt = kCountsAt + kCountFields;
constexpr int kTimingFields = 10;
constexpr int kResponseAt = kTimingsAt + kTimingFields;  // offset (-1 none, -2 the second argument), length
constexpr int kSourcesAt = kResponseAt + 2;              // how many, then kSourceFields per source
constexpr int kSourceFields = 16;                        // counts (11), source, earlierSource, overQuota, ranked, winners
constexpr int kHeaderFixed = kSourcesAt + 1;
// the decoder below reads these positions as numbers
static_assert(kRetrievedAt == 16 && kCountsAt == 17 && kTimingsAt == 28 && kResponseAt == 38 && kSourcesAt == 40 && kHeaderFixed == 41 && kSourceFields == 16);

// The result block → NativeResult (src/engine/binding.ts); property order as the interface's.
constexpr const char kDecodeResult[] = R"JS((function decodeResult(ab, external) {
  'use strict';
  const h = new Float64Array(ab, 0, 41 + 16 * new Float64Array(ab, 40 * 8, 1)[0]);
  const counts = (i) => ({ received: h[i], unknown: h[i + 1], duplicate: h[i + 2], inactive: h[i + 3], outOfBudget: h[i + 4], paced: h[i + 5],
    targeting: h[i + 6], excludedAd: h[i + 7], excludedAdvertiser: h[i + 8], capped: h[i + 9], eligible: h[i + 10] });
  const sourceCounts = [];
  for (let s = 0, i = 41; s < h[40]; s++, i += 16)
    sourceCounts.push({ received: h[i], unknown: h[i + 1], duplicate: h[i + 2], inactive: h[i + 3], outOfBudget: h[i + 4], paced: h[i + 5],
      targeting: h[i + 6], excludedAd: h[i + 7], excludedAdvertiser: h[i + 8], eligible: h[i + 10],
      source: h[i + 11], earlierSource: h[i + 12], overQuota: h[i + 13], ranked: h[i + 14], winners: h[i + 15] });
  const r = {
    adIds: new BigInt64Array(ab, h[0], h[1]),
    advertisers: new BigInt64Array(ab, h[2], h[3]),
    rows: new Int32Array(ab, h[4], h[5]),
    scores: new Float32Array(ab, h[6], h[7]),
    probs: new Float32Array(ab, h[8], h[9]),
    prices: new Float32Array(ab, h[10], h[11]),
    values: new Float32Array(ab, h[12], h[13]),
    retrieved: h[16],
    counts: counts(17),
    sources: new Uint8Array(ab, h[14], h[15]),
    sourceCounts,
    timings: { queue: h[28], user: h[29], retrieve: h[30], gather: h[31], masknet: h[32], dcn: h[33], mlp: h[34], select: h[35], total: h[36], device: h[37] },
  };
  if (h[38] === -2) r.response = external;
  else if (h[38] >= 0) r.response = Buffer.from(ab, h[38], h[39]);
  return r;
}))JS";

// The decoder, compiled once per JS thread (environment). A reference, never deleted: the
// environment frees it when it goes.
napi_value result_decoder(Napi::Env env) {
  thread_local napi_env made_for = nullptr;
  thread_local napi_ref decoder = nullptr;
  napi_value fn;
  if (made_for != env) {
    napi_value source;
    NAPI_THROW_IF_FAILED(env, napi_create_string_utf8(env, kDecodeResult, NAPI_AUTO_LENGTH, &source), nullptr);
    NAPI_THROW_IF_FAILED(env, napi_run_script(env, source, &fn), nullptr);
    NAPI_THROW_IF_FAILED(env, napi_create_reference(env, fn, 1, &decoder), nullptr);
    made_for = env;
    return fn;
  }
  NAPI_THROW_IF_FAILED(env, napi_get_reference_value(env, decoder, &fn), nullptr);
  return fn;
}

void put_counts(double* h, const Counts& k) {
  const int64_t v[kCountFields] = {k.received, k.unknown, k.duplicate, k.inactive, k.out_of_budget, k.paced,
                                   k.targeting, k.excluded_ad, k.excluded_advertiser, k.capped, k.eligible};
  for (int i = 0; i < kCountFields; i++) h[i] = double(v[i]);
}

// A large response is handed over without a copy (an external Buffer); a small one is copied into
// the block: an external Buffer needs a finalizer, which Node runs later on a native immediate.
constexpr size_t kCopyResponseBelow = 64 * 1024;

}  // namespace

Napi::Object to_js(Napi::Env env, const Result& r, int, std::string* response) {
  const size_t header = (kHeaderFixed + kSourceFields * r.source_counts.size()) * sizeof(double);
  struct Span { const void* data; size_t bytes, length; };
  const Span arrays[kArrays] = {
      {r.ad_ids.data(), r.ad_ids.size() * 8, r.ad_ids.size()},   {r.advertisers.data(), r.advertisers.size() * 8, r.advertisers.size()},
      {r.rows.data(), r.rows.size() * 4, r.rows.size()},         {r.scores.data(), r.scores.size() * 4, r.scores.size()},
      {r.probs.data(), r.probs.size() * 4, r.probs.size()},      {r.prices.data(), r.prices.size() * 4, r.prices.size()},
      {r.values.data(), r.values.size() * 4, r.values.size()},   {r.sources.data(), r.sources.size(), r.sources.size()}};
  const auto align8 = [](size_t x) { return (x + 7) & ~size_t(7); };
  size_t offsets[kArrays];
  size_t at = header;
  for (int i = 0; i < kArrays; i++) {
    offsets[i] = at;
    at = align8(at + arrays[i].bytes);
  }
  const bool copy_response = response && response->size() < kCopyResponseBelow;
  const size_t response_at = at;
  if (copy_response) at += response->size();

  void* data = nullptr;
  napi_value ab;
  NAPI_THROW_IF_FAILED(env, napi_create_arraybuffer(env, at, &data, &ab), Napi::Object());
  auto* base = static_cast<uint8_t*>(data);
  double* h = reinterpret_cast<double*>(base);
  for (int i = 0; i < kArrays; i++) {
    h[2 * i] = double(offsets[i]);
    h[2 * i + 1] = double(arrays[i].length);
    if (arrays[i].bytes) std::memcpy(base + offsets[i], arrays[i].data, arrays[i].bytes);
  }
  h[kRetrievedAt] = double(r.retrieved);
  put_counts(h + kCountsAt, r.counts);
  const Timings& t = r.timings;
  const double timings[kTimingFields] = {t.queue, t.user, t.retrieve, t.gather, t.masknet, t.dcn, t.mlp, t.select, t.total, t.device};
  std::memcpy(h + kTimingsAt, timings, sizeof timings);
  h[kSourcesAt] = double(r.source_counts.size());
  for (size_t s = 0; s < r.source_counts.size(); s++) {
    const SourceCounts& x = r.source_counts[s];
    double* e = h + kHeaderFixed + kSourceFields * s;
    put_counts(e, x.counts);  // its capped stays out of the object: the cap applies to the union (Result::counts)
    e[11] = double(x.source);
    e[12] = double(x.earlier_source);
    e[13] = double(x.over_quota);
    e[14] = double(x.ranked);
    e[15] = double(x.winners);
  }
  napi_value external;
  NAPI_THROW_IF_FAILED(env, napi_get_undefined(env, &external), Napi::Object());
  if (!response) {
    h[kResponseAt] = -1;
    h[kResponseAt + 1] = -1;
  } else if (copy_response) {
    h[kResponseAt] = double(response_at);
    h[kResponseAt + 1] = double(response->size());
    if (!response->empty()) std::memcpy(base + response_at, response->data(), response->size());
  } else {
    h[kResponseAt] = -2;
    h[kResponseAt + 1] = double(response->size());
    auto* owned = new std::string(std::move(*response));
    external = Napi::Buffer<char>::NewOrCopy(env, owned->data(), owned->size(), [](Napi::Env, char*, std::string* s) { delete s; }, owned);
  }
  napi_value decoder = result_decoder(env);
  napi_value argv[2] = {ab, external};
  napi_value out;
  NAPI_THROW_IF_FAILED(env, napi_call_function(env, ab, decoder, 2, argv, &out), Napi::Object());
  return Napi::Object(env, out);
}

Napi::Object to_js(Napi::Env env, const Explain& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rows", i32(env, e.rows));
  o.Set("user", f32(env, e.user));
  o.Set("sequence", f32(env, e.sequence));
  o.Set("query", f32(env, e.query));
  o.Set("ad", f32(env, e.ad));
  o.Set("targetAttention", f32(env, e.target_attention));
  o.Set("input", f32(env, e.input));
  o.Set("masknet", f32(env, e.masknet));
  o.Set("cross", f32(env, e.cross));
  o.Set("hidden", f32(env, e.hidden));
  o.Set("logits", f32(env, e.logits));
  o.Set("probs", f32(env, e.probs));
  o.Set("utility", f32(env, e.utility));
  o.Set("retrievalScores", f32(env, e.retrieval_scores));
  o.Set("drops", u8(env, e.drops));
  return o;
}

}  // namespace adrank::addon
