#include "addon/mapped.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "addon/convert.h"
#include "kernels/cpu/parallel.h"

namespace adrank::addon {

namespace {

// Type tags: a handle from elsewhere (or a forged External) is refused.
constexpr napi_type_tag kMappedTag = {0x6164726b6d617070ULL, 0x1b2e8f0a55c3d901ULL};
constexpr napi_type_tag kIdIndexTag = {0x6164726b69646d70ULL, 0x7c41d2e9a0b3f612ULL};

using MappedHandle = std::shared_ptr<const MappedFile>;

template <class T>
T* tagged(const Napi::Value& v, const napi_type_tag& tag, const std::string& field, const char* what) {
  bool ok = false;
  if (v.Type() == napi_external) napi_check_object_type_tag(v.Env(), v, &tag, &ok);
  if (!ok) type_error(v.Env(), field, what, v);
  return v.As<Napi::External<T>>().Data();
}

// mapFile(path) → { size, handle }; mapView(handle, offset, length) gives views of it.
Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) type_error(env, "path", "a string", info.Length() ? info[0] : env.Undefined());
  MappedHandle m;
  try {
    m = MappedFile::open(info[0].As<Napi::String>().Utf8Value());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("size", double(m->size()));
  out.Set("handle", mapped_handle_js(env, m));
  return out;
}

// mapView(handle, offset, length) → an ArrayBuffer over those bytes of the mapping (read-only pages:
// never write to it). Node-API makes external ArrayBuffers as Buffers, at most 2^32 - 1 bytes each,
// so a file is viewed region by region (a tensor, a piece to hash). Each view holds the mapping; it
// is unmapped when the last holder goes.
Napi::Value MapView(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const MappedHandle& m = *tagged<MappedHandle>(info[0], kMappedTag, "handle", "a mapFile() handle");
  const double off = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  const double len = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : -1;
  if (!(off >= 0 && off == std::floor(off) && off <= double(m->size()))) type_error(env, "offset", "an integer in [0, " + std::to_string(m->size()) + "]", info[1]);
  if (!(len >= 0 && len == std::floor(len) && off + len <= double(m->size())))
    type_error(env, "length", "an integer with offset + length <= " + std::to_string(m->size()), info[2]);
  if (len >= 4294967296.0) type_error(env, "length", "at most 2^32 - 1 bytes (one view)", info[2]);
  if (len == 0) return Napi::ArrayBuffer::New(env, 0);
  return Napi::ArrayBuffer::New(env, const_cast<uint8_t*>(m->data()) + size_t(off), size_t(len),
                                [](Napi::Env, void*, MappedHandle* h) { delete h; }, new MappedHandle(m));
}

// mappedFileChanged(handle) → '' or how the file changed since it was mapped.
Napi::Value MappedFileChanged(const Napi::CallbackInfo& info) {
  const MappedHandle& m = *tagged<MappedHandle>(info[0], kMappedTag, "handle", "a mapFile() handle");
  return Napi::String::New(info.Env(), m->changed());
}

// mappedFileId(handle) → "dev:ino:size:mtime_ns" of the mapped file (MappedFile::identity).
Napi::Value MappedFileId(const Napi::CallbackInfo& info) {
  const MappedHandle& m = *tagged<MappedHandle>(info[0], kMappedTag, "handle", "a mapFile() handle");
  return Napi::String::New(info.Env(), m->identity());
}

// buildIdIndex(ids: BigInt64Array) → { handle } for unique ids, else { duplicate: bigint, rows: [a, b] }.
Napi::Value BuildIdIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::TypedArray a = typed_array(info[0], napi_bigint64_array, -1, "ids");
  const int64_t* ids = typed_data<int64_t>(a);
  const int64_t n = int64_t(a.ElementLength());
  if (n >= (int64_t(1) << 31) - 1) type_error(env, "ids", "fewer than 2^31 - 1 ids", info[0]);
  auto map = std::make_unique<IdMap>();
  int64_t dup = 0;
  int32_t rows[2] = {-1, -1};
  bool ok;
  {
    cpu::ThreadPool pool(0);
    ok = map->build(ids, n, &dup, &pool, rows);
  }
  Napi::Object out = Napi::Object::New(env);
  if (!ok) {
    out.Set("duplicate", Napi::BigInt::New(env, dup));
    Napi::Array r = Napi::Array::New(env, 2);
    r.Set(0u, double(rows[0]));
    r.Set(1u, double(rows[1]));
    out.Set("rows", r);
    return out;
  }
  auto handle = Napi::External<IdMap>::New(env, map.release(), [](Napi::Env, IdMap* m) { delete m; });
  napi_type_tag_object(env, handle, &kIdIndexTag);
  out.Set("handle", handle);
  return out;
}

// idIndexRows(handle, ids: BigInt64Array) → Int32Array of rows (-1 = not in the index).
Napi::Value IdIndexRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const IdMap* map = tagged<IdMap>(info[0], kIdIndexTag, "handle", "a buildIdIndex() handle");
  const Napi::TypedArray a = typed_array(info[1], napi_bigint64_array, -1, "ids");
  const int64_t* ids = typed_data<int64_t>(a);
  const size_t n = a.ElementLength();
  Napi::Int32Array out = Napi::Int32Array::New(env, n);
  for (size_t i = 0; i < n; i++) out[i] = map->find(ids[i]);
  return out;
}

// buildGroupIndex(keys: BigInt64Array) → { handle, starts: Int32Array(G + 1), rows: Int32Array(N) }:
// the distinct keys (the handle indexes them in first-seen order: group g) and, per group, its rows
// ascending at rows[starts[g] .. starts[g + 1]). For the ads of an advertiser.
Napi::Value BuildGroupIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::TypedArray a = typed_array(info[0], napi_bigint64_array, -1, "keys");
  const int64_t* keys = typed_data<int64_t>(a);
  const size_t n = a.ElementLength();
  if (n >= (size_t(1) << 31) - 1) type_error(env, "keys", "fewer than 2^31 - 1 keys", info[0]);
  std::unordered_map<int64_t, int32_t> group;
  group.reserve(n / 8 + 16);
  std::vector<int64_t> distinct;
  std::vector<int32_t> gid(n);
  for (size_t r = 0; r < n; r++) {
    auto it = group.emplace(keys[r], int32_t(distinct.size()));
    if (it.second) distinct.push_back(keys[r]);
    gid[r] = it.first->second;
  }
  const size_t G = distinct.size();
  Napi::Int32Array starts = Napi::Int32Array::New(env, G + 1);
  Napi::Int32Array rows = Napi::Int32Array::New(env, n);
  std::vector<int32_t> fill(G + 1, 0);
  for (size_t r = 0; r < n; r++) fill[size_t(gid[r]) + 1]++;
  for (size_t g = 0; g < G; g++) fill[g + 1] += fill[g];
  for (size_t g = 0; g <= G; g++) starts[g] = fill[g];
  for (size_t r = 0; r < n; r++) rows[size_t(fill[size_t(gid[r])]++)] = int32_t(r);
  auto map = std::make_unique<IdMap>();
  int64_t dup = 0;
  map->build(distinct.data(), int64_t(G), &dup);
  auto handle = Napi::External<IdMap>::New(env, map.release(), [](Napi::Env, IdMap* m) { delete m; });
  napi_type_tag_object(env, handle, &kIdIndexTag);
  Napi::Object out = Napi::Object::New(env);
  out.Set("handle", handle);
  out.Set("starts", starts);
  out.Set("rows", rows);
  return out;
}

// firstNonFinite(values: Float32Array | Uint16Array (bf16 bits)) → the first index holding NaN or
// ±Inf, or -1; scanned in parallel (a mapped bundle's large tables).
Napi::Value FirstNonFinite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) type_error(env, "values", "a Float32Array or Uint16Array", info.Length() ? info[0] : env.Undefined());
  const Napi::TypedArray a = info[0].As<Napi::TypedArray>();
  const bool bf16 = a.TypedArrayType() == napi_uint16_array;
  if (!bf16 && a.TypedArrayType() != napi_float32_array) type_error(env, "values", "a Float32Array or Uint16Array", info[0]);
  const int64_t n = int64_t(a.ElementLength());
  const uint8_t* base = typed_data<uint8_t>(a);
  std::atomic<int64_t> first{n};
  auto scan = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1 && i < first.load(std::memory_order_relaxed); i++) {
      uint32_t exp;
      if (bf16) {
        uint16_t v;
        std::memcpy(&v, base + 2 * i, 2);
        exp = (v >> 7) & 0xff;
      } else {
        uint32_t v;
        std::memcpy(&v, base + 4 * i, 4);
        exp = (v >> 23) & 0xff;
      }
      if (exp == 0xff) {
        for (int64_t cur = first.load(); i < cur && !first.compare_exchange_weak(cur, i);) {
        }
        return;
      }
    }
  };
  {
    cpu::ThreadPool pool(0);
    pool.parallel_for(n, scan, 1 << 20);
  }
  return Napi::Number::New(env, first.load() == n ? -1.0 : double(first.load()));
}

// mapOffset(handle, view) → the offset in the mapping of a typed array's first byte, or -1 when it
// does not lie in the mapping (a copy, or another file's view).
Napi::Value MapOffset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const MappedHandle& m = *tagged<MappedHandle>(info[0], kMappedTag, "handle", "a mapFile() handle");
  if (info.Length() < 2 || !info[1].IsTypedArray()) type_error(env, "view", "a typed array", info.Length() < 2 ? env.Undefined() : info[1]);
  const Napi::TypedArray a = info[1].As<Napi::TypedArray>();
  const uint8_t* p = typed_data<uint8_t>(a);
  const uint8_t* base = m->data();
  if (p < base || p + a.ByteLength() > base + m->size()) return Napi::Number::New(env, -1);
  return Napi::Number::New(env, double(p - base));
}

}  // namespace

Napi::Value mapped_handle_js(Napi::Env env, std::shared_ptr<const MappedFile> m) {
  auto handle = Napi::External<MappedHandle>::New(env, new MappedHandle(std::move(m)), [](Napi::Env, MappedHandle* h) { delete h; });
  napi_type_tag_object(env, handle, &kMappedTag);
  return handle;
}

std::shared_ptr<const MappedFile> mapped_file_of(const Napi::Value& v, const std::string& field) {
  if (v.IsUndefined()) return nullptr;
  return *tagged<MappedHandle>(v, kMappedTag, field, "a mapFile() handle");
}

const IdMap* id_index_of(const Napi::Value& v, const std::string& field) {
  if (v.IsUndefined()) return nullptr;
  return tagged<IdMap>(v, kIdIndexTag, field, "a buildIdIndex() handle");
}

void register_mapped(Napi::Env env, Napi::Object exports) {
  exports.Set("mapFile", Napi::Function::New<MapFile>(env, "mapFile"));
  exports.Set("mapView", Napi::Function::New<MapView>(env, "mapView"));
  exports.Set("mapOffset", Napi::Function::New<MapOffset>(env, "mapOffset"));
  exports.Set("mappedFileChanged", Napi::Function::New<MappedFileChanged>(env, "mappedFileChanged"));
  exports.Set("mappedFileId", Napi::Function::New<MappedFileId>(env, "mappedFileId"));
  exports.Set("buildIdIndex", Napi::Function::New<BuildIdIndex>(env, "buildIdIndex"));
  exports.Set("idIndexRows", Napi::Function::New<IdIndexRows>(env, "idIndexRows"));
  exports.Set("buildGroupIndex", Napi::Function::New<BuildGroupIndex>(env, "buildGroupIndex"));
  exports.Set("firstNonFinite", Napi::Function::New<FirstNonFinite>(env, "firstNonFinite"));
}

}  // namespace adrank::addon
