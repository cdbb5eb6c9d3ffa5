#include "engine/backend.h"

#include <cstdlib>
#include <stdexcept>

#include "kernels/cpu/parallel.h"

namespace adrank {

std::vector<Result> Backend::run_batch(const std::vector<BatchEntry>& entries, const AdStateTable& state, cpu::ThreadPool* pool) {
  std::vector<Result> out(entries.size());
  auto run = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const BatchEntry& e = entries[size_t(i)];
      switch (e.op) {
        case Op::kRank: out[size_t(i)] = rank(*e.req, state); break;
        case Op::kRetrieve: out[size_t(i)] = retrieve(*e.req, state); break;
        case Op::kRetrieveAndRank: out[size_t(i)] = retrieve_and_rank(*e.req, state); break;
        default: throw std::runtime_error(std::string("expected rank, retrieve or retrieveAndRank for a batch entry's op, got ") + op_name(e.op));
      }
    }
  };
  const int64_t n = int64_t(entries.size());
  if (pool && n > 1) pool->parallel_for(n, run, 1); else run(0, n);
  return out;
}

Device parse_device(const std::string& s) {
  Device d;
  if (s == "cpu") return d;
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 8) {
    char* end = nullptr;
    const long idx = std::strtol(s.c_str() + 5, &end, 10);
    if (*end == '\0' && s[5] >= '0' && s[5] <= '9') {
      d.cuda = true;
      d.index = int(idx);
      return d;
    }
  }
  throw std::runtime_error("expected cpu or cuda:N for device, got \"" + s + "\"");
}

#ifdef ADRANK_TEST_HOOKS
void Backend::inject_fault(const std::string& kind, int) {
  throw std::invalid_argument(std::string("the ") + this->kind() + " backend has no fault \"" + kind + "\" to inject");
}
#endif

#ifndef ADRANK_WITH_CUDA
// CPU-only build: the CUDA backend (native/engine/cuda_backend.cu) defines this otherwise.
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model>, int device, cpu::ThreadPool*) {
  throw std::runtime_error("device cuda:" + std::to_string(device) + " requested but this addon was not compiled with CUDA");
}
#endif

}  // namespace adrank
