// Module entry: Engine, capabilities() and the CPU kernels for the kernel tests
// (NativeBinding in src/engine/binding.ts).
#include <napi.h>

#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "addon/convert.h"
#include "addon/engine_wrap.h"
#include "addon/shared_engines.h"
#include "addon/wire_wrap.h"
#include "addon/mapped.h"
#include "engine/clock.h"
#include "engine/completion.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/layer_norm.h"

#ifdef ADRANK_WITH_CUDA
#include "engine/cuda_backend.cuh"
#endif

namespace adrank::addon {

namespace {

struct AddonData {
  std::shared_ptr<Registry> registry = std::make_shared<Registry>();
  Napi::FunctionReference engine;
};

Napi::Value Capabilities(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("compiled", true);
  cpu.Set("usable", true);
  cpu.Set("simd", cpu::gemm_isa());
  cpu.Set("bf16", cpu::gemm_bf16_available());
  cpu.Set("bf16Reason", cpu::gemm_bf16_reason());
  cpu.Set("bf16Kernel", cpu::gemm_bf16_kernel());
  cpu.Set("bf16Auto", cpu::gemm_bf16_auto());
  cpu.Set("bf16AutoReason", cpu::gemm_bf16_auto_reason());
  cpu.Set("threads", double(std::max(1u, std::thread::hardware_concurrency())));
  Napi::Object cuda = Napi::Object::New(env);
#ifdef ADRANK_WITH_CUDA
  // Only devices the build has code for (a cubin for their architecture, or PTX they can JIT) count.
  std::string reason;
  const int count = cuda::cuda_device_count(&reason);
  cuda.Set("compiled", true);
  cuda.Set("targets", ADRANK_CUDA_TARGETS);
  cuda.Set("usable", count > 0);
  cuda.Set("devices", double(count));
  cuda.Set("reason", count > 0 ? std::string("") : reason);
#else
  cuda.Set("compiled", false);
  cuda.Set("usable", false);
  cuda.Set("devices", 0.0);
  cuda.Set("reason", "not compiled with CUDA");
  cuda.Set("targets", "");
#endif
  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", cpu);
  out.Set("cuda", cuda);
  return out;
}

#ifdef ADRANK_TEST_HOOKS
// Test builds only: the CUDA backend's completion wait (engine/completion.h) against a signaller
// thread, as the stream's host function would be. completionWait(signalAfterMs (< 0: never),
// limitMs (0: no watchdog), pollFaultAfterMs (< 0: never)) → { outcome: finished | hung | error,
// waitedMs, error, released }; released: the state was freed once both sides let go of it.
Napi::Value CompletionWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto num = [&](size_t i) { return info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1.0; };
  const double signal_after = num(0), limit = num(1), fault_after = num(2);
  auto c = Completion::make();
  const std::weak_ptr<Completion> watch = c;
  void* ticket = Completion::ticket(c);
  std::thread signaller;
  if (signal_after >= 0)
    signaller = std::thread([ticket, signal_after] {
      std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(signal_after));
      Completion::fire(ticket);
    });
  const double t0 = steady_us();
  std::string outcome, error;
  try {
    const auto poll = [&] {
      if (fault_after >= 0 && steady_us() - t0 >= fault_after * 1000) throw std::runtime_error("cudaErrorIllegalAddress (poll fault injected by a test hook)");
    };
    outcome = c->wait(poll, std::chrono::milliseconds(2), std::chrono::milliseconds(int64_t(std::max(0.0, limit)))) ? "finished" : "hung";
  } catch (const std::exception& e) {
    outcome = "error";
    error = e.what();
  }
  const double waited = (steady_us() - t0) / 1000;
  c.reset();  // the waiter lets go first, as after a watchdog verdict; a late signal frees the state
  if (signaller.joinable())
    signaller.join();
  else
    Completion::fire(ticket);  // nobody will signal: drop the ticket
  Napi::Object out = Napi::Object::New(env);
  out.Set("outcome", outcome);
  out.Set("waitedMs", waited);
  out.Set("error", error);
  out.Set("released", watch.expired());
  return out;
}
#endif

int dim_arg(const Napi::CallbackInfo& info, size_t i, const char* field, double min = 1) {
  const Napi::Value v = info[i];
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= min && d <= 1e8 && d == double(int64_t(d))))
    type_error(info.Env(), field, min > 0 ? "a positive integer" : "a non-negative integer", v);
  return int(d);
}

const float* f32_arg(const Napi::CallbackInfo& info, size_t i, int64_t length, const char* field) {
  return typed_data<float>(typed_array(info[i], napi_float32_array, length, field));
}

// linear(a, m, k, w, n, bias | null, act, precision?): C[m,n] = act(A · Wᵀ + bias); k may be 0
// (bias only); precision 'bf16' packs W as bf16 and runs the bf16 kernel in use
// (capabilities().cpu.bf16Kernel; throws where there is none), absent or 'fp32' the fp32 path.
Napi::Value Linear(const Napi::CallbackInfo& info) {
  const int m = dim_arg(info, 1, "m"), k = dim_arg(info, 2, "k", 0), n = dim_arg(info, 4, "n");
  const float* a = f32_arg(info, 0, int64_t(m) * k, "a");
  const float* w = f32_arg(info, 3, int64_t(n) * k, "w");
  const float* bias = info[5].IsNull() || info[5].IsUndefined() ? nullptr : f32_arg(info, 5, n, "bias");
  const Napi::Value act = info[6];
  if (!act.IsNumber() || (act.As<Napi::Number>().Int32Value() != 0 && act.As<Napi::Number>().Int32Value() != 1))
    type_error(info.Env(), "act", "0 (none) or 1 (ReLU)", act);
  cpu::Epilogue ep;
  ep.bias = bias;
  ep.relu = act.As<Napi::Number>().Int32Value() == 1;
  bool bf16 = false;
  if (info.Length() > 7 && !info[7].IsUndefined()) {
    const std::string p = info[7].IsString() ? info[7].As<Napi::String>().Utf8Value() : "";
    if (p != "fp32" && p != "bf16") type_error(info.Env(), "precision", "'fp32' or 'bf16'", info[7]);
    bf16 = p == "bf16";
  }
  cpu::PackedMatrix pw(w, n, k);
  Napi::Float32Array c = Napi::Float32Array::New(info.Env(), size_t(m) * n);
  if (bf16) {
    pw.pack_bf16();
    try {
      cpu::gemm_bf16(a, m, k, pw, c.Data(), n, ep, nullptr);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  } else {
    cpu::gemm(a, m, k, pw, c.Data(), n, ep, nullptr);
  }
  return c;
}

// crossLayer(x0, xl, m, w, bias): x0 ⊙ (xl · Wᵀ + b) + xl.
Napi::Value CrossLayer(const Napi::CallbackInfo& info) {
  const int m = dim_arg(info, 2, "m");
  const Napi::TypedArray b = typed_array(info[4], napi_float32_array, -1, "bias");
  const int n = int(b.ElementLength());
  if (n < 1) type_error(info.Env(), "bias", "a non-empty Float32Array", info[4]);
  const float* x0 = f32_arg(info, 0, int64_t(m) * n, "x0");
  const float* xl = f32_arg(info, 1, int64_t(m) * n, "xl");
  const float* w = f32_arg(info, 3, int64_t(n) * n, "w");
  cpu::Epilogue ep;
  ep.bias = typed_data<float>(b);
  ep.mul = x0;
  ep.ld_mul = n;
  ep.add = xl;
  ep.ld_add = n;
  const cpu::PackedMatrix pw(w, n, n);
  Napi::Float32Array c = Napi::Float32Array::New(info.Env(), size_t(m) * n);
  cpu::gemm(xl, m, n, pw, c.Data(), n, ep, nullptr);
  return c;
}

// layerNorm(x, m, n, gamma, beta)
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  const int m = dim_arg(info, 1, "m"), n = dim_arg(info, 2, "n");
  cpu::LayerNormParams p;
  p.x = f32_arg(info, 0, int64_t(m) * n, "x");
  p.gamma = f32_arg(info, 3, n, "gamma");
  p.beta = f32_arg(info, 4, n, "beta");
  Napi::Float32Array y = Napi::Float32Array::New(info.Env(), size_t(m) * n);
  p.ldx = p.ldy = n;
  p.y = y.Data();
  p.m = m;
  p.n = n;
  cpu::layer_norm(p);
  return y;
}

// exitNow(code): ends the process at once. process.exit() runs libuv's exit-time thread-pool
// join, which first finishes every native run still queued; the CLI's shutdown calls this
// instead once its bound is spent with runs still in flight (docs/operations.md "Shutdown").
Napi::Value ExitNow(const Napi::CallbackInfo& info) {
  const int code = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  std::fflush(nullptr);
  std::_Exit(code);
}

// wireRequests(): how many WireRequests were made and released in this process ({ made, released }).
Napi::Value WireRequests(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("made", double(WireWrap::made_count()));
  o.Set("released", double(WireWrap::released_count()));
  return o;
}

// sharedEngines(): how many shared engines (Engine.share) some JS thread still holds.
Napi::Value SharedEngines(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(shared_engine_count())); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData(data);
  std::shared_ptr<Registry> registry = data->registry;
  // Frees every engine still alive when this environment (main thread or worker) is torn down.
  env.AddCleanupHook([registry]() {
    std::lock_guard<std::mutex> lock(registry->mu);
    for (EngineWrap* e : registry->live) e->Free();
  });
  Napi::Function engine = EngineWrap::Define(env, &data->registry);
  data->engine = Napi::Persistent(engine);
  exports.Set("Engine", engine);
  exports.Set("WireRequest", WireWrap::Define(env));
  exports.Set("capabilities", Napi::Function::New<Capabilities>(env, "capabilities"));
  register_mapped(env, exports);
  exports.Set("exitNow", Napi::Function::New<ExitNow>(env, "exitNow"));
  exports.Set("sharedEngines", Napi::Function::New<SharedEngines>(env, "sharedEngines"));
  exports.Set("wireRequests", Napi::Function::New<WireRequests>(env, "wireRequests"));
#ifdef ADRANK_TEST_HOOKS
  exports.Set("completionWait", Napi::Function::New<CompletionWait>(env, "completionWait"));
#endif
  Napi::Object kernels = Napi::Object::New(env);
  kernels.Set("linear", Napi::Function::New<Linear>(env, "linear"));
  kernels.Set("crossLayer", Napi::Function::New<CrossLayer>(env, "crossLayer"));
  kernels.Set("layerNorm", Napi::Function::New<LayerNorm>(env, "layerNorm"));
  exports.Set("kernels", kernels);
  return exports;
}

}  // namespace

}  // namespace adrank::addon

Napi::Object InitAdrank(Napi::Env env, Napi::Object exports) { return adrank::addon::Init(env, exports); }
NODE_API_MODULE(adrank, InitAdrank)
