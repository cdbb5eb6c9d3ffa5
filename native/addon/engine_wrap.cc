#include "addon/engine_wrap.h"

#include <cmath>
#include <optional>
#include <stdexcept>

#include "addon/convert.h"
#include "addon/mapped.h"
#include "addon/shared_engines.h"
#include "addon/wire_wrap.h"
#include "engine/clock.h"
#include "engine/request_parser.h"

namespace adrank::addon {

namespace {

// The response of a WireRequest for `r` (off the JS thread: the request is not changed after prepare).
std::string respond(const WireWrap* w, const Result& r, int fallback_reason = 0) {
  std::string out;
  if (fallback_reason == 0) {
    wire::encode_response(r, w->meta(), &out);
  } else {
    wire::ResponseMeta meta = w->meta();
    meta.fallback_reason = fallback_reason;
    wire::encode_response(r, meta, &out);
  }
  return out;
}

Napi::Value rejected(Napi::Env env, const Napi::Error& e) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(e.Value());
  return d.Promise();
}

// What every engine call off the JS thread shares: the Promise, the references that keep the JS
// Engine and the request bytes alive while a request thread reads them, the in-flight count, the
// queue time, and the conversion of C++ exceptions into rejections (never an abort). Execute runs
// on one of the engine's request threads (Engine::submit), Complete on the JS thread, from the
// engine's completion wake-up (EngineWrap::Drain).
class EngineWorker : public EngineJob {
 public:
  EngineWorker(Napi::Env env, EngineWrap* owner, const Napi::Object& self, std::shared_ptr<Engine> engine,
               const Napi::Object& requests, int tasks)
      : engine_(std::move(engine)),
        tasks_(tasks),
        owner_(owner),
        created_(steady_us()),
        self_value_(self),
        requests_value_(requests) {}

  // For a job handed to Queue: the Promise it settles. The engine object and the request bytes are
  // held by references from here until Complete (a run on the calling thread needs neither: its
  // caller's arguments stay alive through the call, and a reference is a hash-set insert and erase).
  Napi::Promise Promise(Napi::Env env) {
    self_ = Napi::Persistent(self_value_);
    requests_ = Napi::Persistent(requests_value_);
    deferred_.emplace(Napi::Promise::Deferred::New(env));
    return deferred_->Promise();
  }

  // Runs the job here, on the calling JS thread, and returns its output (throws its error): for
  // work smaller than a hand-off to a request thread and back (EngineWrap::RunHere).
  Napi::Value ExecuteHere(Napi::Env env) {
    Execute();
    engine_.reset();
    if (failed_) throw Napi::Error::New(env, error_);
    return Output(env);
  }

  // The caller's deadline, ms since the Unix epoch (0 = none): work still queued past it is dropped.
  void SetDeadline(double epoch_ms) { deadline_ms_ = epoch_ms; }

  void Execute() final {
    const double queue = steady_us() - created_;
    if (deadline_ms_ > 0) {
      const double now_ms = epoch_ms();
      if (now_ms > deadline_ms_) {
        error_ = "deadline exceeded: the request waited " + std::to_string(int64_t(queue / 1000)) +
                 " ms for an engine thread and was dropped before it ran";
        failed_ = true;
        return;
      }
    }
    try {
      Run(queue);
    } catch (const std::exception& e) {
      error_ = e.what();
      failed_ = true;
    } catch (...) {
      error_ = "adrank: unknown native error";
      failed_ = true;
    }
  }

  void Complete(Napi::Env env) final {
    owner_->RunFinished();
    engine_.reset();
    if (failed_) {
      deferred_->Reject(Napi::Error::New(env, error_).Value());
      return;
    }
    try {
      deferred_->Resolve(Output(env));
    } catch (const Napi::Error& e) {
      deferred_->Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_->Reject(Napi::Error::New(env, e.what()).Value());
    }
  }

 protected:
  // On a request thread: the engine call; `queue` is the time from the call to this thread.
  virtual void Run(double queue) = 0;
  // On the JS thread: what the Promise resolves to.
  virtual Napi::Value Output(Napi::Env env) = 0;

  std::shared_ptr<Engine> engine_;
  int tasks_;

 private:
  std::optional<Napi::Promise::Deferred> deferred_;
  EngineWrap* owner_;              // kept alive by self_ (or, run here, by the caller)
  Napi::Object self_value_;        // the JS Engine object and the request bytes (a Uint8Array, or an
  Napi::Object requests_value_;    //   array of them, read in place by Run): valid in the creating call
  Napi::ObjectReference self_;     // ... and held from Promise() on, for a queued job
  Napi::ObjectReference requests_;
  double created_;
  double deadline_ms_ = 0;
  bool failed_ = false;
  std::string error_;
};

}  // namespace

// One rank / retrieve / retrieveAndRank / explain call.
class RunWorker final : public EngineWorker {
 public:
  RunWorker(Napi::Env env, EngineWrap* owner, const Napi::Object& self, std::shared_ptr<Engine> engine, Op op,
            const Napi::Object& request, const uint8_t* data, size_t len, const WireWrap* wire, int tasks)
      : EngineWorker(env, owner, self, std::move(engine), request, tasks),
        op_(op),
        data_(data),
        len_(len),
        wire_(wire) {}

 private:
  void Run(double queue) override {
    switch (op_) {
      case Op::kRank: result_ = engine_->rank(data_, len_); break;
      case Op::kRetrieve: result_ = engine_->retrieve(data_, len_); break;
      case Op::kRetrieveAndRank: result_ = engine_->retrieve_and_rank(data_, len_); break;
      case Op::kExplain: explain_ = engine_->explain(data_, len_); break;
    }
    result_.timings.queue = queue;
    if (wire_) response_ = respond(wire_, result_);
  }

  Napi::Value Output(Napi::Env env) override {
    return op_ == Op::kExplain ? to_js(env, explain_) : to_js(env, result_, tasks_, wire_ ? &response_ : nullptr);
  }

  Op op_;
  const uint8_t* data_;
  size_t len_;
  const WireWrap* wire_;  // kept alive by the request reference
  std::string response_;
  Result result_;
  adrank::Explain explain_;
};

namespace {

// One micro-batch (runBatch): one libuv worker for the whole batch, not one per request. Resolves
// to an array with, per request, its NativeResult or an Error.
class BatchWorker final : public EngineWorker {
 public:
  BatchWorker(Napi::Env env, EngineWrap* owner, const Napi::Object& self, std::shared_ptr<Engine> engine,
              const Napi::Array& requests, std::vector<BatchInput> inputs, std::vector<const WireWrap*> wires, int tasks)
      : EngineWorker(env, owner, self, std::move(engine), requests, tasks),
        inputs_(std::move(inputs)),
        wires_(std::move(wires)) {}

 private:
  void Run(double queue) override {
    outputs_ = engine_->run_batch(inputs_);
    responses_.resize(outputs_.size());
    for (size_t i = 0; i < outputs_.size(); i++) {
      outputs_[i].result.timings.queue = queue;
      if (wires_[i] && outputs_[i].error.empty()) responses_[i] = respond(wires_[i], outputs_[i].result);
    }
  }

  Napi::Value Output(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, outputs_.size());
    for (size_t i = 0; i < outputs_.size(); i++) {
      if (outputs_[i].error.empty()) out.Set(uint32_t(i), to_js(env, outputs_[i].result, tasks_, wires_[i] ? &responses_[i] : nullptr));
      else out.Set(uint32_t(i), Napi::Error::New(env, outputs_[i].error).Value());
    }
    return out;
  }

  std::vector<BatchInput> inputs_;
  std::vector<const WireWrap*> wires_;  // per request: its WireRequest (answered with its response), or null
  std::vector<BatchOutput> outputs_;
  std::vector<std::string> responses_;
};

}  // namespace

Napi::Function EngineWrap::Define(Napi::Env env, std::shared_ptr<Registry>* registry) {
  Napi::Function ctor = DefineClass(env, "Engine",
                                    {
                                        InstanceMethod<&EngineWrap::Rank>("rank"),
                                        InstanceMethod<&EngineWrap::Retrieve>("retrieve"),
                                        InstanceMethod<&EngineWrap::RetrieveAndRank>("retrieveAndRank"),
                                        InstanceMethod<&EngineWrap::Explain>("explain"),
                                        InstanceMethod<&EngineWrap::RunHere>("runHere"),
                                        InstanceMethod<&EngineWrap::RunBatch>("runBatch"),
                                        InstanceMethod<&EngineWrap::SetAdState>("setAdState"),
                                        InstanceMethod<&EngineWrap::AdStateStats>("adStateStats"),
                                        InstanceMethod<&EngineWrap::SetFallback>("setFallback"),
                                        InstanceMethod<&EngineWrap::Fallback>("fallback"),
                                        InstanceMethod<&EngineWrap::SetWireSchema>("setWireSchema"),
                                        InstanceMethod<&EngineWrap::Prepare>("prepare"),
                                        InstanceMethod<&EngineWrap::Empty>("empty"),
#ifdef ADRANK_TEST_HOOKS
                                        InstanceMethod<&EngineWrap::InjectDeviceErrors>("injectDeviceErrors"),
                                        InstanceMethod<&EngineWrap::InjectBackendFault>("injectBackendFault"),
#endif
                                        InstanceMethod<&EngineWrap::DeviceStats>("deviceStats"),
                                        InstanceMethod<&EngineWrap::Inflight>("inflight"),
                                        InstanceMethod<&EngineWrap::Completions>("completions"),
                                        InstanceMethod<&EngineWrap::Dispose>("dispose"),
                                        InstanceMethod<&EngineWrap::Share>("share"),
                                        InstanceMethod<&EngineWrap::Mapping>("mapping"),
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
  if (init.Has("shared")) {
    // { shared: key }: the engine another JS thread of this process shared (share())
    const double key = get_number(init, "shared", "shared");
    engine_ = attach_engine(uint64_t(key));
    if (!engine_) throw Napi::Error::New(env, "no shared engine " + std::to_string(uint64_t(key)) + ": every thread that held it has let go");
  } else {
    const std::string device = get_string(init, "device", "device");
    const int threads = get_int(init, "threads", "threads", 0, 4096);
    const std::string precision = init.Get("precision").IsUndefined() ? "fp32" : get_string(init, "precision", "precision");
    const int spin_us = init.Get("cpuSpinUs").IsUndefined() ? -1 : get_int(init, "cpuSpinUs", "cpuSpinUs", 0, 10000);
    const ModelInit mi = model_init(init);
    try {
      engine_ = std::make_shared<Engine>(mi, device, threads, precision, spin_us);
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }
  backend_ = engine_->backend_kind();
  description_ = engine_->description();
  num_ads_ = engine_->num_ads();
  tasks_ = engine_->model().dims().tasks;
  std::lock_guard<std::mutex> lock(registry_->mu);
  registry_->live.insert(this);
}

EngineWrap::~EngineWrap() {
  if (wake_) {
    std::lock_guard<std::mutex> lock(wake_->mu);
    if (!wake_->finalized) napi_release_threadsafe_function(wake_->fn, napi_tsfn_release);
  }
  std::lock_guard<std::mutex> lock(registry_->mu);
  registry_->live.erase(this);
}

// Hands a job to the engine's request threads; it comes back through Drain. The completion wake-up
// (one thread-safe function per engine, so per JS thread) is made at the first job and holds the
// event loop open only while jobs are in flight.
void EngineWrap::Queue(EngineJob* job) {
  Napi::Env env = Env();
  if (!wake_) {
    napi_value name;
    NAPI_THROW_IF_FAILED_VOID(env, napi_create_string_utf8(env, "adrank.engine.done", NAPI_AUTO_LENGTH, &name));
    auto wake = std::make_shared<Wake>();
    wake->async = std::make_unique<Napi::AsyncContext>(env, "adrank.engine.run");
    auto* hold = new std::shared_ptr<Wake>(wake);
    const napi_status st = napi_create_threadsafe_function(
        env, nullptr, nullptr, name, 0, 1, hold,
        [](napi_env, void* data, void*) {
          auto* w = static_cast<std::shared_ptr<Wake>*>(data);
          {
            std::lock_guard<std::mutex> lock((*w)->mu);
            (*w)->finalized = true;
          }
          (void)(*w)->async.release();  // its environment is going or gone: nothing to destroy it with
          delete w;
        },
        wake.get(), &EngineWrap::Drain, &wake->fn);
    if (st != napi_ok) {
      delete hold;
      delete job;
      NAPI_THROW_IF_FAILED_VOID(env, st);
    }
    napi_unref_threadsafe_function(env, wake->fn);
    wake_ = std::move(wake);
  }
  if (inflight_++ == 0) napi_ref_threadsafe_function(env, wake_->fn);
  std::shared_ptr<Engine> engine = engine_;
  engine->submit([job, wake = wake_] {
    {
      std::lock_guard<std::mutex> lock(wake->ready_mu);
      if (wake->abandoned) return;  // its environment is gone: the job is left unrun
      wake->executing++;
    }
    job->Execute();
    bool send = false;
    {
      std::lock_guard<std::mutex> lock(wake->ready_mu);
      wake->executing--;
      wake->ready.push_back(job);
      send = !wake->pending && !wake->abandoned;
      wake->pending = true;
    }
    wake->idle.notify_all();
    if (!send) return;
    std::lock_guard<std::mutex> lock(wake->mu);
    if (!wake->finalized) napi_call_threadsafe_function(wake->fn, nullptr, napi_tsfn_nonblocking);
  });
}

// On the JS thread: completes every job that is ready (one wake-up for all of them), inside a
// callback scope so that the Promises' reactions run when it closes.
void EngineWrap::Drain(napi_env raw, napi_value, void* context, void*) {
  if (raw == nullptr || context == nullptr) return;  // the environment is being torn down
  auto* wake = static_cast<Wake*>(context);
  Napi::Env env(raw);
  std::vector<EngineJob*> ready;
  {
    std::lock_guard<std::mutex> lock(wake->ready_mu);
    ready.swap(wake->ready);
    wake->pending = false;
  }
  size_t done = 0;
  wake->wakeups++;
  wake->completed += double(ready.size());
  try {
    Napi::HandleScope handles(env);
    Napi::CallbackScope scope(env, *wake->async);
    for (; done < ready.size(); done++) {
      Napi::HandleScope per_job(env);
      ready[done]->Complete(env);
      delete ready[done];
    }
  } catch (...) {
    // the environment is going away (a worker terminated with calls in flight): nothing more can
    // be completed, and the jobs left hold references into it, so they are left as they are
  }
}

void EngineWrap::RunFinished() {
  if (--inflight_ == 0 && wake_) {
    std::lock_guard<std::mutex> lock(wake_->mu);
    if (!wake_->finalized) napi_unref_threadsafe_function(Env(), wake_->fn);
  }
}

void EngineWrap::Free() {
  if (wake_) {
    // the environment is going away: no queued job starts now, and the running ones finish first
    std::unique_lock<std::mutex> lock(wake_->ready_mu);
    wake_->abandoned = true;
    wake_->idle.wait(lock, [&] { return wake_->executing == 0; });
  }
  engine_.reset();
}

Napi::Value EngineWrap::Rank(const Napi::CallbackInfo& info) { return Run(info, Op::kRank); }
Napi::Value EngineWrap::Retrieve(const Napi::CallbackInfo& info) { return Run(info, Op::kRetrieve); }
Napi::Value EngineWrap::RetrieveAndRank(const Napi::CallbackInfo& info) { return Run(info, Op::kRetrieveAndRank); }
Napi::Value EngineWrap::Explain(const Napi::CallbackInfo& info) { return Run(info, Op::kExplain); }

// The job of one run: the request (a prepared WireRequest, or a feature bundle) at info[at], the
// deadline (ms since the epoch) at info[at + 1]. Throws Napi::Error for a bad argument.
RunWorker* EngineWrap::NewRun(const Napi::CallbackInfo& info, Op op, size_t at) {
  Napi::Env env = info.Env();
  if (!engine_) throw Napi::Error::New(env, "engine disposed");
  const uint8_t* data = nullptr;
  size_t len = 0;
  const WireWrap* wire = op == Op::kExplain ? nullptr : prepared_wire(info[at], op);
  if (wire) {
    data = reinterpret_cast<const uint8_t*>(wire->bundle().bundle.data());
    len = wire->bundle().bundle_len;
  } else {
    const Napi::TypedArray req = typed_array(info[at], napi_uint8_array, -1, "request");
    if (req.ByteOffset() % 8 != 0)
      throw Napi::TypeError::New(env, "expected a byteOffset that is a multiple of 8 for request, got " + std::to_string(req.ByteOffset()));
    data = typed_data<uint8_t>(req);
    len = req.ByteLength();
  }
  double deadline = 0;
  if (info.Length() > at + 1 && !info[at + 1].IsUndefined()) {
    if (!info[at + 1].IsNumber()) throw Napi::TypeError::New(env, "expected a number (ms since the epoch) for deadline");
    deadline = info[at + 1].As<Napi::Number>().DoubleValue();
  }
  auto* w = new RunWorker(env, this, Value(), engine_, op, info[at].As<Napi::Object>(), data, len, wire, tasks_);
  if (deadline > 0 && std::isfinite(deadline)) w->SetDeadline(deadline);
  return w;
}

Napi::Value EngineWrap::Run(const Napi::CallbackInfo& info, Op op) {
  Napi::Env env = info.Env();
  RunWorker* w;
  try {
    w = NewRun(info, op, 0);
  } catch (const Napi::Error& e) {
    return rejected(env, e);
  }
  Napi::Promise p = w->Promise(env);
  Queue(w);
  return p;
}

// runHere(op: 0 rank | 1 retrieve | 2 retrieveAndRank, request, deadline?): the run on this JS
// thread, returning its result (throwing its error), for requests whose whole engine time is less
// than a hand-off to a request thread and back costs (docs/wire.md "Inline runs"). The CPU backend
// only: a device run would hold the event loop while the device works.
// mapping(): a mapFile() handle on the bundle file this engine reads in place, for this thread
// (undefined when its tables were copied): a thread that attached to a shared engine makes its
// views of the ad tables from it, without a copy.
Napi::Value EngineWrap::Mapping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_ || !engine_->model().mapping) return env.Undefined();
  return mapped_handle_js(env, engine_->model().mapping);
}

Napi::Value EngineWrap::RunHere(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) type_error(env, "op", "0, 1 or 2", info[0]);
  const int o = info[0].As<Napi::Number>().Int32Value();
  if (o < 0 || o > 2) type_error(env, "op", "0, 1 or 2", info[0]);
  if (backend_ != "cpu") throw Napi::Error::New(env, "runHere is for the cpu backend, this engine's is " + backend_);
  std::unique_ptr<RunWorker> w(NewRun(info, o == 0 ? Op::kRank : o == 1 ? Op::kRetrieve : Op::kRetrieveAndRank, 1));
  return w->ExecuteHere(env);
}

// runBatch(ops: Uint8Array (0 rank, 1 retrieve, 2 retrieveAndRank), requests: Uint8Array[]).
Napi::Value EngineWrap::RunBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) return rejected(env, Napi::Error::New(env, "engine disposed"));
  std::vector<BatchInput> inputs;
  std::vector<const WireWrap*> wires;
  Napi::Array requests;
  try {
    if (info.Length() < 2 || !info[1].IsArray()) type_error(env, "requests", "an array of Uint8Array", info.Length() < 2 ? env.Undefined() : info[1]);
    requests = info[1].As<Napi::Array>();
    const uint32_t n = requests.Length();
    const Napi::TypedArray ops = typed_array(info[0], napi_uint8_array, int64_t(n), "ops");
    const uint8_t* op = typed_data<uint8_t>(ops);
    inputs.resize(n);
    wires.resize(n, nullptr);
    for (uint32_t i = 0; i < n; i++) {
      const std::string field = "requests[" + std::to_string(i) + "]";
      if (op[i] > 2) throw Napi::TypeError::New(env, "expected 0 (rank), 1 (retrieve) or 2 (retrieveAndRank) for ops[" + std::to_string(i) + "], got " + std::to_string(op[i]));
      inputs[i].op = op[i] == 0 ? Op::kRank : op[i] == 1 ? Op::kRetrieve : Op::kRetrieveAndRank;
      const Napi::Value item = requests.Get(i);
      if (const WireWrap* wire = prepared_wire(item, inputs[i].op)) {
        wires[i] = wire;
        inputs[i].data = reinterpret_cast<const uint8_t*>(wire->bundle().bundle.data());
        inputs[i].len = wire->bundle().bundle_len;
        continue;
      }
      const Napi::TypedArray req = typed_array(item, napi_uint8_array, -1, field);
      if (req.ByteOffset() % 8 != 0)
        throw Napi::TypeError::New(env, "expected a byteOffset that is a multiple of 8 for " + field + ", got " + std::to_string(req.ByteOffset()));
      inputs[i].data = typed_data<uint8_t>(req);
      inputs[i].len = req.ByteLength();
    }
  } catch (const Napi::Error& e) {
    return rejected(env, e);
  }
  auto* w = new BatchWorker(env, this, Value(), engine_, requests, std::move(inputs), std::move(wires), tasks_);
  Napi::Promise p = w->Promise(env);
  Queue(w);
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
  const std::string name = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  Op op;
  if (name == "rank") op = Op::kRank;
  else if (name == "retrieve") op = Op::kRetrieve;
  else if (name == "retrieveAndRank") op = Op::kRetrieveAndRank;
  else type_error(env, "op", "rank, retrieve or retrieveAndRank", info.Length() > 1 ? info[1] : env.Undefined());
  // fallback(request: WireRequest, op, reason): the answer with its response message (reason: the
  // proto's FallbackReason); fallback(bundle: Uint8Array, op): the answer alone
  if (const WireWrap* wire = prepared_wire(info[0], op)) {
    const double reason = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
    if (!(reason >= 1 && reason <= 3)) type_error(env, "reason", "a FallbackReason (1..3)", info.Length() > 2 ? info[2] : env.Undefined());
    try {
      const Result r = engine_->fallback(reinterpret_cast<const uint8_t*>(wire->bundle().bundle.data()), wire->bundle().bundle_len, op);
      std::string response = respond(wire, r, int(reason));
      return to_js(env, r, tasks_, &response);
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }
  const Napi::TypedArray req = typed_array(info[0], napi_uint8_array, -1, "request");
  if (req.ByteOffset() % 8 != 0) throw Napi::TypeError::New(env, "expected a byteOffset that is a multiple of 8 for request, got " + std::to_string(req.ByteOffset()));
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

// The prepared WireRequest behind `v` for an `op` run, null when `v` is not a WireRequest; throws
// for one that is not prepared or was parsed for another op.
const WireWrap* EngineWrap::prepared_wire(const Napi::Value& v, Op op) {
  const WireWrap* w = WireWrap::From(v);
  if (!w) return nullptr;
  if (!w->prepared()) throw Napi::TypeError::New(v.Env(), "expected a prepared WireRequest for request (call engine.prepare first)");
  const Op want = w->kind() == wire::Kind::kRank ? Op::kRank : w->kind() == wire::Kind::kRetrieve ? Op::kRetrieve : Op::kRetrieveAndRank;
  if (want != op) throw Napi::TypeError::New(v.Env(), std::string("expected a WireRequest of ") + op_name(op) + " for request, got one of " + op_name(want));
  return w;
}

// setWireSchema({surfaces, tasks, userSparse, userDense, userEmbeddingDim, targetingDims, seqMaxLen,
// seqActions, reservePrice, modelName}): what prepare() validates against (the model's config).
Napi::Value EngineWrap::SetWireSchema(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) type_error(env, "schema", "an object", info.Length() ? info[0] : env.Undefined());
  const Napi::Object o = info[0].As<Napi::Object>();
  wire::WireSchema s;
  s.surfaces = get_string_array(o, "surfaces", "schema.surfaces");
  s.tasks = get_string_array(o, "tasks", "schema.tasks");
  s.user_sparse = get_string_array(o, "userSparse", "schema.userSparse");
  s.user_dense = uint32_t(get_int(o, "userDense", "schema.userDense"));
  s.user_embedding_dim = uint32_t(get_int(o, "userEmbeddingDim", "schema.userEmbeddingDim"));
  s.targeting_dims = uint32_t(get_int(o, "targetingDims", "schema.targetingDims"));
  s.seq_max_len = uint32_t(get_int(o, "seqMaxLen", "schema.seqMaxLen"));
  s.seq_actions = uint32_t(get_int(o, "seqActions", "schema.seqActions"));
  s.reserve_price = float(get_number(o, "reservePrice", "schema.reservePrice"));
  s.model_name = get_string(o, "modelName", "schema.modelName");
  schema_ = std::move(s);
  has_schema_ = true;
  return env.Undefined();
}

// prepare(request: WireRequest, maxCandidates, version): validates the request against the model
// (the checks of src/handlers/validate.ts, in its order) and writes its feature bundle; returns the
// request's size (the batcher's). A refusal throws an Error whose `field` names the field.
Napi::Value EngineWrap::Prepare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!has_schema_) throw Napi::Error::New(env, "no wire schema: setWireSchema was not called");
  WireWrap* w = WireWrap::From(info[0]);
  if (!w) type_error(env, "request", "a WireRequest", info[0]);
  // prepared once: a run may be reading its bundle
  if (w->prepared()) throw Napi::TypeError::New(env, "expected a WireRequest not yet prepared for request (one prepare per request)");
  if (w->released()) throw Napi::TypeError::New(env, "expected a WireRequest not released for request");
  const double max = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(max >= 0 && max <= 4294967295.0)) type_error(env, "maxCandidates", "a non-negative integer", info.Length() > 1 ? info[1] : env.Undefined());
  if (info.Length() < 3 || !info[2].IsString()) type_error(env, "version", "a string", info.Length() > 2 ? info[2] : env.Undefined());
  const double t0 = steady_us();
  wire::Prepared p;
  wire::Refusal why;
  if (!wire::prepare_wire(w->message(), w->kind(), schema_, uint32_t(max), &p, &why)) {
    Napi::Error e = Napi::Error::New(env, why.message);
    e.Set("field", Napi::String::New(env, why.field));
    throw e;
  }
  wire::ResponseMeta meta = w->meta();
  meta.kind = w->kind();
  meta.request_id = w->message().request_id;
  meta.model_name = schema_.model_name;
  meta.version = info[2].As<Napi::String>().Utf8Value();
  meta.ads_only = backend_ == "none";
  meta.validate_us = steady_us() - t0;
  const double size = p.size;
  w->set_prepared(std::move(p), std::move(meta));
  return Napi::Number::New(env, size);
}

// empty(request: WireRequest): the answer of a request that needs no engine work (a Rank without
// candidates), with its response message.
Napi::Value EngineWrap::Empty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const WireWrap* w = WireWrap::From(info[0]);
  if (!w || !w->prepared()) type_error(env, "request", "a prepared WireRequest", info[0]);
  const Result r;
  std::string response = respond(w, r);
  return to_js(env, r, tasks_, &response);
}

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
  o.Set("streams", double(d.streams));
  return o;
}

Napi::Value EngineWrap::Inflight(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), inflight_); }

// share(): the key under which the other JS threads of this process attach to this engine
// (new Engine({ shared: key })); see shared_engines.h.
Napi::Value EngineWrap::Share(const Napi::CallbackInfo& info) {
  if (!engine_) throw Napi::Error::New(info.Env(), "engine disposed");
  return Napi::Number::New(info.Env(), double(share_engine(engine_)));
}

// completions(): {wakeUps, calls}: how many times the JS thread was woken for finished calls, and
// how many calls those wake-ups completed (every call ready at a wake-up is completed by it).
Napi::Value EngineWrap::Completions(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("wakeUps", wake_ ? wake_->wakeups : 0.0);
  o.Set("calls", wake_ ? wake_->completed : 0.0);
  return o;
}

Napi::Value EngineWrap::Dispose(const Napi::CallbackInfo& info) {
  if (inflight_ > 0) throw Napi::Error::New(info.Env(), "engine busy: " + std::to_string(inflight_) + " runs in flight");
  Free();
  return info.Env().Undefined();
}

Napi::Value EngineWrap::Backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), backend_); }
Napi::Value EngineWrap::Description(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), description_); }
Napi::Value EngineWrap::NumAds(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(num_ads_)); }

}  // namespace adrank::addon
