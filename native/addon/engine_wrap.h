// JS class Engine (NativeEngine in src/engine/binding.ts): wraps adrank::Engine. rank / retrieve /
// retrieveAndRank / explain run on libuv worker threads (Napi::AsyncWorker) and resolve Promises;
// the request Uint8Array is referenced for the life of the call and read in place.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "engine/engine.h"

namespace adrank::addon {

class EngineWrap;

// Live engines of one JS environment, freed by the env cleanup hook at teardown.
struct Registry {
  std::mutex mu;
  std::set<EngineWrap*> live;
};

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  // `registry` must outlive every Engine of this env (it lives in the addon's instance data).
  static Napi::Function Define(Napi::Env env, std::shared_ptr<Registry>* registry);
  explicit EngineWrap(const Napi::CallbackInfo& info);
  ~EngineWrap() override;

  // Drops the native engine (runs still in flight keep their own reference until they finish).
  void Free();
  void RunFinished() { inflight_--; }

 private:
  Napi::Value Rank(const Napi::CallbackInfo& info);
  Napi::Value Retrieve(const Napi::CallbackInfo& info);
  Napi::Value RetrieveAndRank(const Napi::CallbackInfo& info);
  Napi::Value Explain(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info, Op op);
  Napi::Value RunBatch(const Napi::CallbackInfo& info);
  Napi::Value SetAdState(const Napi::CallbackInfo& info);
  Napi::Value AdStateStats(const Napi::CallbackInfo& info);
  Napi::Value SetFallback(const Napi::CallbackInfo& info);
  Napi::Value Fallback(const Napi::CallbackInfo& info);
#ifdef ADRANK_TEST_HOOKS
  Napi::Value InjectDeviceErrors(const Napi::CallbackInfo& info);
  Napi::Value InjectBackendFault(const Napi::CallbackInfo& info);
#endif
  Napi::Value DeviceStats(const Napi::CallbackInfo& info);
  Napi::Value Inflight(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Backend(const Napi::CallbackInfo& info);
  Napi::Value Description(const Napi::CallbackInfo& info);
  Napi::Value NumAds(const Napi::CallbackInfo& info);

  std::shared_ptr<Engine> engine_;
  std::shared_ptr<Registry> registry_;
  int inflight_ = 0;  // touched on the JS thread only
  std::string backend_, description_;
  int64_t num_ads_ = 0;
  int tasks_ = 0;
};

}  // namespace adrank::addon
