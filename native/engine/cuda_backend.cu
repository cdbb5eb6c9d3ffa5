// CUDA backend: device-resident model and ad tables, a pool of streams with preallocated device
// workspaces and pinned staging, one H2D copy per request (descriptor + feature sections), CUDA
// graphs per (op, candidate bucket, K bucket, cap?, local?) key, completion through
// cudaLaunchHostFunc (the worker thread sleeps on a future instead of spinning in
// cudaStreamSynchronize), only the winners copied back.
//
// Verified on an H200 (scripts/gpu-check.sh); compiled for sm_80, sm_89, sm_90a (+ PTX) with nvcc 13. docs/cuda.md.
#include "engine/cuda_backend.cuh"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "engine/ad_state.h"
#include "engine/backend.h"
#include "engine/clock.h"
#include "engine/completion.h"
#include "engine/model.h"
#include "engine/request_parser.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/device_model.cuh"
#include "kernels/cuda/forward.cuh"
#include "kernels/cuda/fp8_logic.h"
#include "kernels/cuda/funnel.cuh"
#include "kernels/cuda/gemm_bf16.cuh"
#include "kernels/cuda/plan_logic.h"

namespace adrank::cuda {

namespace {

// "" when device `dev` can run this build's kernels, else why not (defined below).
std::string no_code_reason(int dev);

constexpr int kChunk = 16384;          // candidate rows per forward chunk (workspace rows)
constexpr size_t kMaxGraphsPerSlot = 64;  // captured graphs per stream slot; later keys run eagerly
constexpr int kMinBucket = 256;
constexpr int kMaxPartitions = 65536;

int next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return int(p);
}
// An on/off setting from the environment: set and not "0".
bool env_switch(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::string(v) != "0";
}
int pad8(int v) { return int(round_up(v, 8)); }
int pad32(int v) { return int(round_up(v, 32)); }

// ---- host-side weight preparation ----------------------------------------------------------------

// PackedMatrix → row-major [n, k]: element (j, p) lives at ((j / 16) * k + p) * 16 + j % 16.
std::vector<float> unpack_weights(const cpu::PackedMatrix& pm) {
  const int n = pm.n(), k = pm.k(), P = cpu::PackedMatrix::kPanel;
  std::vector<float> w(size_t(n) * k);
  const float* d = pm.data();
  for (int j = 0; j < n; ++j)
    for (int p = 0; p < k; ++p) w[size_t(j) * k + p] = d[(size_t(j / P) * k + p) * P + j % P];
  return w;
}

// dst[r, dst_col0 + c] = src[r, src_col0 + c] for c < cols, into a zero-initialised bf16 matrix.
void put_bf16(std::vector<bf16>& dst, int64_t ld_dst, int64_t row0, const float* src, int64_t ld_src, int rows,
              int src_col0, int dst_col0, int cols) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      dst[(row0 + r) * ld_dst + dst_col0 + c] = __float2bfloat16(src[int64_t(r) * ld_src + src_col0 + c]);
}

class DeviceArena {
 public:
  ~DeviceArena() {
    for (void* p : ptrs_) cudaFree(p);
  }
  // Forget the allocations without freeing them (a hung device, see ~CudaBackend).
  void leak() { ptrs_.clear(); }
  void* alloc(size_t bytes) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 256)));
    ptrs_.push_back(p);
    return p;
  }
  template <class T>
  T* upload(const T* data, size_t count) {
    T* p = static_cast<T*>(alloc(sizeof(T) * count));
    if (count) CUDA_CHECK(cudaMemcpy(p, data, sizeof(T) * count, cudaMemcpyHostToDevice));
    return p;
  }
  // A std::vector or a model Table (which may view the mapped bundle: no host copy in between).
  template <class V>
  auto upload(const V& v) {
    return upload(v.data(), v.size());
  }

 private:
  std::vector<void*> ptrs_;
};


__global__ void chunk_counts_kernel(const int* total, int chunk, int n_chunks, int* out) {
  const int c = threadIdx.x;
  if (c < n_chunks) out[c] = max(0, min(*total - c * chunk, chunk));
}

__global__ void scatter_state_kernel(const int32_t* rows, const uint64_t* words, const float* bids, size_t n, uint64_t* state,
                                     float* bid) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    state[rows[i]] = words[i];
    bid[rows[i]] = bids[i];
  }
}


#ifdef ADRANK_TEST_HOOKS
// Test builds only: busy for `ns` of the device's global timer (a request that outlasts the watchdog).
__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}
#endif

enum class OpKind : int { kRank = 0, kRetrieve = 1, kRetrieveAndRank = 2 };

// io_bytes: with ADRANK_CUDA_GRAPH_IO the bytes the graph's own H2D copy moves (a power of two
// >= the packed request, so one graph serves every request up to that size); 0 otherwise.
struct GraphKey {
  int op, m_bucket, l0, k_cap, l0_top;
  bool capped, local;
  int64_t io_bytes = 0;
  bool operator<(const GraphKey& o) const {
    return std::tie(op, m_bucket, l0, k_cap, l0_top, capped, local, io_bytes) <
           std::tie(o.op, o.m_bucket, o.l0, o.k_cap, o.l0_top, o.capped, o.local, o.io_bytes);
  }
};

// kMarkStart opens a request's device work and kMarkEnd closes it (after the D2H copy): their
// difference is the engine's GPU time (Timings::device). With ADRANK_CUDA_GRAPH_IO both are nodes of
// the graph and the copies sit between them, so no host gap counts; without it kMarkStart is a plain
// record before the H2D copy and the graph launch follows it from the host.
enum Mark : int { kMarkH2D = 0, kMarkIntake, kMarkUser, kMarkRetrieve, kMarkGather, kMarkMaskNet, kMarkDcn, kMarkMlp,
                  kMarkSelect, kMarkEnd, kMarkStart, kNumMarks };

// One stream and everything a request needs on it.
struct Slot {
  cudaStream_t stream = nullptr;
  cudaEvent_t marks[kNumMarks] = {};
  void* dev_ws = nullptr;
  ForwardWorkspace fw;
  SelectWorkspace sw;
  FunnelWorkspace fun;
  int* chunk_counts = nullptr;      // [m_cap / chunk]
  int* n_rr = nullptr;              // RetrieveAndRank: retrieved count
  unsigned char* dev_result = nullptr;
  unsigned char* host_result = nullptr;  // pinned
  size_t result_bytes = 0;
  unsigned char* dev_bundle = nullptr;
  unsigned char* host_bundle = nullptr;  // pinned staging: RequestDesc + sections
  size_t bundle_cap = 0;
  std::map<GraphKey, cudaGraphExec_t> graphs;  // at most kMaxGraphsPerSlot
  std::map<GraphKey, int> seen;
  std::set<GraphKey> eager_only;  // keys whose capture failed: they run eagerly from then on
  bool dirty = false;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(std::shared_ptr<const Model> model, int device, cpu::ThreadPool* pool);
  ~CudaBackend() override;

  const char* kind() const override { return "cuda"; }
  std::string description() const override { return description_; }
  Result rank(const Request& req, const AdStateTable& state) override { return run(OpKind::kRank, req, state); }
  Result retrieve(const Request& req, const AdStateTable& state) override { return run(OpKind::kRetrieve, req, state); }
  Result retrieve_and_rank(const Request& req, const AdStateTable& state) override {
    // A blended request (caller candidates beside retrieval, docs/funnel.md "Blended retrieval
    // sources") runs on the CPU backend, as explain does: the GPU graph has no caller-source intake
    // yet (docs/cuda.md "Known gaps"). Per-source counts are filled for both paths.
    if (req.candidates.size > 0) return cpu_->retrieve_and_rank(req, state);
    Result r = run(OpKind::kRetrieveAndRank, req, state);
    credit_retrieval_only(r);
    return r;
  }
  DeviceStats device_stats() const override {
    DeviceStats d;
    d.graphs = n_graphs_.load();
    d.capture_failures = n_capture_failures_.load();
    d.eager_only_keys = n_eager_only_.load();
    d.lost_streams = n_lost_.load();
    d.streams = int64_t(slots_.size());
    return d;
  }
#ifdef ADRANK_TEST_HOOKS
  void inject_fault(const std::string& kind, int n) override {
    if (kind == "capture")
      fail_captures_ = n;
    else if (kind == "hang")
      hang_ms_ = n;
    else
      Backend::inject_fault(kind, n);
  }
#endif
  // The GPU path keeps no per-stage host copies; explain runs the same function on the CPU backend.
  Explain explain(const Request& req, const AdStateTable& state) override { return cpu_->explain(req, state); }

  // The engine's hook (cuda_backend_sync_ad_state), at start (the whole table) and per update batch.
  // The upload waits for the running requests and holds new ones back (StateGate), so a request's
  // kernels see one batch or the other, never part of one.
  void sync_state(const AdStateTable& state, const int32_t* rows, size_t n) {
    if (hung()) return;  // the device is failed and this engine on its way out; an upload could wait forever
    StateGate::Writer w(gate_);
    upload_state(state, rows, n);
  }

 private:
  void upload_model(cpu::ThreadPool* pool);
  void upload_state(const AdStateTable& state, const int32_t* rows, size_t n);
  void enqueue_state_upload(const AdStateTable& state, const int32_t* rows, size_t n);
  void make_slot(Slot& s);
  void free_slot(Slot& s);
  void reset_slot(Slot& s);
  Slot* acquire();
  void release(Slot* s);
  void abandon();
  // a slot was abandoned: the device is treated as failed (no uploads; the destructor frees nothing)
  bool hung() const { return n_lost_.load() > 0; }
  size_t pack(Slot& s, const Request& req);
  void enqueue_body(Slot& s, OpKind op, const GraphKey& key);
  void launch(Slot& s, OpKind op, const GraphKey& key);
  cudaGraphExec_t capture(Slot& s, OpKind op, const GraphKey& key);
  Result run(OpKind op, const Request& req, const AdStateTable& state);
  Result unpack(Slot& s, OpKind op, const Request& req, const ResultLayout& lay);

  std::shared_ptr<const Model> model_;
  int device_;
  std::unique_ptr<Backend> cpu_;
  std::string description_;
  DeviceArena arena_;
  DeviceModel dm_;
  uint64_t* dev_state_ = nullptr;
  float* dev_bid_ = nullptr;
  // Live-state uploads: their own stream and a persistent staging pair (pinned host, device) sized
  // for the largest partial upload (N/8 rows × (row, word, bid)); made at the first upload.
  cudaStream_t state_stream_ = nullptr;
  unsigned char* state_host_ = nullptr;
  unsigned char* state_dev_ = nullptr;
  size_t state_rows_cap_ = 0;
  // Requests share the device's live-state mirror; an upload takes it alone. Writer first: a
  // waiting upload holds new requests back, so a stream of requests cannot starve it.
  class StateGate {
   public:
    struct Reader {
      explicit Reader(StateGate& g) : g_(g) {
        std::unique_lock<std::mutex> l(g_.mu_);
        g_.cv_.wait(l, [&] { return !g_.writer_; });
        g_.readers_++;
      }
      ~Reader() {
        {
          std::lock_guard<std::mutex> l(g_.mu_);
          g_.readers_--;
        }
        g_.cv_.notify_all();
      }
      StateGate& g_;
    };
    struct Writer {
      explicit Writer(StateGate& g) : g_(g) {
        std::unique_lock<std::mutex> l(g_.mu_);
        g_.cv_.wait(l, [&] { return !g_.writer_; });
        g_.writer_ = true;
        g_.cv_.wait(l, [&] { return g_.readers_ == 0; });
      }
      ~Writer() {
        {
          std::lock_guard<std::mutex> l(g_.mu_);
          g_.writer_ = false;
        }
        g_.cv_.notify_all();
      }
      StateGate& g_;
    };

   private:
    std::mutex mu_;
    std::condition_variable cv_;
    int readers_ = 0;
    bool writer_ = false;
  };
  StateGate gate_;
  std::mutex state_mu_;
  std::vector<uint64_t> state_words_;
  std::vector<float> state_bids_;  // staging of a full upload's bids (the snapshot's are in chunks)
  int m_cap_ = 0, l0_cap_ = 0, k_cap_max_ = 0;
  bool graphs_enabled_ = true;
  bool graph_census_ = false;  // ADRANK_CUDA_GRAPH_NODES=1: print each captured graph's nodes by type
  // Paths switched against the old ones (docs/cuda.md "Settings"); each off by default.
  bool graph_io_ = false;          // ADRANK_CUDA_GRAPH_IO: H2D, D2H and the start/end marks inside the graph
  bool skip_idle_round_ = false;   // ADRANK_CUDA_SKIP_IDLE_ROUND: no fallback round in an uncapped key
  bool epilogue_ = false;          // ADRANK_CUDA_EPILOGUE: one-block selection for buckets <= 16,384
  bool retrieve_onepass_ = false;  // ADRANK_CUDA_RETRIEVE_ONEPASS: an uncapped retrieval in one launch
  bool retrieve_fp8_ = false;      // ADRANK_CUDA_RETRIEVE_FP8: an e4m3 copy of the table, exact rescoring
  bool linear_t_ = false;          // ADRANK_CUDA_LINEAR_T: the request side's fp32 layers read Wᵀ (coalesced)
  // The watchdog (ADRANK_CUDA_WATCHDOG_MS, 0 = off): a request whose work has not finished by then
  // abandons its slot (the stream still holds the work) and fails as StreamHung.
  std::chrono::milliseconds watchdog_{10000};
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_;
  // device_stats(): graphs held, failed captures, keys run eagerly for good, abandoned slots
  // (n_lost_ changes under mu_: acquire() waits on it)
  std::atomic<int64_t> n_graphs_{0}, n_capture_failures_{0}, n_eager_only_{0}, n_lost_{0};
#ifdef ADRANK_TEST_HOOKS
  std::atomic<int> fail_captures_{0}, hang_ms_{0};
#endif
  std::mutex mu_;
  std::condition_variable cv_;
};

// ---- construction -----------------------------------------------------------------------------------

CudaBackend::CudaBackend(std::shared_ptr<const Model> model, int device, cpu::ThreadPool* pool)
    : model_(std::move(model)), device_(device) {
  std::string reason;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count)
    throw std::runtime_error("device cuda:" + std::to_string(device) + " is not available");
  CUDA_CHECK(cudaSetDevice(device_));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  if (const std::string no = no_code_reason(device_); !no.empty()) throw std::runtime_error("device cuda:" + std::to_string(device) + ": " + no);
  cpu_ = make_cpu_backend(model_, pool);
  if (const char* g = std::getenv("ADRANK_CUDA_GRAPHS")) graphs_enabled_ = std::string(g) != "0";
  graph_census_ = env_switch("ADRANK_CUDA_GRAPH_NODES");
  graph_io_ = env_switch("ADRANK_CUDA_GRAPH_IO");
  skip_idle_round_ = env_switch("ADRANK_CUDA_SKIP_IDLE_ROUND");
  epilogue_ = env_switch("ADRANK_CUDA_EPILOGUE");
  retrieve_onepass_ = env_switch("ADRANK_CUDA_RETRIEVE_ONEPASS");
  retrieve_fp8_ = env_switch("ADRANK_CUDA_RETRIEVE_FP8");
  linear_t_ = env_switch("ADRANK_CUDA_LINEAR_T");
  // ADRANK_CUDA_WGMMA is process-wide (gemm_bf16.cu); probe this device here, before any capture,
  // so the launcher knows whether its code has the wgmma kernel.
  const bool wgmma = gemm_wgmma_enabled() && gemm_wgmma_available();
  int streams = 4;
  if (const char* s = std::getenv("ADRANK_CUDA_STREAMS")) streams = std::max(1, std::min(64, std::atoi(s)));
  if (const char* w = std::getenv("ADRANK_CUDA_WATCHDOG_MS")) watchdog_ = std::chrono::milliseconds(std::max(0, std::atoi(w)));
  const double load0 = steady_us();
  upload_model(pool);
  const double load_ms = (steady_us() - load0) / 1000;
  m_cap_ = next_pow2(std::max<int64_t>(kMaxCandidates, kMaxRetrieve));
  k_cap_max_ = next_pow2(kMaxK + 1);
  l0_cap_ = next_pow2(4 * (int64_t(std::max(kMaxK, kMaxRetrieve)) + 1));
  try {
    for (int i = 0; i < streams; ++i) {
      slots_.push_back(std::make_unique<Slot>());
      make_slot(*slots_.back());
      free_.push_back(slots_.back().get());
    }
  } catch (...) {  // no destructor runs for a throwing constructor: free the slots made so far
    for (auto& slot : slots_) free_slot(*slot);
    throw;
  }
  description_ = "cuda:" + std::to_string(device_) + " " + prop.name + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
                 std::to_string(prop.multiProcessorCount) + " SMs, " + std::to_string(streams) + " streams" + (graphs_enabled_ ? ", graphs" : "") +
                 (graph_io_ ? ", graph io" : "") + (skip_idle_round_ ? ", skip idle round" : "") + (epilogue_ ? ", epilogue" : "") + (retrieve_onepass_ ? ", one-pass retrieve" : "") + (retrieve_fp8_ ? ", fp8 retrieve" : "") + (linear_t_ ? ", linear wt" : "") +
                 (gemm_wgmma_enabled() ? (wgmma ? (gemm_wgmma_tma_enabled() ? ", wgmma (tma)" : ", wgmma") : ", wgmma unavailable (no sm_90a code for this device)") : "") +
                 (gemm_tile_policy() != TilePolicy::kFill ? ", tile " + std::string(tile_policy_name(gemm_tile_policy())) : "") +
                 "; model loaded onto the device in " + std::to_string(int64_t(load_ms)) + " ms)";
}

CudaBackend::~CudaBackend() {
  if (hung()) {
    // Work that never finished still uses these buffers, and cudaFree or a synchronize would wait
    // for it forever (on the thread disposing the engine): leak the device side of a hung device.
    arena_.leak();
    return;
  }
  cudaSetDevice(device_);
  if (state_stream_) {
    cudaStreamSynchronize(state_stream_);
    cudaStreamDestroy(state_stream_);
  }
  if (state_host_) cudaFreeHost(state_host_);
  if (state_dev_) cudaFree(state_dev_);
  for (auto& s : slots_) free_slot(*s);
}

// Everything make_slot made (any part of it, when make_slot failed half way).
void CudaBackend::free_slot(Slot& s) {
  if (s.stream) cudaStreamSynchronize(s.stream);
  for (auto& g : s.graphs) cudaGraphExecDestroy(g.second);
  s.graphs.clear();
  for (cudaEvent_t& e : s.marks)
    if (e) cudaEventDestroy(e), e = nullptr;
  if (s.stream) cudaStreamDestroy(s.stream);
  if (s.dev_ws) cudaFree(s.dev_ws);
  if (s.dev_bundle) cudaFree(s.dev_bundle);
  if (s.host_bundle) cudaFreeHost(s.host_bundle);
  if (s.host_result) cudaFreeHost(s.host_result);
  s.stream = nullptr;
  s.dev_ws = nullptr;
  s.dev_bundle = s.host_bundle = s.host_result = nullptr;
}

void CudaBackend::upload_model(cpu::ThreadPool* pool_) {
  const Model& M = *model_;
  const ModelDims& d = M.dims();
  DeviceModel& m = dm_;
  const int64_t N = d.num_ads;
  if (int(d.user_sparse.size()) > kMaxSparseFields || d.seq_layers > kMaxSeqLayers || d.masknet_blocks > kMaxMaskBlocks ||
      d.dcn_layers > kMaxDcnLayers || int(d.mlp.size()) > kMaxMlpLayers || int(d.retrieval_hidden.size()) + 1 > kMaxTowerLayers ||
      d.tasks > kMaxTasks)
    throw std::runtime_error("model exceeds the CUDA backend's compiled limits (fields/layers/tasks)");
  if (N >= (int64_t(1) << 31)) throw std::runtime_error("the CUDA backend supports < 2^31 ads");

  m.n_ud = d.user_dense;
  m.n_ad = d.ad_dense;
  m.d_ue = d.user_embedding_dim;
  m.d_ae = d.ad_embedding_dim;
  m.d_surf = d.surface_dim;
  m.surfaces = d.surfaces;
  m.tasks = d.tasks;
  m.targeting_dims = d.targeting_dims;
  m.clip = d.dense_clip;
  m.n_user_sparse = int(d.user_sparse.size());
  m.n_ad_sparse = int(d.ad_sparse.size());
  for (int f = 0; f < m.n_user_sparse; ++f) {
    m.user_sparse_dim[f] = d.user_sparse[f].dim;
    m.user_sparse_card[f] = int(d.user_sparse[f].cardinality);
    m.user_sparse_table[f] = arena_.upload(M.user_sparse[f]);
  }
  m.du = d.user();
  m.da = d.ad();
  m.d = d.input();
  m.num_ads = N;
  m.user_dense_mean = arena_.upload(M.ud_mean);
  m.user_dense_std = arena_.upload(M.ud_std);
  m.surface_table = arena_.upload(M.surface);

  // sequence encoder (fp32)
  m.seq_max_len = d.seq_max_len;
  m.seq_item_buckets = int(d.seq_item_buckets);
  m.seq_actions = d.seq_actions;
  m.d_s = d.seq_dim;
  m.seq_heads = d.seq_heads;
  m.seq_ffn = d.seq_ffn_dim;
  m.seq_layers = d.seq_layers;
  m.seq_item = arena_.upload(M.seq_item);
  m.seq_action = arena_.upload(M.seq_action);
  m.seq_position = arena_.upload(M.seq_position);
  auto lin = [&](const Linear& l) {
    DenseLinearF32 r;
    r.out = l.w.n();
    r.in = l.w.k();
    const std::vector<float> w = unpack_weights(l.w);
    r.w = arena_.upload(w);
    r.b = l.b.empty() ? nullptr : arena_.upload(l.b);
    if (linear_t_) {  // Wᵀ for coalesced reads (rows_linear_kernel)
      std::vector<float> wt(w.size());
      for (int o = 0; o < r.out; ++o)
        for (int i = 0; i < r.in; ++i) wt[size_t(i) * r.out + o] = w[size_t(o) * r.in + i];
      r.wt = arena_.upload(wt);
    }
    return r;
  };
  for (int l = 0; l < d.seq_layers; ++l) {
    const SequenceLayer& s = M.seq_layers[l];
    SeqLayer& t = m.seq[l];
    t.norm1_w = arena_.upload(s.norm1_w);
    t.norm1_b = arena_.upload(s.norm1_b);
    t.norm2_w = arena_.upload(s.norm2_w);
    t.norm2_b = arena_.upload(s.norm2_b);
    t.in_proj = lin(s.in_proj);
    t.out_proj = lin(s.out_proj);
    t.linear1 = lin(s.linear1);
    t.linear2 = lin(s.linear2);
  }
  m.seq_norm_w = arena_.upload(M.seq_norm_w);
  m.seq_norm_b = arena_.upload(M.seq_norm_b);
  m.tower_layers = int(M.user_tower.size());
  for (int l = 0; l < m.tower_layers; ++l) m.tower[l] = lin(M.user_tower[l]);
  m.d_r = d.retrieval_dim;
  m.d_r_pad = pad8(m.d_r);

  // ad tables
  m.da_pad = pad8(m.da);
  {
    // a_c, q_c and the retrieval table go up in blocks of rows: the host holds one block of each
    // (computed from the ad tables, which a mapped bundle holds in place), never a second copy of N
    constexpr int64_t kBlock = 65536;
    bf16* dev_a = static_cast<bf16*>(arena_.alloc(sizeof(bf16) * size_t(N) * m.da_pad));
    bf16* dev_r = static_cast<bf16*>(arena_.alloc(sizeof(bf16) * size_t(N) * m.d_r_pad));
    // the fp8 retrieval's e4m3 copy, quantized from the bf16 rows (the scores it must reproduce)
    m.d_r8 = int(round_up(m.d_r, 16));
    uint8_t* dev_r8 = retrieve_fp8_ ? static_cast<uint8_t*>(arena_.alloc(size_t(N) * m.d_r8)) : nullptr;
    float* dev_s8 = retrieve_fp8_ ? static_cast<float*>(arena_.alloc(sizeof(float) * size_t(N))) : nullptr;
    float* dev_b8 = retrieve_fp8_ ? static_cast<float*>(arena_.alloc(sizeof(float) * size_t(N))) : nullptr;
    std::vector<uint8_t> r8(retrieve_fp8_ ? size_t(kBlock) * m.d_r8 : 0);
    std::vector<float> s8(retrieve_fp8_ ? kBlock : 0), b8(retrieve_fp8_ ? kBlock : 0);
    float* dev_q = static_cast<float*>(arena_.alloc(sizeof(float) * size_t(N) * d.seq_dim));
    std::vector<float> a(size_t(kBlock) * m.da), q(size_t(kBlock) * d.seq_dim);
    std::vector<bf16> a16(size_t(kBlock) * m.da_pad, __float2bfloat16(0.f)), r16(size_t(kBlock) * m.d_r_pad, __float2bfloat16(0.f));
    std::vector<int32_t> rows(kBlock);
    for (int64_t r0 = 0; r0 < N; r0 += kBlock) {
      const int n = int(std::min(kBlock, N - r0));
      for (int i = 0; i < n; ++i) rows[i] = int32_t(r0 + i);
      auto part = [&](int64_t i0, int64_t i1) { M.ad_side(rows.data() + i0, int(i1 - i0), a.data() + i0 * m.da, m.da, q.data() + i0 * d.seq_dim); };
      if (pool_) pool_->parallel_for(n, part, 1024); else part(0, n);
      put_bf16(a16, m.da_pad, 0, a.data(), m.da, n, 0, 0, m.da);
      put_bf16(r16, m.d_r_pad, 0, M.ad_retrieval.data() + size_t(r0) * m.d_r, m.d_r, n, 0, 0, m.d_r);
      CUDA_CHECK(cudaMemcpy(dev_a + size_t(r0) * m.da_pad, a16.data(), sizeof(bf16) * size_t(n) * m.da_pad, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(dev_r + size_t(r0) * m.d_r_pad, r16.data(), sizeof(bf16) * size_t(n) * m.d_r_pad, cudaMemcpyHostToDevice));
      if (retrieve_fp8_) {
        auto quantize = [&](int64_t i0, int64_t i1) {
          fp8_quantize_bf16_rows(reinterpret_cast<const uint16_t*>(r16.data()), m.d_r_pad, m.d_r, i0, i1, m.d_r8, r8.data(), s8.data(),
                                 b8.data());
        };
        if (pool_) pool_->parallel_for(n, quantize, 1024); else quantize(0, n);
        CUDA_CHECK(cudaMemcpy(dev_r8 + size_t(r0) * m.d_r8, r8.data(), size_t(n) * m.d_r8, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(dev_s8 + r0, s8.data(), sizeof(float) * n, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(dev_b8 + r0, b8.data(), sizeof(float) * n, cudaMemcpyHostToDevice));
      }
      CUDA_CHECK(cudaMemcpy(dev_q + size_t(r0) * d.seq_dim, q.data(), sizeof(float) * size_t(n) * d.seq_dim, cudaMemcpyHostToDevice));
    }
    m.ad_features = dev_a;
    m.ad_retrieval = dev_r;
    m.ad_retrieval_fp8 = dev_r8;
    m.ad_fp8_scale = dev_s8;
    m.ad_fp8_bound = dev_b8;
    m.ad_query = dev_q;
  }
  m.ad_id = arena_.upload(M.ad_id);
  // the effective bids (bundle bid or live override), written by upload_state like the state words
  dev_bid_ = arena_.upload(M.ad_bid);
  m.ad_bid = dev_bid_;
  m.ad_targeting = arena_.upload(M.ad_targeting);
  {
    std::unordered_map<int64_t, int> adv_index;
    std::vector<int64_t> adv_ids;
    std::vector<int> adv(N);
    for (int64_t r = 0; r < N; ++r) {
      auto it = adv_index.emplace(M.ad_advertiser[r], int(adv_ids.size()));
      if (it.second) adv_ids.push_back(M.ad_advertiser[r]);
      adv[r] = it.first->second;
    }
    m.num_advertisers = int(adv_ids.size());
    m.ad_advertiser = arena_.upload(adv);
    m.advertiser_id = arena_.upload(adv_ids);
    // id → row tables: the CPU model's ad table as it is, and one for advertiser ids built the same way
    IdMap adv_map;
    int64_t dup = 0;
    if (!adv_map.build(adv_ids.data(), int64_t(adv_ids.size()), &dup)) throw std::logic_error("advertiser ids repeat");
    m.adv_hash_keys = arena_.upload(adv_map.keys());
    m.adv_hash_vals = arena_.upload(adv_map.rows());
    m.adv_hash_mask = adv_map.mask();
    m.ad_hash_keys = arena_.upload(M.id_to_row.keys());
    m.ad_hash_rows = arena_.upload(M.id_to_row.rows());
    m.ad_hash_mask = M.id_to_row.mask();
    std::vector<int> order(N), rank(N);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return M.ad_id[a] < M.ad_id[b]; });
    for (int64_t i = 0; i < N; ++i) rank[order[i]] = int(i);
    m.ad_id_rank = arena_.upload(rank);
  }
  state_words_.assign(size_t(N), AdStateTable::pack(AdState{}));
  dev_state_ = arena_.upload(state_words_);
  m.ad_state = dev_state_;

  // MaskNet
  const int B = d.masknet_blocks, h = d.masknet_hidden, o = d.masknet_output, ds = d.seq_dim;
  m.mask_blocks = B;
  m.h = h;
  m.h_pad = pad32(h);
  m.o = o;
  m.o_pad = pad32(o);
  m.d_pad = pad32(m.d);
  m.k1 = pad32(m.da_pad + ds);
  m.input_norm_w = arena_.upload(M.input_norm_w);
  m.input_norm_b = arena_.upload(M.input_norm_b);
  {
    const std::vector<float> wu = unpack_weights(M.mask1_user.w);  // [B·h, du]
    const std::vector<float> wa = unpack_weights(M.mask1_ad);      // [B·h, da + d_s]
    std::vector<float> wu_p(size_t(B) * m.h_pad * m.du, 0.f), b_p(size_t(B) * m.h_pad, 0.f);
    std::vector<bf16> wa_p(size_t(B) * m.h_pad * m.k1, __float2bfloat16(0.f));
    for (int i = 0; i < B; ++i)
      for (int r = 0; r < h; ++r) {
        const size_t src = size_t(i) * h + r, dst = size_t(i) * m.h_pad + r;
        std::copy_n(wu.data() + src * m.du, m.du, wu_p.data() + dst * m.du);
        if (!M.mask1_user.b.empty()) b_p[dst] = M.mask1_user.b[src];
        put_bf16(wa_p, m.k1, int64_t(dst), wa.data() + src * (m.da + ds), m.da + ds, 1, 0, 0, m.da);
        put_bf16(wa_p, m.k1, int64_t(dst), wa.data() + src * (m.da + ds), m.da + ds, 1, m.da, m.da_pad, ds);
      }
    m.mask1_user_w = arena_.upload(wu_p);
    m.mask1_b = arena_.upload(b_p);
    m.mask1_w = arena_.upload(wa_p);
    std::vector<bf16> w2(size_t(B) * m.d_pad * m.h_pad, __float2bfloat16(0.f));
    std::vector<float> b2(size_t(B) * m.d_pad, 0.f);
    std::vector<bf16> wp(size_t(B) * m.o_pad * m.d_pad, __float2bfloat16(0.f));
    std::vector<float> nw, nb;
    for (int i = 0; i < B; ++i) {
      const MaskBlock& blk = M.blocks[i];
      const std::vector<float> a = unpack_weights(blk.mask2.w);  // [d, h]
      put_bf16(w2, m.h_pad, int64_t(i) * m.d_pad, a.data(), h, m.d, 0, 0, h);
      for (int r = 0; r < m.d; ++r) b2[size_t(i) * m.d_pad + r] = blk.mask2.b.empty() ? 0.f : blk.mask2.b[r];
      const std::vector<float> p = unpack_weights(blk.proj);  // [o, d]
      put_bf16(wp, m.d_pad, int64_t(i) * m.o_pad, p.data(), m.d, o, 0, 0, m.d);
      nw.insert(nw.end(), blk.norm_w.begin(), blk.norm_w.end());
      nb.insert(nb.end(), blk.norm_b.begin(), blk.norm_b.end());
    }
    m.mask2_w = arena_.upload(w2);
    m.mask2_b = arena_.upload(b2);
    m.proj_w = arena_.upload(wp);
    m.block_norm_w = arena_.upload(nw);
    m.block_norm_b = arena_.upload(nb);
  }
  // DCN
  m.dcn_layers = d.dcn_layers;
  m.dcn_rank = d.dcn_rank;
  m.dcn_rank_pad = d.dcn_rank > 0 ? pad32(d.dcn_rank) : 0;
  m.D = d.cross();
  m.D_pad = pad32(m.D);
  for (int l = 0; l < d.dcn_layers; ++l) {
    const CrossLayer& c = M.cross[l];
    std::vector<float> b(m.D_pad, 0.f);
    std::copy(c.b.begin(), c.b.end(), b.begin());
    m.dcn_b[l] = arena_.upload(b);
    if (m.dcn_rank == 0) {
      std::vector<bf16> w(size_t(m.D_pad) * m.D_pad, __float2bfloat16(0.f));
      put_bf16(w, m.D_pad, 0, unpack_weights(c.w).data(), m.D, m.D, 0, 0, m.D);
      m.dcn_w[l] = arena_.upload(w);
    } else {
      const int r = m.dcn_rank, rp = m.dcn_rank_pad;
      std::vector<bf16> v(size_t(rp) * m.D_pad, __float2bfloat16(0.f)), u(size_t(m.D_pad) * rp, __float2bfloat16(0.f));
      put_bf16(v, m.D_pad, 0, unpack_weights(c.v).data(), m.D, r, 0, 0, m.D);
      put_bf16(u, rp, 0, unpack_weights(c.u).data(), r, m.D, 0, 0, r);
      m.dcn_v[l] = arena_.upload(v);
      m.dcn_u[l] = arena_.upload(u);
    }
  }
  // MLP + heads
  m.mlp_layers = int(d.mlp.size());
  int in = m.D, in_pad = m.D_pad;
  for (int l = 0; l < m.mlp_layers; ++l) {
    const int out = d.mlp[l], out_pad = pad32(out);
    m.mlp_out[l] = out;
    m.mlp_out_pad[l] = out_pad;
    std::vector<bf16> w(size_t(out_pad) * in_pad, __float2bfloat16(0.f));
    put_bf16(w, in_pad, 0, unpack_weights(M.mlp[l].w).data(), in, out, 0, 0, in);
    std::vector<float> b(out_pad, 0.f);
    std::copy(M.mlp[l].b.begin(), M.mlp[l].b.end(), b.begin());
    m.mlp_w[l] = arena_.upload(w);
    m.mlp_b[l] = arena_.upload(b);
    in = out;
    in_pad = out_pad;
  }
  m.heads_w = arena_.upload(unpack_weights(M.heads.w));
  std::vector<float> hb(d.tasks, 0.f);
  std::copy(M.heads.b.begin(), M.heads.b.end(), hb.begin());
  m.heads_b = arena_.upload(hb);
  m.calib_scale = arena_.upload(M.calib_scale);
  m.calib_bias = arena_.upload(M.calib_bias);
  m.task_weights = arena_.upload(M.task_weights);
}

void CudaBackend::make_slot(Slot& s) {
  CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  for (cudaEvent_t& e : s.marks) CUDA_CHECK(cudaEventCreate(&e));
  const DeviceModel& m = dm_;
  const int64_t N = m.num_ads;
  const int n_keys = int(std::max<int64_t>(N, m_cap_));
  const size_t fw_bytes = forward_workspace_bytes(m, m_cap_, kChunk);
  const size_t sw_bytes = select_workspace_bytes(n_keys, l0_cap_, kMaxPartitions);
  const ResultLayout lay = ResultLayout::make(k_cap_max_, m.tasks);
  s.result_bytes = lay.bytes;
  auto r = [](size_t b) { return size_t(round_up(int64_t(b), 256)); };
  // the one-pass retrieval's partition list: at most L (< kTopLMaxL) items per block
  const size_t onepass_items = size_t(retrieve_onepass_grid()) * kTopLMaxL;
  const size_t fun_bytes = r(sizeof(int) * N) + r(N) + r(std::max(m.num_advertisers, 1)) + r(sizeof(unsigned long long) * kNumCounts) +
                           2 * r(sizeof(int) * m_cap_) + r(sizeof(int)) + r(sizeof(unsigned long long) * n_keys) +
                           r(sizeof(int) * (m_cap_ / kChunk + 1)) + r(sizeof(int)) + r(lay.bytes) + r(sizeof(int)) +
                           r(sizeof(unsigned long long)) + r(sizeof(unsigned)) +
                           (retrieve_onepass_ || retrieve_fp8_ ? r(sizeof(unsigned long long) * onepass_items) + r(sizeof(int) * onepass_items) : 0) +
                           (retrieve_fp8_ ? r(sizeof(float) * N) + r(sizeof(unsigned long long)) + r(sizeof(int) * N) + r(sizeof(int)) : 0);
  const size_t total = r(fw_bytes) + r(sw_bytes) + fun_bytes;
  CUDA_CHECK(cudaMalloc(&s.dev_ws, total));
  char* p = static_cast<char*>(s.dev_ws);
  s.fw = forward_workspace_carve(m, m_cap_, kChunk, p);
  p += r(fw_bytes);
  s.sw = select_workspace_carve(n_keys, l0_cap_, kMaxPartitions, p);
  p += r(sw_bytes);
  auto take = [&](size_t b) {
    char* q = p;
    p += r(b);
    return q;
  };
  s.fun.first_seen = reinterpret_cast<int*>(take(sizeof(int) * N));
  s.fun.excl_ad = reinterpret_cast<uint8_t*>(take(N));
  s.fun.excl_adv = reinterpret_cast<uint8_t*>(take(std::max(m.num_advertisers, 1)));
  s.fun.counts = reinterpret_cast<unsigned long long*>(take(sizeof(unsigned long long) * kNumCounts));
  s.fun.cand_rows = reinterpret_cast<int*>(take(sizeof(int) * m_cap_));
  s.fun.elig_rows = reinterpret_cast<int*>(take(sizeof(int) * m_cap_));
  s.fun.n_elig = reinterpret_cast<int*>(take(sizeof(int)));
  s.fun.keys = reinterpret_cast<unsigned long long*>(take(sizeof(unsigned long long) * n_keys));
  s.chunk_counts = reinterpret_cast<int*>(take(sizeof(int) * (m_cap_ / kChunk + 1)));
  s.n_rr = reinterpret_cast<int*>(take(sizeof(int)));
  s.dev_result = reinterpret_cast<unsigned char*>(take(lay.bytes));
  s.fun.topl_count = reinterpret_cast<int*>(take(sizeof(int)));
  s.fun.topl_g = reinterpret_cast<unsigned long long*>(take(sizeof(unsigned long long)));
  s.fun.topl_ticket = reinterpret_cast<unsigned*>(take(sizeof(unsigned)));
  if (retrieve_onepass_ || retrieve_fp8_) {
    s.fun.topl_keys = reinterpret_cast<unsigned long long*>(take(sizeof(unsigned long long) * onepass_items));
    s.fun.topl_rows = reinterpret_cast<int*>(take(sizeof(int) * onepass_items));
  }
  if (retrieve_fp8_) {
    s.fun.fp8_ub = reinterpret_cast<float*>(take(sizeof(float) * N));
    s.fun.fp8_tau = reinterpret_cast<unsigned long long*>(take(sizeof(unsigned long long)));
    s.fun.cand_list = reinterpret_cast<int*>(take(sizeof(int) * N));
    s.fun.cand_n = reinterpret_cast<int*>(take(sizeof(int)));
  }
  CUDA_CHECK(cudaMallocHost(&s.host_result, lay.bytes));
  s.bundle_cap = 1 << 20;
  CUDA_CHECK(cudaMalloc(&s.dev_bundle, s.bundle_cap));
  CUDA_CHECK(cudaMallocHost(&s.host_bundle, s.bundle_cap));
  reset_slot(s);
}

// Restores the between-request invariants (first_seen = "unseen", no exclusions) after a failure.
void CudaBackend::reset_slot(Slot& s) {
  cudaStreamSynchronize(s.stream);  // drain whatever was queued; its error (if any) is reported below
  cudaGetLastError();
  CUDA_CHECK(cudaMemsetAsync(s.fun.first_seen, 0x7f, sizeof(int) * dm_.num_ads, s.stream));  // 0x7f7f7f7f > any index
  CUDA_CHECK(cudaMemsetAsync(s.fun.excl_ad, 0, dm_.num_ads, s.stream));
  CUDA_CHECK(cudaMemsetAsync(s.fun.excl_adv, 0, std::max(dm_.num_advertisers, 1), s.stream));
  reset_retrieve_onepass(s.fun, s.stream);
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
  s.dirty = false;
}

Slot* CudaBackend::acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !free_.empty() || size_t(n_lost_.load()) == slots_.size(); });
  if (free_.empty())
    throw StreamHung(std::string(kStreamHung) + ": every stream of cuda:" + std::to_string(device_) +
                     " holds work that never finished; the device is treated as failed");
  Slot* s = free_.back();
  free_.pop_back();
  return s;
}

void CudaBackend::release(Slot* s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(s);
  }
  cv_.notify_one();
}

// The slot's stream still holds work that did not finish: it never goes back to the pool (its
// buffers are in use). Requests waiting for a slot fail once every slot is lost.
void CudaBackend::abandon() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    n_lost_++;
  }
  cv_.notify_all();
}

void CudaBackend::upload_state(const AdStateTable& state, const int32_t* rows, size_t n) {
  std::lock_guard<std::mutex> lock(state_mu_);
  CUDA_CHECK(cudaSetDevice(device_));
  if (!state_stream_) CUDA_CHECK(cudaStreamCreateWithFlags(&state_stream_, cudaStreamNonBlocking));
  try {
    enqueue_state_upload(state, rows, n);
  } catch (...) {
    // nothing of a failed upload may still run once the gate lets requests back in, nor may the
    // next upload rewrite the pinned staging under a copy in flight
    cudaStreamSynchronize(state_stream_);
    cudaGetLastError();
    throw;
  }
  // Only this stream: the writer gate (sync_state) already keeps requests off the device state.
  CUDA_CHECK(cudaStreamSynchronize(state_stream_));
}

// The copies (and, for a partial update, the scatter) of one upload on state_stream_.
void CudaBackend::enqueue_state_upload(const AdStateTable& state, const int32_t* rows, size_t n) {
  const size_t N = size_t(dm_.num_ads);
  if (!rows || n > N / 8) {
    state.copy_words(state_words_.data());
    state_bids_.resize(N);
    state.copy_bids(state_bids_.data());
    CUDA_CHECK(cudaMemcpyAsync(dev_state_, state_words_.data(), sizeof(uint64_t) * N, cudaMemcpyHostToDevice, state_stream_));
    CUDA_CHECK(cudaMemcpyAsync(dev_bid_, state_bids_.data(), sizeof(float) * N, cudaMemcpyHostToDevice, state_stream_));
  } else if (n > 0) {
    constexpr size_t kRowBytes = sizeof(int32_t) + sizeof(uint64_t) + sizeof(float);
    if (!state_host_) {  // both halves or neither: a failed allocation is retried by the next upload
      const size_t cap = std::max<size_t>(N / 8, 1);
      unsigned char* host = nullptr;
      unsigned char* dev = nullptr;
      if (const cudaError_t e = cudaMallocHost(&host, cap * kRowBytes); e != cudaSuccess) CUDA_CHECK(e);
      if (const cudaError_t e = cudaMalloc(&dev, cap * kRowBytes); e != cudaSuccess) {
        cudaFreeHost(host);
        CUDA_CHECK(e);
      }
      state_host_ = host;
      state_dev_ = dev;
      state_rows_cap_ = cap;
    }
    // layout: words [cap] (8-byte aligned first), rows [cap], bids [cap]
    uint64_t* h_words = reinterpret_cast<uint64_t*>(state_host_);
    int32_t* h_rows = reinterpret_cast<int32_t*>(state_host_ + sizeof(uint64_t) * state_rows_cap_);
    float* h_bids = reinterpret_cast<float*>(state_host_ + (sizeof(uint64_t) + sizeof(int32_t)) * state_rows_cap_);
    for (size_t i = 0; i < n; ++i) {
      h_rows[i] = rows[i];
      h_words[i] = state_words_[rows[i]] = state.word(rows[i]);
      h_bids[i] = state.bid(rows[i]);
    }
    uint64_t* d_words = reinterpret_cast<uint64_t*>(state_dev_);
    int32_t* d_rows = reinterpret_cast<int32_t*>(state_dev_ + sizeof(uint64_t) * state_rows_cap_);
    float* d_bids = reinterpret_cast<float*>(state_dev_ + (sizeof(uint64_t) + sizeof(int32_t)) * state_rows_cap_);
    CUDA_CHECK(cudaMemcpyAsync(d_words, h_words, sizeof(uint64_t) * n, cudaMemcpyHostToDevice, state_stream_));
    CUDA_CHECK(cudaMemcpyAsync(d_rows, h_rows, sizeof(int32_t) * n, cudaMemcpyHostToDevice, state_stream_));
    CUDA_CHECK(cudaMemcpyAsync(d_bids, h_bids, sizeof(float) * n, cudaMemcpyHostToDevice, state_stream_));
    scatter_state_kernel<<<grid_for(int64_t(n), 256, 1024), 256, 0, state_stream_>>>(d_rows, d_words, d_bids, n, dev_state_, dev_bid_);
    CUDA_CHECK_LAUNCH("scatter_state_kernel");
  }
}

// ---- per request ------------------------------------------------------------------------------------

// Writes RequestDesc + sections into the slot's pinned staging buffer; returns the byte count.
size_t CudaBackend::pack(Slot& s, const Request& req) {
  RequestDesc desc{};
  desc.surface = req.surface;
  desc.k = req.k;
  desc.cap = req.cap;
  desc.mode = req.mode;
  desc.partitions = std::max<uint32_t>(req.partitions, 1);
  desc.flags = req.flags;
  desc.retrieve_count = req.retrieve_count;
  desc.seq_len = uint32_t(req.seq_items.size);
  desc.num_candidates = uint32_t(req.candidates.size);
  desc.num_excluded_advertisers = uint32_t(req.excluded_advertisers.size);
  desc.num_excluded_ads = uint32_t(req.excluded_ads.size);
  desc.reserve = req.reserve;
  desc.key = req.key;
  size_t total_ids = 0;
  for (const auto& f : req.user_sparse) total_ids += f.size;
  desc.num_user_sparse_ids = uint32_t(total_ids);
  size_t off = sizeof(RequestDesc);
  auto place = [&](uint64_t& field, size_t bytes) {
    field = off;
    off = align8(off + bytes);
  };
  place(desc.off_user_dense, 4 * req.user_dense.size);
  place(desc.off_user_embedding, 4 * req.user_embedding.size);
  place(desc.off_task_weights, 4 * req.task_weights.size);
  place(desc.off_targeting, 4 * req.targeting.size);
  place(desc.off_sparse_len, 4 * req.user_sparse.size());
  place(desc.off_sparse_ids, 8 * total_ids);
  place(desc.off_seq_items, 8 * req.seq_items.size);
  place(desc.off_seq_actions, 4 * req.seq_actions.size);
  place(desc.off_candidates, 8 * req.candidates.size);
  place(desc.off_excluded_advertisers, 8 * req.excluded_advertisers.size);
  place(desc.off_excluded_ads, 8 * req.excluded_ads.size);
  if (off > s.bundle_cap) {  // grow; the graphs captured the old device pointer, so drop them
    const size_t cap = size_t(next_pow2(int64_t(off)));
    for (auto& g : s.graphs) cudaGraphExecDestroy(g.second);
    n_graphs_ -= int64_t(s.graphs.size());
    n_eager_only_ -= int64_t(s.eager_only.size());
    s.graphs.clear();
    s.seen.clear();
    s.eager_only.clear();
    // the new pair first: if either allocation fails, the slot keeps its old, consistent pair
    unsigned char* dev = nullptr;
    unsigned char* host = nullptr;
    if (const cudaError_t e = cudaMalloc(&dev, cap); e != cudaSuccess) CUDA_CHECK(e);
    if (const cudaError_t e = cudaMallocHost(&host, cap); e != cudaSuccess) {
      cudaFree(dev);
      CUDA_CHECK(e);
    }
    cudaFree(s.dev_bundle);
    cudaFreeHost(s.host_bundle);
    s.dev_bundle = dev;
    s.host_bundle = host;
    s.bundle_cap = cap;
  }
  unsigned char* b = s.host_bundle;
  auto copy = [&](uint64_t at, const void* src, size_t bytes) {
    if (bytes) std::memcpy(b + at, src, bytes);
  };
  copy(desc.off_user_dense, req.user_dense.data, 4 * req.user_dense.size);
  copy(desc.off_user_embedding, req.user_embedding.data, 4 * req.user_embedding.size);
  copy(desc.off_task_weights, req.task_weights.data, 4 * req.task_weights.size);
  copy(desc.off_targeting, req.targeting.data, 4 * req.targeting.size);
  size_t at = desc.off_sparse_ids;
  for (size_t f = 0; f < req.user_sparse.size(); ++f) {
    const uint32_t len = uint32_t(req.user_sparse[f].size);
    std::memcpy(b + desc.off_sparse_len + 4 * f, &len, 4);
    copy(at, req.user_sparse[f].data, 8 * len);
    at += 8 * len;
  }
  copy(desc.off_seq_items, req.seq_items.data, 8 * req.seq_items.size);
  copy(desc.off_seq_actions, req.seq_actions.data, 4 * req.seq_actions.size);
  copy(desc.off_candidates, req.candidates.data, 8 * req.candidates.size);
  copy(desc.off_excluded_advertisers, req.excluded_advertisers.data, 8 * req.excluded_advertisers.size);
  copy(desc.off_excluded_ads, req.excluded_ads.data, 8 * req.excluded_ads.size);
  // Offsets are relative to the bundle start, which is right after the descriptor on the device.
  for (uint64_t* f : {&desc.off_user_dense, &desc.off_user_embedding, &desc.off_task_weights, &desc.off_targeting,
                      &desc.off_sparse_len, &desc.off_sparse_ids, &desc.off_seq_items, &desc.off_seq_actions,
                      &desc.off_candidates, &desc.off_excluded_advertisers, &desc.off_excluded_ads})
    *f -= sizeof(RequestDesc);
  std::memcpy(b, &desc, sizeof(desc));
  return off;
}

// Everything after the H2D copy, stream-ordered and request-independent given the key (so it can
// be captured once per key and replayed).
void CudaBackend::enqueue_body(Slot& s, OpKind op, const GraphKey& key) {
  const DeviceModel& m = dm_;
  cudaStream_t st = s.stream;
  const RequestDesc* desc = reinterpret_cast<const RequestDesc*>(s.dev_bundle);
  const unsigned char* bundle = s.dev_bundle + sizeof(RequestDesc);
  const ResultLayout lay = ResultLayout::make(key.k_cap, m.tasks);
  auto mark = [&](int i) { record_mark(s.marks[i], st); };  // event nodes when captured (common.cuh)
  if (key.io_bytes > 0) {  // ADRANK_CUDA_GRAPH_IO: the copy is the graph's first node after the start mark
    mark(kMarkStart);
    NvtxRange h2d(stage::kH2D);
    CUDA_CHECK(cudaMemcpyAsync(s.dev_bundle, s.host_bundle, size_t(key.io_bytes), cudaMemcpyHostToDevice, st));
    mark(kMarkH2D);
  }
  CUDA_CHECK(cudaMemsetAsync(s.fun.counts, 0, sizeof(unsigned long long) * kNumCounts, st));
  CUDA_CHECK(cudaMemsetAsync(s.fun.n_elig, 0, sizeof(int), st));
  enqueue_exclusions(m, desc, bundle, s.fun, true, st);

  // Forward over rows[0, *count) in chunks, then order keys for the selection (the epilogue makes
  // its own).
  auto forward = [&](const int* rows, const int* count, int bucket, bool keys) {
    const int n_chunks = ceil_div(bucket, kChunk);
    chunk_counts_kernel<<<1, 32 * ceil_div(n_chunks, 32), 0, st>>>(count, kChunk, n_chunks, s.chunk_counts);
    CUDA_CHECK_LAUNCH("chunk_counts_kernel");
    for (int c = 0; c < n_chunks; ++c) {
      const int rows_cap = std::min(kChunk, bucket - c * kChunk);
      enqueue_candidates(m, desc, bundle, rows + int64_t(c) * kChunk, s.chunk_counts + c, rows_cap, c * kChunk, s.fw, st,
                         c == n_chunks - 1 ? &s.marks[kMarkGather] : nullptr);
    }
    if (keys) enqueue_rank_keys(m, s.fw.utility, rows, count, bucket, s.fun.keys, st);
  };
  // A rank stage's selection and result block: the single-block epilogue where it is on and fits,
  // else the selection rounds and the results kernel. n_rr: RetrieveAndRank's retrieved count.
  auto use_epilogue = [&](const SelectPlan& plan) { return epilogue_ && epilogue_fits(plan); };
  auto select_rank = [&](const SelectPlan& plan, int* n_rr) {
    if (use_epilogue(plan)) {
      enqueue_epilogue(m, desc, plan, s.sw, s.fun, s.fw.utility, s.fw.value, s.fw.probs, s.dev_result, lay, n_rr, st);
    } else {
      enqueue_select(m, desc, plan, s.sw, s.fun, st);
      enqueue_results(m, desc, plan, s.sw, s.fun, s.fw.utility, s.fw.value, s.fw.probs, s.dev_result, lay, nullptr, n_rr, st);
    }
  };

  if (op == OpKind::kRank) {
    enqueue_rank_intake(m, desc, bundle, s.fun, key.m_bucket, st);
    mark(kMarkIntake);
    enqueue_request_side(m, desc, bundle, s.fw, false, true, st);
    mark(kMarkUser);
    mark(kMarkRetrieve);
    SelectPlan plan;
    plan.stage = SelectStage::kRank;
    plan.local = key.local;
    plan.capped = key.capped;
    plan.n_static = key.m_bucket;
    plan.l0 = key.l0;
    plan.fallback_round = fallback_round_can_act(key.capped, false) || !skip_idle_round_;
    plan.e_dev = s.fun.n_elig;
    plan.keys = s.fun.keys;
    plan.rows = s.fun.elig_rows;
    forward(s.fun.elig_rows, s.fun.n_elig, key.m_bucket, !use_epilogue(plan));
    select_rank(plan, nullptr);
    enqueue_rank_intake_reset(desc, s.fun, key.m_bucket, st);
  } else {
    mark(kMarkIntake);
    const bool rr = op == OpKind::kRetrieveAndRank;
    enqueue_request_side(m, desc, bundle, s.fw, true, rr, st);
    mark(kMarkUser);
    SelectPlan top;
    top.stage = rr ? SelectStage::kRetrieveTop : SelectStage::kRetrieve;
    top.capped = rr ? false : key.capped;
    top.n_static = int(m.num_ads);
    top.l0 = rr ? key.l0_top : key.l0;
    top.fallback_round = fallback_round_can_act(top.capped, false) || !skip_idle_round_;
    top.e_dev = s.fun.n_elig;
    top.keys = s.fun.keys;
    if (retrieve_fp8_ && retrieve_fp8_fits(m, top)) {
      NvtxRange range("retrieve");
      enqueue_retrieve_fp8(m, desc, top, bundle, s.fw.query, s.sw, s.fun, s.dev_result, lay, s.fun.elig_rows, s.n_rr, st);
    } else if (retrieve_onepass_ && retrieve_onepass_fits(m, top)) {
      NvtxRange range("retrieve");
      enqueue_retrieve_onepass(m, desc, top, bundle, s.fw.query, s.sw, s.fun, s.dev_result, lay, s.fun.elig_rows, s.n_rr, st);
    } else {
      {
        NvtxRange range("retrieve");
        enqueue_retrieve_scan(m, desc, bundle, s.fw.query, s.fun, st);
      }
      enqueue_select(m, desc, top, s.sw, s.fun, st);
      enqueue_results(m, desc, top, s.sw, s.fun, nullptr, nullptr, nullptr, s.dev_result, lay, s.fun.elig_rows, s.n_rr, st);
    }
    mark(kMarkRetrieve);
    if (rr) {
      const int bucket = key.m_bucket;  // >= R >= *s.n_rr
      SelectPlan plan;
      plan.stage = SelectStage::kRankPriced;
      plan.local = key.local;
      plan.capped = key.capped;
      plan.n_static = bucket;
      plan.l0 = key.l0;
      plan.fallback_round = fallback_round_can_act(key.capped, false) || !skip_idle_round_;
      plan.e_dev = s.n_rr;
      plan.keys = s.fun.keys;
      plan.rows = s.fun.elig_rows;
      forward(s.fun.elig_rows, s.n_rr, bucket, !use_epilogue(plan));
      select_rank(plan, s.n_rr);
    } else {
      for (int i : {kMarkGather, kMarkMaskNet, kMarkDcn, kMarkMlp}) mark(i);
    }
  }
  enqueue_exclusions(m, desc, bundle, s.fun, false, st);
  mark(kMarkSelect);
  if (key.io_bytes > 0) {
    NvtxRange d2h(stage::kD2H);
    CUDA_CHECK(cudaMemcpyAsync(s.host_result, s.dev_result, lay.bytes, cudaMemcpyDeviceToHost, st));
    mark(kMarkEnd);
  }
}

// First use of a key runs eagerly (warm-up: lazy module loading, cudaFuncSetAttribute, cub's
// queries happen outside any capture); the second captures a graph; later ones replay it. A key
// whose capture fails runs eagerly from then on (the request still runs, eagerly); beyond
// kMaxGraphsPerSlot keys a slot captures no more graphs (memory for graphs stays bounded).
void CudaBackend::launch(Slot& s, OpKind op, const GraphKey& key) {
  if (!graphs_enabled_ || s.eager_only.count(key) || s.seen[key]++ == 0) {
    enqueue_body(s, op, key);
    return;
  }
  auto it = s.graphs.find(key);
  if (it == s.graphs.end()) {
    cudaGraphExec_t exec = s.graphs.size() < kMaxGraphsPerSlot ? capture(s, op, key) : nullptr;
    if (!exec) {
      if (s.graphs.size() < kMaxGraphsPerSlot && s.eager_only.insert(key).second) {
        n_capture_failures_++;
        n_eager_only_++;
      }
      enqueue_body(s, op, key);
      return;
    }
    it = s.graphs.emplace(key, exec).first;
    n_graphs_++;
  }
  CUDA_CHECK(cudaGraphLaunch(it->second, s.stream));
}

// ADRANK_CUDA_GRAPH_NODES=1: one stderr line per captured graph with its nodes by type, and the
// kernel nodes of at most 16 CTAs (docs/cuda.md "Settings"; scripts/gpu-check.sh sets it for the
// before/after runs, so both paths' node counts land in bench.log).
static void print_graph_census(cudaGraph_t g, const GraphKey& key) {
  size_t n = 0;
  if (cudaGraphGetNodes(g, nullptr, &n) != cudaSuccess) return;
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0 && cudaGraphGetNodes(g, nodes.data(), &n) != cudaSuccess) return;
  int kernel = 0, small = 0, memcpy_ = 0, memset_ = 0, event = 0, host = 0, other = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType t;
    if (cudaGraphNodeGetType(node, &t) != cudaSuccess) continue;
    switch (t) {
      case cudaGraphNodeTypeKernel: {
        kernel++;
        cudaKernelNodeParams p{};
        if (cudaGraphKernelNodeGetParams(node, &p) == cudaSuccess && uint64_t(p.gridDim.x) * p.gridDim.y * p.gridDim.z <= 16) small++;
        break;
      }
      case cudaGraphNodeTypeMemcpy: memcpy_++; break;
      case cudaGraphNodeTypeMemset: memset_++; break;
      case cudaGraphNodeTypeEventRecord:
      case cudaGraphNodeTypeWaitEvent: event++; break;
      case cudaGraphNodeTypeHost: host++; break;
      default: other++;
    }
  }
  cudaGetLastError();
  std::fprintf(stderr,
               "adrank cuda graph: op %d m_bucket %d k_cap %d l0 %d l0_top %d capped %d local %d io %d: %zu nodes (kernel %d, of them <= 16 CTAs %d; "
               "memcpy %d, memset %d, event %d, host %d, other %d)\n",
               key.op, key.m_bucket, key.k_cap, key.l0, key.l0_top, int(key.capped), int(key.local), int(key.io_bytes > 0), n, kernel, small,
               memcpy_, memset_, event, host, other);
}

// Captures the body for `key` and instantiates it; null when any step fails (the error is cleared,
// the stream is out of capture mode again). A sticky error shows up again in the eager run.
cudaGraphExec_t CudaBackend::capture(Slot& s, OpKind op, const GraphKey& key) {
  if (cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  cudaGraph_t g = nullptr;
  cudaError_t e = cudaSuccess;
#ifdef ADRANK_TEST_HOOKS
  // a stream query is not allowed during a capture: it invalidates it, as any such call would
  if (take_one(fail_captures_)) (void)cudaStreamQuery(s.stream);
#endif
  try {
    enqueue_body(s, op, key);
  } catch (...) {  // whatever it was, the capture must be ended below
    e = cudaErrorStreamCaptureInvalidated;
  }
  const cudaError_t end = cudaStreamEndCapture(s.stream, &g);
  if (e == cudaSuccess) e = end;
  if (e == cudaSuccess && g && graph_census_) print_graph_census(g, key);
  cudaGraphExec_t exec = nullptr;
  if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, g, 0);
  if (g) cudaGraphDestroy(g);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return exec;
}

void CUDART_CB signal_done(void* ticket) { Completion::fire(ticket); }

// The device reads the live state from its mirror (sync_state), not from the snapshot the engine
// passes: a request sees the newest batch uploaded before it passed the gate (docs/cuda.md).
Result CudaBackend::run(OpKind op, const Request& req, const AdStateTable& /*state: see above*/) {
  // The key first: a request refused here never takes a slot (nor dirties one).
  const bool local = op != OpKind::kRetrieve && req.local() && req.partitions > 1;
  if (local && req.partitions > uint32_t(kMaxPartitions)) throw std::runtime_error("expected at most 65536 for partitions");
  const bool capped = req.cap > 0;
  const uint32_t k = req.k;
  GraphKey key{int(op), 0, 0, 0, 0, capped, local, 0};
  if (op == OpKind::kRetrieveAndRank) key.l0_top = next_pow2(std::max<int64_t>(int64_t(req.retrieve_count) + 1, 64));
  if (op == OpKind::kRank) key.m_bucket = next_pow2(std::max<int64_t>(int64_t(req.candidates.size), kMinBucket));
  // RetrieveAndRank's stage 2 ranks at most R rows: its forward and selection are sized for R, not
  // for the largest R (1,000 retrieved → a 1,024-row bucket and the small GEMM tiles)
  if (op == OpKind::kRetrieveAndRank) key.m_bucket = next_pow2(std::max<int64_t>(int64_t(req.retrieve_count), kMinBucket));
  key.l0 = next_pow2(std::max<int64_t>(capped ? 4 * (int64_t(k) + 1) : int64_t(k) + 1, 64));
  key.k_cap = next_pow2(std::max<int64_t>(k, 64));
  if (key.l0 > l0_cap_ || key.l0_top > l0_cap_ || key.k_cap > k_cap_max_ || key.m_bucket > m_cap_)
    throw std::runtime_error("expected K <= 10000 and at most 100000 candidates");
  const ResultLayout lay = ResultLayout::make(key.k_cap, dm_.tasks);

  const double t_queue = steady_us();
  Slot* s = acquire();
  // After the slot: requests queued for a slot do not hold an upload back, only those about to run.
  StateGate::Reader state_share(gate_);  // the live state stays put until this request is done
  const double queue_us = steady_us() - t_queue;
  Result r;
  try {
    CUDA_CHECK(cudaSetDevice(device_));
    if (s->dirty) reset_slot(*s);
    {
      NvtxRange range(stage::kBundle);
      const size_t bytes = pack(*s, req);
      if (graph_io_) {
        key.io_bytes = io_bucket(int64_t(bytes), int64_t(s->bundle_cap));  // the body copies that many (the slot holds them)
      } else {
        CUDA_CHECK(cudaEventRecord(s->marks[kMarkStart], s->stream));
        NvtxRange h2d(stage::kH2D);
        CUDA_CHECK(cudaMemcpyAsync(s->dev_bundle, s->host_bundle, bytes, cudaMemcpyHostToDevice, s->stream));  // the one copy
        CUDA_CHECK(cudaEventRecord(s->marks[kMarkH2D], s->stream));
      }
    }
#ifdef ADRANK_TEST_HOOKS
    if (const int ms = hang_ms_.exchange(0); ms > 0) {  // work that outlasts the watchdog
      spin_kernel<<<1, 1, 0, s->stream>>>(uint64_t(ms) * 1000000ull);
      CUDA_CHECK_LAUNCH("spin_kernel");
    }
#endif
    launch(*s, op, key);
    if (!graph_io_) {
      NvtxRange range(stage::kD2H);
      CUDA_CHECK(cudaMemcpyAsync(s->host_result, s->dev_result, lay.bytes, cudaMemcpyDeviceToHost, s->stream));
      CUDA_CHECK(cudaEventRecord(s->marks[kMarkEnd], s->stream));
    }
    // Sleep until the host function fires; poll the stream every 2 ms so that a device fault (after
    // which the host function may never run) becomes an exception, and give up after the watchdog's
    // limit (the completion state outlives this frame: engine/completion.h).
    const auto done = Completion::make();
    void* ticket = Completion::ticket(done);
    if (const cudaError_t e = cudaLaunchHostFunc(s->stream, signal_done, ticket); e != cudaSuccess) {
      Completion::fire(ticket);  // never enqueued: drop the signaller's reference
      CUDA_CHECK(e);
    }
    const auto poll = [&] {
      const cudaError_t q = cudaStreamQuery(s->stream);
      if (q != cudaErrorNotReady && q != cudaSuccess) CUDA_CHECK(q);
    };
    if (!done->wait(poll, std::chrono::milliseconds(2), watchdog_))
      throw StreamHung(stream_hung_message(device_, watchdog_.count()));
    // The host function is itself the stream's last operation: while it returns, cudaStreamQuery
    // can still say cudaErrorNotReady (seen on the H200). Synchronize: it returns at once, and with
    // any error of the work before it.
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    r = unpack(*s, op, req, lay);
    r.timings.queue = queue_us;
  } catch (const StreamHung&) {
    abandon();  // no synchronize: it would wait for the hung work; the slot never goes back
    throw;
  } catch (...) {
    s->dirty = true;  // drained and re-initialised on its next use
    cudaStreamSynchronize(s->stream);
    cudaGetLastError();
    release(s);
    throw;
  }
  release(s);
  return r;
}

Result CudaBackend::unpack(Slot& s, OpKind op, const Request& req, const ResultLayout& lay) {
  Result r;
  const ResultHeader* h = reinterpret_cast<const ResultHeader*>(s.host_result);
  const unsigned long long* c = h->counts;
  r.counts.received = int64_t(c[kCntReceived]);
  r.counts.unknown = int64_t(c[kCntUnknown]);
  r.counts.duplicate = int64_t(c[kCntDuplicate]);
  r.counts.inactive = int64_t(c[kCntInactive]);
  r.counts.out_of_budget = int64_t(c[kCntOutOfBudget]);
  r.counts.paced = int64_t(c[kCntPaced]);
  r.counts.targeting = int64_t(c[kCntTargeting]);
  r.counts.excluded_ad = int64_t(c[kCntExcludedAd]);
  r.counts.excluded_advertiser = int64_t(c[kCntExcludedAdvertiser]);
  r.counts.capped = int64_t(c[kCntCapped]);
  r.counts.eligible = int64_t(c[kCntEligible]);
  if (op == OpKind::kRetrieve) r.counts.received = dm_.num_ads;  // the kernel's 32-bit tally saturates for huge N
  const int n = std::min(h->n_win, lay.k_cap);
  const int T = dm_.tasks;
  auto arr = [&](size_t off) { return s.host_result + off; };
  r.ad_ids.assign(reinterpret_cast<const int64_t*>(arr(lay.off_ids)), reinterpret_cast<const int64_t*>(arr(lay.off_ids)) + n);
  r.advertisers.assign(reinterpret_cast<const int64_t*>(arr(lay.off_adv)), reinterpret_cast<const int64_t*>(arr(lay.off_adv)) + n);
  r.rows.assign(reinterpret_cast<const int32_t*>(arr(lay.off_rows)), reinterpret_cast<const int32_t*>(arr(lay.off_rows)) + n);
  r.scores.assign(reinterpret_cast<const float*>(arr(lay.off_scores)), reinterpret_cast<const float*>(arr(lay.off_scores)) + n);
  if (op != OpKind::kRetrieve) {
    r.probs.assign(reinterpret_cast<const float*>(arr(lay.off_probs)), reinterpret_cast<const float*>(arr(lay.off_probs)) + size_t(n) * T);
    r.values.assign(reinterpret_cast<const float*>(arr(lay.off_values)), reinterpret_cast<const float*>(arr(lay.off_values)) + n);
  }
  if (op == OpKind::kRetrieveAndRank || (op == OpKind::kRank && req.price()))
    r.prices.assign(reinterpret_cast<const float*>(arr(lay.off_prices)), reinterpret_cast<const float*>(arr(lay.off_prices)) + n);
  r.retrieved = op == OpKind::kRetrieveAndRank ? h->retrieved : 0;
  // Device stage times from the events (graph replays record them as event nodes).
  auto ms = [&](int a, int b) {
    float v = 0.f;
    return cudaEventElapsedTime(&v, s.marks[a], s.marks[b]) == cudaSuccess ? double(v) * 1000.0 : 0.0;
  };
  r.timings.select = ms(kMarkH2D, kMarkIntake) + ms(kMarkMlp, kMarkSelect);
  r.timings.device = ms(kMarkStart, kMarkEnd);
  r.timings.user = ms(kMarkIntake, kMarkUser);
  r.timings.retrieve = ms(kMarkUser, kMarkRetrieve);
  if (op != OpKind::kRetrieve) {
    r.timings.gather = ms(kMarkRetrieve, kMarkGather);
    r.timings.masknet = ms(kMarkGather, kMarkMaskNet);
    r.timings.dcn = ms(kMarkMaskNet, kMarkDcn);
    r.timings.mlp = ms(kMarkDcn, kMarkMlp);
  }
  cudaGetLastError();  // an elapsed-time query on an unrecorded event must not leak into the next call
  return r;
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------------------

namespace {

// An empty kernel: cudaFuncGetAttributes on it tells whether this build has code that runs on the
// current device (a cubin for its architecture, or PTX the driver can compile for it).
__global__ void probe_kernel() {}

#ifndef ADRANK_CUDA_TARGETS
#define ADRANK_CUDA_TARGETS "sm_80, sm_89, sm_90a, PTX compute_90"
#endif

// "" when device `dev` can run this build's kernels, else why not.
std::string no_code_reason(int dev) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    cudaGetLastError();
    return "device " + std::to_string(dev) + ": cannot read its properties";
  }
  const std::string arch = "sm_" + std::to_string(p.major) + std::to_string(p.minor);
  int prev = 0;
  cudaGetDevice(&prev);
  cudaError_t e = cudaSetDevice(dev);
  cudaFuncAttributes a{};
  if (e == cudaSuccess) e = cudaFuncGetAttributes(&a, probe_kernel);
  cudaSetDevice(prev);
  if (e == cudaSuccess) return "";
  cudaGetLastError();
  return "device " + std::to_string(dev) + " (" + p.name + ") is " + arch + "; this build has code for " + ADRANK_CUDA_TARGETS +
         " (" + cudaGetErrorName(e) + ")";
}

}  // namespace

int cuda_device_count(std::string* reason) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (reason) *reason = std::string("CUDA runtime: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    cudaGetLastError();
    return 0;
  }
  int usable = 0;
  std::string why = n == 0 ? "no CUDA device" : "";
  for (int i = 0; i < n; ++i) {
    const std::string no = no_code_reason(i);
    if (no.empty())
      ++usable;
    else if (why.empty())
      why = no;
  }
  if (reason) *reason = usable > 0 ? "" : why;
  return usable;
}

void cuda_backend_sync_ad_state(Backend& backend, const AdStateTable& state, const int32_t* rows, size_t n) {
  auto* b = dynamic_cast<CudaBackend*>(&backend);
  if (!b) throw std::invalid_argument("cuda_backend_sync_ad_state: not a CUDA backend");
  b->sync_state(state, rows, n);
}

}  // namespace adrank::cuda

namespace adrank {

// Declared in engine/backend.h; engine/backend.cc defines the throwing stub only without CUDA.
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model, int device, cpu::ThreadPool* pool) {
  return std::make_unique<cuda::CudaBackend>(std::move(model), device, pool);
}

}  // namespace adrank
