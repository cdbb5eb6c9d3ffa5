// Small typed accessors between JS values and the engine's C++ types. Every accessor checks the
// JS type (and, for typed arrays, the element type and length) and throws Napi::TypeError with
// "expected <what> for <field>, got <value>".
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/results.h"

namespace adrank::addon {

std::string describe(const Napi::Value& v);
[[noreturn]] void type_error(Napi::Env env, const std::string& field, const std::string& what, const Napi::Value& got);

Napi::Object get_object(const Napi::Object& o, const char* key, const std::string& field);
int get_int(const Napi::Object& o, const char* key, const std::string& field, double min = 0, double max = 2147483647.0);
double get_number(const Napi::Object& o, const char* key, const std::string& field);
bool get_bool(const Napi::Object& o, const char* key, const std::string& field);
std::string get_string(const Napi::Object& o, const char* key, const std::string& field);
std::vector<int> get_int_array(const Napi::Object& o, const char* key, const std::string& field);
std::vector<double> get_number_array(const Napi::Object& o, const char* key, const std::string& field);
std::vector<std::string> get_string_array(const Napi::Object& o, const char* key, const std::string& field);

// A typed array of element type `type` with exactly `length` elements (length < 0: any).
Napi::TypedArray typed_array(const Napi::Value& v, napi_typedarray_type type, int64_t length, const std::string& field);
template <typename T>
T* typed_data(const Napi::TypedArray& a) {
  return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
}

// NativeModelInit → dims + borrowed tensors (valid while the JS object is alive).
ModelInit model_init(const Napi::Object& init);

// The NativeResult of `r`; with `response`, its `response` Buffer holds those bytes (moved out of
// *response where they are not copied).
Napi::Object to_js(Napi::Env env, const Result& r, int tasks, std::string* response = nullptr);
Napi::Object to_js(Napi::Env env, const Explain& e);

Napi::Float32Array f32_array(Napi::Env env, const float* p, size_t n);

}  // namespace adrank::addon
