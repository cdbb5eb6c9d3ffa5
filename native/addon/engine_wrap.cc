#include "addon/engine_wrap.h"

#include <chrono>
#include <stdexcept>

#include "addon/convert.h"
#include "engine/request_parser.h"

namespace adrank::addon {

namespace {

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Napi::Value rejected(Napi::Env env, const Napi::Error& e) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(e.Value());
  return d.Promise();
}

// One rank / retrieve / retrieveAndRank / explain call, off the JS thread.
class RunWorker final : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, EngineWrap* owner, const Napi::Object& self, std::shared_ptr<Engine> engine, Op op,
            const Napi::TypedArray& request, int tasks)
      : Napi::AsyncWorker(env, "adrank.engine.run"),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        engine_(std::move(engine)),
        op_(op),
        tasks_(tasks),
        created_(now_us()) {
    self_ = Napi::Persistent(self);
    request_ = Napi::Persistent(static_cast<Napi::Object>(request));
    data_ = typed_data<uint8_t>(request);
    len_ = request.ByteLength();
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    const double queue = now_us() - created_;
    try {
      switch (op_) {
        case Op::kRank: result_ = engine_->rank(data_, len_); break;
        case Op::kRetrieve: result_ = engine_->retrieve(data_, len_); break;
        case Op::kRetrieveAndRank: result_ = engine_->retrieve_and_rank(data_, len_); break;
        case Op::kExplain: explain_ = engine_->explain(data_, len_); break;
      }
      result_.timings.queue = queue;
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("adrank: unknown native error");
    }
  }

  void OnOK() override {
    owner_->RunFinished();
    engine_.reset();
    Napi::Env env = Env();
    try {
      if (op_ == Op::kExplain) deferred_.Resolve(to_js(env, explain_));
      else deferred_.Resolve(to_js(env, result_, tasks_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_.Reject(Napi::Error::New(env, e.what()).Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    owner_->RunFinished();
    engine_.reset();
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  EngineWrap* owner_;             // kept alive by self_
  Napi::ObjectReference self_;    // the JS Engine object
  Napi::ObjectReference request_; // the request Uint8Array, read in place by Execute
  std::shared_ptr<Engine> engine_;
  Op op_;
  int tasks_;
  double created_;
  const uint8_t* data_ = nullptr;
  size_t len_ = 0;
  Result result_;
  adrank::Explain explain_;
};

}  // namespace

Napi::Function EngineWrap::Define(Napi::Env env, std::shared_ptr<Registry>* registry) {
  Napi::Function ctor = DefineClass(env, "Engine",
                                    {
                                        InstanceMethod<&EngineWrap::Rank>("rank"),
                                        InstanceMethod<&EngineWrap::Retrieve>("retrieve"),
                                        InstanceMethod<&EngineWrap::RetrieveAndRank>("retrieveAndRank"),
                                        InstanceMethod<&EngineWrap::Explain>("explain"),
                                        InstanceMethod<&EngineWrap::SetAdState>("setAdState"),
                                        InstanceMethod<&EngineWrap::Inflight>("inflight"),
                                        InstanceMethod<&EngineWrap::Dispose>("dispose"),
                                        InstanceAccessor<&EngineWrap::Backend>("backend"),
                                        InstanceAccessor<&EngineWrap::Description>("description"),
                                        InstanceAccessor<&EngineWrap::NumAds>("numAds"),
                                    },
                                    registry);
  return ctor;
}

EngineWrap::EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
  Napi::Env env = info.Env();
  registry_ = *static_cast<std::shared_ptr<Registry>*>(info.Data());
  if (!info.IsConstructCall()) throw Napi::TypeError::New(env, "Engine must be called with new");
  if (info.Length() < 1 || !info[0].IsObject()) type_error(env, "the Engine constructor argument", "a NativeModelInit object", info[0]);
  const Napi::Object init = info[0].As<Napi::Object>();
  const std::string device = get_string(init, "device", "device");
  const int threads = get_int(init, "threads", "threads", 0, 4096);
  const std::string precision = init.Get("precision").IsUndefined() ? "fp32" : get_string(init, "precision", "precision");
  const ModelInit mi = model_init(init);
  try {
    engine_ = std::make_shared<Engine>(mi, device, threads, precision);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  backend_ = engine_->backend_kind();
  description_ = engine_->description();
  num_ads_ = engine_->num_ads();
  tasks_ = engine_->model().dims().tasks;
  std::lock_guard<std::mutex> lock(registry_->mu);
  registry_->live.insert(this);
}

EngineWrap::~EngineWrap() {
  std::lock_guard<std::mutex> lock(registry_->mu);
  registry_->live.erase(this);
}

void EngineWrap::Free() { engine_.reset(); }

Napi::Value EngineWrap::Rank(const Napi::CallbackInfo& info) { return Run(info, Op::kRank); }
Napi::Value EngineWrap::Retrieve(const Napi::CallbackInfo& info) { return Run(info, Op::kRetrieve); }
Napi::Value EngineWrap::RetrieveAndRank(const Napi::CallbackInfo& info) { return Run(info, Op::kRetrieveAndRank); }
Napi::Value EngineWrap::Explain(const Napi::CallbackInfo& info) { return Run(info, Op::kExplain); }

Napi::Value EngineWrap::Run(const Napi::CallbackInfo& info, Op op) {
  Napi::Env env = info.Env();
  if (!engine_) return rejected(env, Napi::Error::New(env, "engine disposed"));
  Napi::TypedArray req;
  try {
    req = typed_array(info[0], napi_uint8_array, -1, "request");
    if (req.ByteOffset() % 8 != 0)
      throw Napi::TypeError::New(env, "expected a byteOffset that is a multiple of 8 for request, got " + std::to_string(req.ByteOffset()));
  } catch (const Napi::Error& e) {
    return rejected(env, e);
  }
  auto* w = new RunWorker(env, this, Value(), engine_, op, req, tasks_);
  Napi::Promise p = w->Promise();
  inflight_++;
  w->Queue();
  return p;
}

Napi::Value EngineWrap::SetAdState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) throw Napi::Error::New(env, "engine disposed");
  const Napi::TypedArray ids = typed_array(info[0], napi_bigint64_array, -1, "ids");
  const int64_t n = int64_t(ids.ElementLength());
  const Napi::TypedArray active = typed_array(info[1], napi_uint8_array, n, "active");
  const Napi::TypedArray in_budget = typed_array(info[2], napi_uint8_array, n, "inBudget");
  const Napi::TypedArray rate = typed_array(info[3], napi_float32_array, n, "pacingRate");
  if (ids.ByteOffset() % 8 || rate.ByteOffset() % 4) throw Napi::TypeError::New(env, "expected element-aligned typed arrays for setAdState");
  try {
    const int64_t unknown = engine_->set_ad_state(typed_data<int64_t>(ids), typed_data<uint8_t>(active), typed_data<uint8_t>(in_budget),
                                                  typed_data<float>(rate), size_t(n));
    return Napi::Number::New(env, double(unknown));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value EngineWrap::Inflight(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), inflight_); }

Napi::Value EngineWrap::Dispose(const Napi::CallbackInfo& info) {
  if (inflight_ > 0) throw Napi::Error::New(info.Env(), "engine busy: " + std::to_string(inflight_) + " runs in flight");
  Free();
  return info.Env().Undefined();
}

Napi::Value EngineWrap::Backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), backend_); }
Napi::Value EngineWrap::Description(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), description_); }
Napi::Value EngineWrap::NumAds(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(num_ads_)); }

}  // namespace adrank::addon
