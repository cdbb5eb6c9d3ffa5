// Node-API glue for mapped bundle files and id indexes (engine/mapped_file.h, engine/id_map.h):
// mapFile, mapView, mappedFileChanged, buildIdIndex, idIndexRows, buildGroupIndex, firstNonFinite (NativeBinding in src/engine/binding.ts).
#pragma once

#include <napi.h>

#include <memory>

#include "engine/id_map.h"
#include "engine/mapped_file.h"

namespace adrank::addon {

void register_mapped(Napi::Env env, Napi::Object exports);
// The handle of a mapFile() result (its `handle`), or null when `v` is undefined; throws a TypeError
// naming `field` for anything else.
std::shared_ptr<const MappedFile> mapped_file_of(const Napi::Value& v, const std::string& field);
// A mapFile() handle (for mapView) on `m`, for the calling thread: another thread's engine hands its
// mapping over this way, so that views are made of it without a copy.
Napi::Value mapped_handle_js(Napi::Env env, std::shared_ptr<const MappedFile> m);
// The IdMap of a buildIdIndex() result's `handle`, or null when `v` is undefined.
const IdMap* id_index_of(const Napi::Value& v, const std::string& field);

}  // namespace adrank::addon
