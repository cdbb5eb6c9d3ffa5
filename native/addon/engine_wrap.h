// JS class Engine (NativeEngine in src/engine/binding.ts): wraps adrank::Engine. rank / retrieve /
// retrieveAndRank / explain / runBatch run on the engine's own request threads (Engine::submit)
// and resolve Promises; finished calls come back through one thread-safe function per engine,
// which completes every ready call per wake-up. The request (a Uint8Array or a WireRequest) is
// referenced for the life of the call and read in place.
#pragma once

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "addon/wire.h"
#include "engine/engine.h"

namespace adrank::addon {

class EngineWrap;
class WireWrap;
class RunWorker;

// One engine call in flight: Execute on an engine request thread, then Complete on the JS thread.
class EngineJob {
 public:
  virtual ~EngineJob() = default;
  virtual void Execute() = 0;
  virtual void Complete(Napi::Env env) = 0;
};

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

  // Drops the native engine: calls not yet started are dropped, running ones are waited for (their
  // requests live in this environment), then the engine is released (freed with its last call).
  void Free();
  void RunFinished();
  // Runs `job` on the engine's request threads and completes it on this JS thread (takes it).
  void Queue(EngineJob* job);

 private:
  Napi::Value Rank(const Napi::CallbackInfo& info);
  Napi::Value Retrieve(const Napi::CallbackInfo& info);
  Napi::Value RetrieveAndRank(const Napi::CallbackInfo& info);
  Napi::Value Explain(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info, Op op);
  RunWorker* NewRun(const Napi::CallbackInfo& info, Op op, size_t at);
  Napi::Value RunHere(const Napi::CallbackInfo& info);
  Napi::Value Mapping(const Napi::CallbackInfo& info);
  Napi::Value RunBatch(const Napi::CallbackInfo& info);
  Napi::Value SetAdState(const Napi::CallbackInfo& info);
  Napi::Value AdStateStats(const Napi::CallbackInfo& info);
  Napi::Value SetFallback(const Napi::CallbackInfo& info);
  Napi::Value Fallback(const Napi::CallbackInfo& info);
  Napi::Value SetWireSchema(const Napi::CallbackInfo& info);
  Napi::Value Prepare(const Napi::CallbackInfo& info);
  Napi::Value Empty(const Napi::CallbackInfo& info);
  static const WireWrap* prepared_wire(const Napi::Value& v, Op op);
#ifdef ADRANK_TEST_HOOKS
  Napi::Value InjectDeviceErrors(const Napi::CallbackInfo& info);
  Napi::Value InjectBackendFault(const Napi::CallbackInfo& info);
#endif
  Napi::Value DeviceStats(const Napi::CallbackInfo& info);
  Napi::Value Inflight(const Napi::CallbackInfo& info);
  Napi::Value Completions(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Share(const Napi::CallbackInfo& info);
  Napi::Value Backend(const Napi::CallbackInfo& info);
  Napi::Value Description(const Napi::CallbackInfo& info);
  Napi::Value NumAds(const Napi::CallbackInfo& info);

  std::shared_ptr<Engine> engine_;
  std::shared_ptr<Registry> registry_;
  int inflight_ = 0;  // touched on the JS thread only
  std::string backend_, description_;
  int64_t num_ads_ = 0;
  int tasks_ = 0;
  wire::WireSchema schema_;  // set by setWireSchema
  bool has_schema_ = false;

  // Completion. Jobs done on request threads wait in `ready` for the next Drain on the JS thread,
  // woken by a thread-safe function. Its finalizer runs at release, or when the environment is
  // torn down first (a worker terminated with calls in flight, when this object may be gone too):
  // after it no thread may touch the function, so request threads call it only under `mu` with
  // `finalized` false, and they reach this state through their own shared_ptr, never through
  // the EngineWrap.
  struct Wake {
    std::mutex mu;
    bool finalized = false;
    napi_threadsafe_function fn = nullptr;
    std::mutex ready_mu;
    std::vector<EngineJob*> ready;
    bool pending = false;  // a wake-up is on its way
    double wakeups = 0, completed = 0;  // JS thread only (completions())
    // the environment is going away (Free): jobs not started are dropped, and Free waits for the
    // running ones, whose requests live in that environment's memory
    bool abandoned = false;
    int executing = 0;
    std::condition_variable idle;
    std::unique_ptr<Napi::AsyncContext> async;
  };
  static void Drain(napi_env env, napi_value, void* wake, void*);
  std::shared_ptr<Wake> wake_;
};

}  // namespace adrank::addon
