// JS class WireRequest (NativeWireRequest in src/engine/binding.ts): one engine RPC's request bytes
// parsed in native code (addon/wire.h), then validated into a feature bundle by Engine.prepare and
// answered with the whole response message written natively (docs/wire.md).
#pragma once

#include <napi.h>

#include "addon/wire.h"

namespace adrank::addon {

class WireWrap : public Napi::ObjectWrap<WireWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // The WireRequest behind `v`, or null when `v` is not one.
  static WireWrap* From(const Napi::Value& v);
  explicit WireWrap(const Napi::CallbackInfo& info);

  wire::Kind kind() const { return kind_; }
  const wire::WireMessage& message() const { return msg_; }
  bool prepared() const { return prepared_; }
  bool released() const { return released_; }
  // How many WireRequests were made, and how many of them released (release()) so far, in this
  // process: a served request is released when its call ends (src/handlers/engine-rpc.ts).
  static uint64_t made_count();
  static uint64_t released_count();
  const wire::Prepared& bundle() const { return prep_; }
  // Set by Engine.prepare (JS thread, before any run reads it).
  void set_prepared(wire::Prepared p, wire::ResponseMeta meta) {
    prep_ = std::move(p);
    meta_ = std::move(meta);
    prepared_ = true;
  }
  const wire::ResponseMeta& meta() const { return meta_; }

 private:
  Napi::Value RequestId(const Napi::CallbackInfo& info);
  Napi::Value ModelVersion(const Napi::CallbackInfo& info);
  Napi::Value AllowFallback(const Napi::CallbackInfo& info);
  Napi::Value Surface(const Napi::CallbackInfo& info);
  Napi::Value DecodeUs(const Napi::CallbackInfo& info);
  Napi::Value ToObject(const Napi::CallbackInfo& info);
  Napi::Value Bundle(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);

  wire::Kind kind_ = wire::Kind::kRank;
  wire::WireMessage msg_;
  bool prepared_ = false;
  bool released_ = false;
  wire::Prepared prep_;
  wire::ResponseMeta meta_;
};

}  // namespace adrank::addon
