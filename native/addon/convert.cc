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
Napi::TypedArrayOf<int64_t> i64(Napi::Env env, const std::vector<int64_t>& v) {
  auto a = Napi::TypedArrayOf<int64_t>::New(env, v.size(), napi_bigint64_array);
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * 8);
  return a;
}
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

// The property names of a result object, made once per JS thread (environment) and reused: a
// name given as a C string is made into a V8 string and looked up in the string table at every
// Set, about 40 times per result. References, not handles, so that they outlive handle scopes;
// never deleted (the environment frees them when it goes).
enum Key {
  kAdIds, kAdvertisers, kRows, kScores, kProbs, kPrices, kValues, kRetrieved, kCounts, kSources, kSourceCounts, kTimings,
  kReceived, kUnknown, kDuplicate, kInactive, kOutOfBudget, kPaced, kTargeting, kExcludedAd, kExcludedAdvertiser, kCapped,
  kEligible, kSource, kEarlierSource, kOverQuota, kRanked, kWinners, kQueue, kUser, kRetrieve, kGather, kMasknet, kDcn,
  kMlp, kSelect, kTotal, kDevice, kResponse, kKeyCount
};
constexpr const char* kKeyNames[kKeyCount] = {
    "adIds", "advertisers", "rows", "scores", "probs", "prices", "values", "retrieved", "counts", "sources", "sourceCounts", "timings",
    "received", "unknown", "duplicate", "inactive", "outOfBudget", "paced", "targeting", "excludedAd", "excludedAdvertiser", "capped",
    "eligible", "source", "earlierSource", "overQuota", "ranked", "winners", "queue", "user", "retrieve", "gather", "masknet", "dcn",
    "mlp", "select", "total", "device", "response"};

class Keys {
 public:
  // The names are held by one array (a reference can hold an object, not a string, before
  // Node-API 10); each use takes them out into handles of the caller's scope.
  explicit Keys(Napi::Env env) : env_(env) {
    thread_local napi_env made_for = nullptr;
    thread_local napi_ref names = nullptr;
    if (made_for != env) {
      Napi::Array a = Napi::Array::New(env, kKeyCount);
      for (uint32_t i = 0; i < kKeyCount; i++) a.Set(i, Napi::String::New(env, kKeyNames[i]));
      NAPI_THROW_IF_FAILED_VOID(env, napi_create_reference(env, a, 1, &names));
      made_for = env;
    }
    napi_value a;
    NAPI_THROW_IF_FAILED_VOID(env, napi_get_reference_value(env, names, &a));
    for (uint32_t i = 0; i < kKeyCount; i++) NAPI_THROW_IF_FAILED_VOID(env, napi_get_element(env, a, i, &keys_[i]));
  }
  // obj[key] = v
  void set(napi_value obj, Key key, napi_value v) const { NAPI_THROW_IF_FAILED_VOID(env_, napi_set_property(env_, obj, keys_[key], v)); }
  void set(napi_value obj, Key key, double v) const { set(obj, key, static_cast<napi_value>(Napi::Number::New(env_, v))); }

 private:
  Napi::Env env_;
  napi_value keys_[kKeyCount];
};

Napi::Object counts_js(const Keys& keys, Napi::Env env, const Counts& k, bool with_capped = true) {
  Napi::Object c = Napi::Object::New(env);
  keys.set(c, kReceived, double(k.received));
  keys.set(c, kUnknown, double(k.unknown));
  keys.set(c, kDuplicate, double(k.duplicate));
  keys.set(c, kInactive, double(k.inactive));
  keys.set(c, kOutOfBudget, double(k.out_of_budget));
  keys.set(c, kPaced, double(k.paced));
  keys.set(c, kTargeting, double(k.targeting));
  keys.set(c, kExcludedAd, double(k.excluded_ad));
  keys.set(c, kExcludedAdvertiser, double(k.excluded_advertiser));
  if (with_capped) keys.set(c, kCapped, double(k.capped));
  keys.set(c, kEligible, double(k.eligible));
  return c;
}
}  // namespace

Napi::Object to_js(Napi::Env env, const Result& r, int) {
  const Keys keys(env);
  Napi::Object o = Napi::Object::New(env);
  keys.set(o, kAdIds, i64(env, r.ad_ids));
  keys.set(o, kAdvertisers, i64(env, r.advertisers));
  keys.set(o, kRows, i32(env, r.rows));
  keys.set(o, kScores, f32(env, r.scores));
  keys.set(o, kProbs, f32(env, r.probs));
  keys.set(o, kPrices, f32(env, r.prices));
  keys.set(o, kValues, f32(env, r.values));
  keys.set(o, kRetrieved, double(r.retrieved));
  keys.set(o, kCounts, counts_js(keys, env, r.counts));
  keys.set(o, kSources, u8(env, r.sources));
  Napi::Array sc = Napi::Array::New(env, r.source_counts.size());
  for (size_t i = 0; i < r.source_counts.size(); i++) {
    const SourceCounts& x = r.source_counts[i];
    Napi::Object e = counts_js(keys, env, x.counts, false);  // the cap applies to the union: Result::counts only
    keys.set(e, kSource, double(x.source));
    keys.set(e, kEarlierSource, double(x.earlier_source));
    keys.set(e, kOverQuota, double(x.over_quota));
    keys.set(e, kRanked, double(x.ranked));
    keys.set(e, kWinners, double(x.winners));
    sc.Set(uint32_t(i), e);
  }
  keys.set(o, kSourceCounts, sc);
  Napi::Object t = Napi::Object::New(env);
  const Timings& s = r.timings;
  keys.set(t, kQueue, s.queue);
  keys.set(t, kUser, s.user);
  keys.set(t, kRetrieve, s.retrieve);
  keys.set(t, kGather, s.gather);
  keys.set(t, kMasknet, s.masknet);
  keys.set(t, kDcn, s.dcn);
  keys.set(t, kMlp, s.mlp);
  keys.set(t, kSelect, s.select);
  keys.set(t, kTotal, s.total);
  keys.set(t, kDevice, s.device);
  keys.set(o, kTimings, t);
  return o;
}

// A small response is copied into a JS-owned Buffer: an external one would need a finalizer,
// which Node runs later on a native immediate, per response.
constexpr size_t kCopyResponseBelow = 64 * 1024;

void set_response(Napi::Env env, Napi::Object& o, std::string* response) {
  const Keys keys(env);
  if (response->size() < kCopyResponseBelow) {
    keys.set(o, kResponse, Napi::Buffer<char>::Copy(env, response->data(), response->size()));
    return;
  }
  auto* owned = new std::string(std::move(*response));
  keys.set(o, kResponse, Napi::Buffer<char>::NewOrCopy(env, owned->data(), owned->size(), [](Napi::Env, char*, std::string* s) { delete s; }, owned));
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
