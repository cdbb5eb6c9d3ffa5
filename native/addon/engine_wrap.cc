#include "addon/engine_wrap.h"

#include <cmath>
#include <stdexcept>

#include "addon/convert.h"
#include "engine/clock.h"
#include "engine/request_parser.h"

namespace adrank::addon {

namespace {

Napi::Value rejected(Napi::Env env, const Napi::Error& e) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(e.Value());
  return d.Promise();
}

// What every engine call off the JS thread shares: the Promise, the references that keep the JS
// Engine and the request bytes alive while a worker reads them, the in-flight count, the queue time,
// and the conversion of C++ exceptions into rejections (never an abort).
class EngineWorker : public Napi::AsyncWorker {
 public:
  EngineWorker(Napi::Env env, const char* name, EngineWrap* owner, const Napi::Object& self, std::shared_ptr<Engine> engine,
               const Napi::Object& requests, int tasks)
      : Napi::AsyncWorker(env, name),
        engine_(std::move(engine)),
        tasks_(tasks),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        created_(steady_us()) {
    self_ = Napi::Persistent(self);
    requests_ = Napi::Persistent(requests);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  // The caller's deadline, ms since the Unix epoch (0 = none): work still queued past it is dropped.
  void SetDeadline(double epoch_ms) { deadline_ms_ = epoch_ms; }

  void Execute() final {
    const double queue = steady_us() - created_;
    if (deadline_ms_ > 0) {
      const double now_ms = epoch_ms();
      if (now_ms > deadline_ms_) {
        SetError("deadline exceeded: the request waited " + std::to_string(int64_t(queue / 1000)) +
                 " ms for an engine thread and was dropped before it ran");
        return;
      }
    }
    try {
      Run(queue);
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("adrank: unknown native error");
    }
  }

  void OnOK() final {
    owner_->RunFinished();
    engine_.reset();
    Napi::Env env = Env();
    try {
      deferred_.Resolve(Output(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_.Reject(Napi::Error::New(env, e.what()).Value());
    }
  }

  void OnError(const Napi::Error& e) final {
    owner_->RunFinished();
    engine_.reset();
    deferred_.Reject(e.Value());
  }

 protected:
  // On the worker thread: the engine call; `queue` is the time from the call to this thread.
  virtual void Run(double queue) = 0;
  // On the JS thread: what the Promise resolves to.
  virtual Napi::Value Output(Napi::Env env) = 0;

  std::shared_ptr<Engine> engine_;
  int tasks_;

 private:
  Napi::Promise::Deferred deferred_;
  EngineWrap* owner_;              // kept alive by self_
  Napi::ObjectReference self_;     // the JS Engine object
  Napi::ObjectReference requests_; // the request bytes (a Uint8Array, or an array of them), read in place by Run
  double created_;
  double deadline_ms_ = 0;
};

// One rank / retrieve / retrieveAndRank / explain call.
class RunWorker final : public EngineWorker {
 public:
  RunWorker(Napi::Env env, EngineWrap* owner, const Napi::Object& self, std::shared_ptr<Engine> engine, Op op,
            const Napi::TypedArray& request, int tasks)
      : EngineWorker(env, "adrank.engine.run", owner, self, std::move(engine), request, tasks),
        op_(op),
        data_(typed_data<uint8_t>(request)),
        len_(request.ByteLength()) {}

 private:
  void Run(double queue) override {
    switch (op_) {
      case Op::kRank: result_ = engine_->rank(data_, len_); break;
      case Op::kRetrieve: result_ = engine_->retrieve(data_, len_); break;
      case Op::kRetrieveAndRank: result_ = engine_->retrieve_and_rank(data_, len_); break;
      case Op::kExplain: explain_ = engine_->explain(data_, len_); break;
    }
    result_.timings.queue = queue;
  }

  Napi::Value Output(Napi::Env env) override { return op_ == Op::kExplain ? to_js(env, explain_) : to_js(env, result_, tasks_); }

  Op op_;
  const uint8_t* data_;
  size_t len_;
  Result result_;
  adrank::Explain explain_;
};

// One micro-batch (runBatch): one libuv worker for the whole batch, not one per request. Resolves
// to an array with, per request, its NativeResult or an Error.
class BatchWorker final : public EngineWorker {
 public:
  BatchWorker(Napi::Env env, EngineWrap* owner, const Napi::Object& self, std::shared_ptr<Engine> engine,
              const Napi::Array& requests, std::vector<BatchInput> inputs, int tasks)
      : EngineWorker(env, "adrank.engine.batch", owner, self, std::move(engine), requests, tasks), inputs_(std::move(inputs)) {}

 private:
  void Run(double queue) override {
    outputs_ = engine_->run_batch(inputs_);
    for (BatchOutput& o : outputs_) o.result.timings.queue = queue;
  }

  Napi::Value Output(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, outputs_.size());
    for (size_t i = 0; i < outputs_.size(); i++) {
      if (outputs_[i].error.empty()) out.Set(uint32_t(i), to_js(env, outputs_[i].result, tasks_));
      else out.Set(uint32_t(i), Napi::Error::New(env, outputs_[i].error).Value());
    }
    return out;
  }

  std::vector<BatchInput> inputs_;
  std::vector<BatchOutput> outputs_;
};

}  // namespace

Napi::Function EngineWrap::Define(Napi::Env env, std::shared_ptr<Registry>* registry) {
  Napi::Function ctor = DefineClass(env, "Engine",
                                    {
                                        InstanceMethod<&EngineWrap::Rank>("rank"),
                                        InstanceMethod<&EngineWrap::Retrieve>("retrieve"),
                                        InstanceMethod<&EngineWrap::RetrieveAndRank>("retrieveAndRank"),
                                        InstanceMethod<&EngineWrap::Explain>("explain"),
                                        InstanceMethod<&EngineWrap::RunBatch>("runBatch"),
                                        InstanceMethod<&EngineWrap::SetAdState>("setAdState"),
                                        InstanceMethod<&EngineWrap::AdStateStats>("adStateStats"),
                                        InstanceMethod<&EngineWrap::SetFallback>("setFallback"),
                                        InstanceMethod<&EngineWrap::Fallback>("fallback"),
#ifdef ADRANK_TEST_HOOKS
                                        InstanceMethod<&EngineWrap::InjectDeviceErrors>("injectDeviceErrors"),
                                        InstanceMethod<&EngineWrap::InjectBackendFault>("injectBackendFault"),
#endif
                                        InstanceMethod<&EngineWrap::DeviceStats>("deviceStats"),
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
  double deadline = 0;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsNumber()) return rejected(env, Napi::TypeError::New(env, "expected a number (ms since the epoch) for deadline"));
    deadline = info[1].As<Napi::Number>().DoubleValue();
  }
  auto* w = new RunWorker(env, this, Value(), engine_, op, req, tasks_);
  if (deadline > 0 && std::isfinite(deadline)) w->SetDeadline(deadline);
  Napi::Promise p = w->Promise();
  inflight_++;
  w->Queue();
  return p;
}

// runBatch(ops: Uint8Array (0 rank, 1 retrieve, 2 retrieveAndRank), requests: Uint8Array[]).
Napi::Value EngineWrap::RunBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) return rejected(env, Napi::Error::New(env, "engine disposed"));
  std::vector<BatchInput> inputs;
  Napi::Array requests;
  try {
    if (info.Length() < 2 || !info[1].IsArray()) type_error(env, "requests", "an array of Uint8Array", info.Length() < 2 ? env.Undefined() : info[1]);
    requests = info[1].As<Napi::Array>();
    const uint32_t n = requests.Length();
    const Napi::TypedArray ops = typed_array(info[0], napi_uint8_array, int64_t(n), "ops");
    const uint8_t* op = typed_data<uint8_t>(ops);
    inputs.resize(n);
    for (uint32_t i = 0; i < n; i++) {
      const std::string field = "requests[" + std::to_string(i) + "]";
      const Napi::TypedArray req = typed_array(requests.Get(i), napi_uint8_array, -1, field);
      if (req.ByteOffset() % 8 != 0)
        throw Napi::TypeError::New(env, "expected a byteOffset that is a multiple of 8 for " + field + ", got " + std::to_string(req.ByteOffset()));
      if (op[i] > 2) throw Napi::TypeError::New(env, "expected 0 (rank), 1 (retrieve) or 2 (retrieveAndRank) for ops[" + std::to_string(i) + "], got " + std::to_string(op[i]));
      inputs[i].op = op[i] == 0 ? Op::kRank : op[i] == 1 ? Op::kRetrieve : Op::kRetrieveAndRank;
      inputs[i].data = typed_data<uint8_t>(req);
      inputs[i].len = req.ByteLength();
    }
  } catch (const Napi::Error& e) {
    return rejected(env, e);
  }
  auto* w = new BatchWorker(env, this, Value(), engine_, requests, std::move(inputs), tasks_);
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
  // bid overrides are optional: absent = every listed ad bids the bundle's bid
  const bool has_bid = info.Length() > 4 && !info[4].IsUndefined();
  const Napi::TypedArray bid = has_bid ? typed_array(info[4], napi_float32_array, n, "bid") : Napi::TypedArray();
  if (ids.ByteOffset() % 8 || rate.ByteOffset() % 4 || (has_bid && bid.ByteOffset() % 4))
    throw Napi::TypeError::New(env, "expected element-aligned typed arrays for setAdState");
  try {
    const int64_t unknown = engine_->set_ad_state(typed_data<int64_t>(ids), typed_data<uint8_t>(active), typed_data<uint8_t>(in_budget),
                                                  typed_data<float>(rate), has_bid ? typed_data<float>(bid) : nullptr, size_t(n));
    return Napi::Number::New(env, double(unknown));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// { chunkRows, chunks, lastCopied }: the copy-on-write layout of the live state and what the last
// batch copied.
Napi::Value EngineWrap::AdStateStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) throw Napi::Error::New(env, "engine disposed");
  Napi::Object o = Napi::Object::New(env);
  o.Set("chunkRows", double(AdStateTable::kChunkRows));
  o.Set("chunks", double((engine_->num_ads() + AdStateTable::kChunkRows - 1) / AdStateTable::kChunkRows));
  o.Set("lastCopied", double(engine_->ad_state_last_copied()));
  return o;
}

// A non-negative integer argument.
static int64_t count_arg(const Napi::CallbackInfo& info, size_t i, const std::string& field) {
  const Napi::Value v = i < info.Length() ? info[i] : info.Env().Undefined();
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= 2147483647.0 && d == double(int64_t(d)))) type_error(info.Env(), field, "a non-negative integer", v);
  return int64_t(d);
}

Napi::Value EngineWrap::SetFallback(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) throw Napi::Error::New(env, "engine disposed");
  const int64_t surface = count_arg(info, 0, "surface");
  const Napi::TypedArray rows = typed_array(info[1], napi_int32_array, -1, "rows");
  if (info.Length() < 3 || !info[2].IsNumber()) type_error(env, "value", "a number", info[2]);
  const Napi::TypedArray probs = typed_array(info[3], napi_float32_array, -1, "probs");
  if (rows.ByteOffset() % 4 || probs.ByteOffset() % 4) throw Napi::TypeError::New(env, "expected element-aligned typed arrays for setFallback");
  try {
    engine_->set_fallback(uint32_t(surface), typed_data<int32_t>(rows), rows.ElementLength(), info[2].As<Napi::Number>().FloatValue(),
                          typed_data<float>(probs), probs.ElementLength());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

// Synchronous: host memory only, well under a millisecond for K = 100 (bench/RESULTS.md).
Napi::Value EngineWrap::Fallback(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) throw Napi::Error::New(env, "engine disposed");
  const Napi::TypedArray req = typed_array(info[0], napi_uint8_array, -1, "request");
  if (req.ByteOffset() % 8 != 0) throw Napi::TypeError::New(env, "expected a byteOffset that is a multiple of 8 for request, got " + std::to_string(req.ByteOffset()));
  const std::string name = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  Op op;
  if (name == "rank") op = Op::kRank;
  else if (name == "retrieve") op = Op::kRetrieve;
  else if (name == "retrieveAndRank") op = Op::kRetrieveAndRank;
  else type_error(env, "op", "rank, retrieve or retrieveAndRank", info.Length() > 1 ? info[1] : env.Undefined());
  try {
    return to_js(env, engine_->fallback(typed_data<uint8_t>(req), req.ByteLength(), op), tasks_);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

#ifdef ADRANK_TEST_HOOKS
Napi::Value EngineWrap::InjectDeviceErrors(const Napi::CallbackInfo& info) {
  if (!engine_) throw Napi::Error::New(info.Env(), "engine disposed");
  // kind: "illegal-address" (default) or "hung" (the CUDA watchdog's error)
  const bool hung = info.Length() > 1 && info[1].IsString() && info[1].As<Napi::String>().Utf8Value() == "hung";
  engine_->inject_device_errors(int(count_arg(info, 0, "n")), hung);
  return info.Env().Undefined();
}

// injectBackendFault(kind, n): Backend::inject_fault (the CUDA backend: "capture", "hang").
Napi::Value EngineWrap::InjectBackendFault(const Napi::CallbackInfo& info) {
  if (!engine_) throw Napi::Error::New(info.Env(), "engine disposed");
  if (!info[0].IsString()) type_error(info.Env(), "kind", "a string", info[0]);
  try {
    engine_->inject_backend_fault(info[0].As<Napi::String>().Utf8Value(), int(count_arg(info, 1, "n")));
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}
#endif

// deviceStats(): the backend's DeviceStats (graphs held, failed captures, eager-only keys, streams
// lost to the watchdog); all zero on the CPU backend.
Napi::Value EngineWrap::DeviceStats(const Napi::CallbackInfo& info) {
  if (!engine_) throw Napi::Error::New(info.Env(), "engine disposed");
  const adrank::DeviceStats d = engine_->device_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("graphs", double(d.graphs));
  o.Set("captureFailures", double(d.capture_failures));
  o.Set("eagerOnlyKeys", double(d.eager_only_keys));
  o.Set("lostStreams", double(d.lost_streams));
  return o;
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
