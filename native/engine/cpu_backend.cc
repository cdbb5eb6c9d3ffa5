// The CPU backend: docs/design.md §4 in fp32 (or bf16 GEMMs) on cpu::gemm with fused epilogues, candidates in chunks of
// kChunk rows spread over the engine's ThreadPool, per-chunk scratch from a reusable pool.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <vector>
#include <string>

#include "engine/backend.h"
#include "engine/clock.h"
#include "engine/funnel.h"
#include "engine/retrieval_scan.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/layer_norm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vector_ops.h"

namespace adrank {

namespace {

constexpr int kChunk = 256;           // most candidate rows per forward chunk (workspace size)
constexpr int kWholeChunk = 32;       // up to this many rows one chunk, its products split over the pool
constexpr int kMinChunkRows = 16;     // fewest rows of a chunk above that (each chunk reads all the weights)


void linear(const float* a, int m, int64_t lda, const Linear& l, float* c, int64_t ldc, bool relu, cpu::ThreadPool* pool = nullptr) {
  cpu::Epilogue ep;
  ep.bias = l.b.empty() ? nullptr : l.b.data();
  ep.relu = relu;
  cpu::gemm(a, m, lda, l.w, c, ldc, ep, pool);
}

void layer_norm_rows(const float* x, int64_t ldx, float* y, int64_t ldy, int m, int n, const std::vector<float>& g,
                     const std::vector<float>& b, bool relu) {
  cpu::LayerNormParams p;
  p.x = x;
  p.ldx = ldx;
  p.y = y;
  p.ldy = ldy;
  p.m = m;
  p.n = n;
  p.gamma = g.data();
  p.beta = b.data();
  p.relu = relu;
  cpu::layer_norm(p);
}

inline float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

// Everything about the request that every candidate shares (docs/design.md §4 "request side").
struct UserState {
  int surface = 0;
  std::vector<float> u;        // [du]
  int n = 0;                   // sequence length
  std::vector<float> H;        // [n, d_s] after sequence.norm
  cpu::PackedMatrix h_scaled;  // H / √d_s, for the target-attention scores
  cpu::PackedMatrix h_t;       // Hᵀ [d_s, n], for Σ α_j H_j
  std::vector<float> bias1;    // W_i1[:, :du] u + b_i1 for the stacked blocks, [B·h]
  std::vector<float> query;    // retrieval query, [D_r]
  std::vector<float> weights;  // task weights w, [T]
};

// Per-chunk scratch; sized once for kChunk rows.
struct Workspace {
  std::vector<float> qc, att, x, xhat, hid, t, x0, xa, xb, lr, ma, mb, logits;
};

// Where a forward writes; every pointer is [candidates × width] row-major, null = not wanted.
struct ForwardOut {
  const AdStateTable* state = nullptr;  // input: the live state (its bid per ad row)
  float* probs = nullptr;    // [× T]
  float* utility = nullptr;  // [×]
  float* value = nullptr;    // Σ_t w_t p_t, [×]
  float *ad = nullptr, *ta = nullptr, *input = nullptr, *x0 = nullptr, *cross = nullptr, *hidden = nullptr, *logits = nullptr;
};

struct StageTime {
  double gather = 0, masknet = 0, dcn = 0, mlp = 0;
};

// Rows [begin, end) of a forward's candidate list belong to the request whose request side is `us`
// (a micro-batch runs the candidates of several requests through one forward).
struct Segment {
  const UserState* us = nullptr;
  int64_t begin = 0, end = 0;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::shared_ptr<const Model> model, cpu::ThreadPool* pool) : model_(std::move(model)), m_(*model_), pool_(pool) {}

  const char* kind() const override { return "cpu"; }
  std::string description() const override {
    return std::string("cpu ") + cpu::gemm_isa() + (m_.bf16_weights() ? " bf16" : " fp32") + " x" +
           std::to_string(pool_ ? pool_->size() : 1) + " threads";
  }

  Result rank(const Request& req, const AdStateTable& state) override;
  Result retrieve(const Request& req, const AdStateTable& state) override;
  Result retrieve_and_rank(const Request& req, const AdStateTable& state) override;
  Explain explain(const Request& req, const AdStateTable& state) override;
  std::vector<Result> run_batch(const std::vector<BatchEntry>& entries, const AdStateTable& state, cpu::ThreadPool* pool) override;

 private:
  UserState compute_user(const Request& req, bool for_ranking) const;
  // The request side of several requests: features and sequence encoders per request (spread over
  // the pool), then the user tower and the user half of MaskNet layer 1 as one GEMM each over the
  // stacked user vectors. users[i] is filled for reqs[i].
  void compute_users(const std::vector<const Request*>& reqs, bool for_ranking, std::vector<UserState>& users) const;
  void user_features(const Request& req, bool for_ranking, UserState& us) const;
  void encode_sequence(const Request& req, UserState& us) const;
  void forward(const UserState& us, const int32_t* rows, int64_t count, const ForwardOut& out, Timings& t);
  void forward(const std::vector<Segment>& segs, const int32_t* rows, int64_t count, const ForwardOut& out, Timings& t);
  // gp: the pool for the chunk's GEMMs (each splits its columns over it), when the forward has
  // fewer chunks than threads (a small request: the weights are then read by every core, each its
  // own columns); null otherwise (the chunks already keep the threads busy).
  void forward_chunk(const std::vector<Segment>& segs, const int32_t* rows, int m, int64_t r0, Workspace& ws,
                     const ForwardOut& out, StageTime& st, cpu::ThreadPool* gp) const;
  // Rank and RetrieveAndRank requests of one batch (entries[i] for i in `which`) into res[i].
  void rank_many(const std::vector<BatchEntry>& entries, const std::vector<size_t>& which, const AdStateTable& state,
                 std::vector<Result>& res);
  // Eligibility over the whole corpus with retrieval scores for the eligible ads.
  // The candidates that may be among the first k of the walk with `cap` (engine/retrieval_scan.h).
  std::vector<Candidate> scan(const Request& req, const AdStateTable& state, const UserState& us, uint32_t k, uint32_t cap, Counts& counts);
  // Retrieval's first half, shared by Retrieve and RetrieveAndRank: the request side, then scan();
  // sets r.timings.user and r.timings.retrieve and r.counts.
  struct Scanned {
    UserState us;
    std::vector<Candidate> cands;
  };
  Scanned scan_corpus(const Request& req, const AdStateTable& state, bool for_ranking, Result& r);
  // RetrieveAndRank's sources (docs/funnel.md "Blended retrieval sources"): `rows` holds the
  // retrieved top R; appends the caller's candidates that pass intake, dedupe against retrieval,
  // eligibility and the quota, and fills r.source_counts.
  void blend_sources(const Request& req, const AdStateTable& state, Result& r, std::vector<int32_t>& rows) const;
  // After finish_ranked: each winner's source (rows [0, retrieved) are retrieval's) and the
  // per-source winner counts.
  static void credit_winners(const std::vector<int32_t>& rows, Result& r);
  // Selection, winners and prices for one request from its rows' forward outputs.
  void finish_ranked(const Request& req, const std::vector<int32_t>& rows, const float* probs, const float* utility,
                     const float* value, const AdStateTable& state, Result& r, bool want_prices) const;

  std::unique_ptr<Workspace> acquire();
  void release(std::unique_ptr<Workspace> ws);

  std::shared_ptr<const Model> model_;
  const Model& m_;
  cpu::ThreadPool* pool_;
  std::mutex ws_mu_;
  std::vector<std::unique_ptr<Workspace>> free_;
};

std::unique_ptr<Workspace> CpuBackend::acquire() {
  {
    std::lock_guard<std::mutex> lock(ws_mu_);
    if (!free_.empty()) {
      auto ws = std::move(free_.back());
      free_.pop_back();
      return ws;
    }
  }
  const ModelDims& d = m_.dims();
  const size_t C = kChunk, din = d.input(), D = d.cross();
  size_t widest = 1;
  for (int w : d.mlp) widest = std::max<size_t>(widest, w);
  auto ws = std::make_unique<Workspace>();
  ws->qc.resize(C * d.seq_dim);
  ws->att.resize(C * d.seq_max_len);
  ws->x.resize(C * din);
  ws->xhat.resize(C * din);
  ws->hid.resize(C * d.masknet_blocks * d.masknet_hidden);
  ws->t.resize(C * din);
  ws->x0.resize(C * D);
  ws->xa.resize(C * D);
  ws->xb.resize(C * D);
  ws->lr.resize(C * std::max(d.dcn_rank, 1));
  ws->ma.resize(C * widest);
  ws->mb.resize(C * widest);
  ws->logits.resize(C * d.tasks);
  return ws;
}

void CpuBackend::release(std::unique_ptr<Workspace> ws) {
  std::lock_guard<std::mutex> lock(ws_mu_);
  free_.push_back(std::move(ws));
}

// Token j = item[item_j mod buckets] + action[a_j] + position[j]; `layers` pre-norm encoder layers
// (x += MHA(LN1 x); x += linear2(ReLU(linear1(LN2 x)))); then sequence.norm.
void CpuBackend::encode_sequence(const Request& req, UserState& us) const {
  const ModelDims& d = m_.dims();
  const int n = int(req.seq_items.size), ds = d.seq_dim;
  us.n = n;
  if (n == 0) return;
  std::vector<float> x(size_t(n) * ds), y(size_t(n) * ds), qkv(size_t(n) * 3 * ds), att(size_t(n) * ds),
      ffn(size_t(n) * d.seq_ffn_dim), scratch(n);
  for (int j = 0; j < n; j++) {
    const float* it = m_.seq_item.data() + bucket_of(req.seq_items[j], d.seq_item_buckets) * ds;
    // Validated by parse_request, but read again from the caller's buffer: clamp (as the CUDA path
    // does) so a buffer changed after validation cannot index past sequence.action.
    const uint32_t action = std::min<uint32_t>(req.seq_actions[j], uint32_t(d.seq_actions - 1));
    const float* ac = m_.seq_action.data() + size_t(action) * ds;
    const float* ps = m_.seq_position.data() + size_t(j) * ds;
    for (int k = 0; k < ds; k++) x[size_t(j) * ds + k] = it[k] + ac[k] + ps[k];
  }
  for (const SequenceLayer& L : m_.seq_layers) {
    layer_norm_rows(x.data(), ds, y.data(), ds, n, ds, L.norm1_w, L.norm1_b, false);
    linear(y.data(), n, ds, L.in_proj, qkv.data(), 3 * ds, false);
    cpu::SelfAttentionParams ap;
    ap.qkv = qkv.data();
    ap.out = att.data();
    ap.n = n;
    ap.d = ds;
    ap.heads = d.seq_heads;
    ap.scratch = scratch.data();
    cpu::self_attention(ap);
    cpu::Epilogue ep;  // x + out_proj(att)
    ep.bias = L.out_proj.b.data();
    ep.add = x.data();
    ep.ld_add = ds;
    cpu::gemm(att.data(), n, ds, L.out_proj.w, y.data(), ds, ep, nullptr);
    std::swap(x, y);
    layer_norm_rows(x.data(), ds, y.data(), ds, n, ds, L.norm2_w, L.norm2_b, false);
    linear(y.data(), n, ds, L.linear1, ffn.data(), d.seq_ffn_dim, true);
    cpu::Epilogue ep2;  // x + linear2(ReLU(linear1(LN2 x)))
    ep2.bias = L.linear2.b.data();
    ep2.add = x.data();
    ep2.ld_add = ds;
    cpu::gemm(ffn.data(), n, d.seq_ffn_dim, L.linear2.w, y.data(), ds, ep2, nullptr);
    std::swap(x, y);
  }
  us.H.resize(size_t(n) * ds);
  layer_norm_rows(x.data(), ds, us.H.data(), ds, n, ds, m_.seq_norm_w, m_.seq_norm_b, false);
}

void CpuBackend::user_features(const Request& req, bool for_ranking, UserState& us) const {
  const ModelDims& d = m_.dims();
  us.surface = int(req.surface);
  us.u.assign(d.user(), 0.f);
  float* u = us.u.data();
  for (int j = 0; j < d.user_dense; j++) {
    const float z = (req.user_dense[j] - m_.ud_mean[j]) / m_.ud_std[j];
    u[j] = std::fmin(std::fmax(z, -d.dense_clip), d.dense_clip);
  }
  int off = d.user_dense;
  for (size_t f = 0; f < d.user_sparse.size(); f++) {
    const SparseFieldDims& fd = d.user_sparse[f];
    const Span<int64_t> ids = req.user_sparse[f];
    float* v = u + off;
    for (int64_t id : ids) cpu::axpy(1.0f, m_.user_sparse[f].data() + bucket_of(id, fd.cardinality) * fd.dim, v, fd.dim);
    if (ids.size > 0) {
      const float inv = 1.0f / float(ids.size);
      for (int k = 0; k < fd.dim; k++) v[k] *= inv;
      cpu::l2_normalize(v, fd.dim);
    }
    off += fd.dim;
  }
  std::memcpy(u + off, req.user_embedding.data, sizeof(float) * d.user_embedding_dim);
  cpu::l2_normalize(u + off, d.user_embedding_dim);
  off += d.user_embedding_dim;
  encode_sequence(req, us);
  if (us.n > 0) {
    float* s = u + off;
    for (int j = 0; j < us.n; j++) cpu::axpy(1.0f, us.H.data() + size_t(j) * d.seq_dim, s, d.seq_dim);
    for (int k = 0; k < d.seq_dim; k++) s[k] /= float(us.n);
    cpu::l2_normalize(s, d.seq_dim);
  }
  off += d.seq_dim;
  std::memcpy(u + off, m_.surface.data() + size_t(us.surface) * d.surface_dim, sizeof(float) * d.surface_dim);

  const int T = d.tasks;
  const float* w = req.weights_override() ? req.task_weights.data : m_.task_weights.data() + size_t(us.surface) * T;
  us.weights.assign(w, w + T);

  if (for_ranking && us.n > 0) {
    const int ds = d.seq_dim;
    const float scale = 1.0f / std::sqrt(float(ds));
    std::vector<float> hs(us.H), ht(size_t(ds) * us.n);
    for (float& v : hs) v *= scale;
    for (int j = 0; j < us.n; j++)
      for (int k = 0; k < ds; k++) ht[size_t(k) * us.n + j] = us.H[size_t(j) * ds + k];
    us.h_scaled = cpu::PackedMatrix(hs.data(), us.n, ds);
    us.h_t = cpu::PackedMatrix(ht.data(), ds, us.n);
  }
}

void CpuBackend::compute_users(const std::vector<const Request*>& reqs, bool for_ranking, std::vector<UserState>& users) const {
  const ModelDims& d = m_.dims();
  const int64_t R = int64_t(reqs.size());
  users.resize(reqs.size());
  if (R == 0) return;
  auto features = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) user_features(*reqs[i], for_ranking, users[i]);
  };
  if (pool_ && R > 1) pool_->parallel_for(R, features, 1); else features(0, R);

  // One GEMM per layer over the stacked user vectors: GEMM rows are independent (gemm.h), so row i
  // is bitwise what the request alone would get.
  const int du = d.user();
  std::vector<float> U(size_t(R) * du);
  for (int64_t i = 0; i < R; i++) std::memcpy(U.data() + size_t(i) * du, users[i].u.data(), sizeof(float) * du);
  // Retrieval query: user tower (ReLU between layers, none after the last), then L2n.
  std::vector<float> a(U), b;
  int width = du;
  for (size_t k = 0; k < m_.user_tower.size(); k++) {
    const Linear& l = m_.user_tower[k];
    b.assign(size_t(R) * l.w.n(), 0.f);
    linear(a.data(), int(R), l.w.k(), l, b.data(), l.w.n(), k + 1 < m_.user_tower.size(), pool_);
    std::swap(a, b);
    width = l.w.n();
  }
  for (int64_t i = 0; i < R; i++) {
    users[i].query.assign(a.begin() + i * width, a.begin() + (i + 1) * width);
    cpu::l2_normalize(users[i].query.data(), int64_t(width));
  }
  if (for_ranking) {
    const int64_t Bh = int64_t(d.masknet_blocks) * d.masknet_hidden;
    std::vector<float> bias(size_t(R) * Bh, 0.f);
    linear(U.data(), int(R), du, m_.mask1_user, bias.data(), Bh, false, pool_);
    for (int64_t i = 0; i < R; i++) users[i].bias1.assign(bias.begin() + i * Bh, bias.begin() + (i + 1) * Bh);
  }
}

UserState CpuBackend::compute_user(const Request& req, bool for_ranking) const {
  std::vector<UserState> users;
  compute_users({&req}, for_ranking, users);
  return std::move(users[0]);
}

void CpuBackend::forward_chunk(const std::vector<Segment>& segs, const int32_t* rows, int m, int64_t r0, Workspace& ws,
                               const ForwardOut& out, StageTime& st, cpu::ThreadPool* gp) const {
  const ModelDims& d = m_.dims();
  const int du = d.user(), da = d.ad(), ds = d.seq_dim, din = d.input(), D = d.cross(), T = d.tasks;
  const int B = d.masknet_blocks, h = d.masknet_hidden, o = d.masknet_output, Bh = B * h;
  auto capture = [&](float* dst, const float* src, int64_t ld, int width) {
    if (!dst) return;
    for (int i = 0; i < m; i++) std::memcpy(dst + (r0 + i) * width, src + i * ld, sizeof(float) * width);
  };
  double t0 = steady_us();

  // The requests this chunk's rows [0, m) belong to: rows [lo, hi) use *us.
  struct Part {
    const UserState* us;
    int lo, hi;
  };
  std::vector<Part> parts;
  {
    auto it = std::upper_bound(segs.begin(), segs.end(), r0, [](int64_t r, const Segment& g) { return r < g.begin; });
    for (--it; it != segs.end() && it->begin < r0 + m; ++it)
      if (it->end > r0) parts.push_back(Part{it->us, int(std::max(it->begin, r0) - r0), int(std::min(it->end, r0 + m) - r0)});
  }

  // Gather x = [u ; a_c ; ta_c]; target attention ta = softmax(q_c Hᵀ / √d_s) H, per request.
  float* x = ws.x.data();
  for (const Part& p : parts)
    for (int i = p.lo; i < p.hi; i++) std::memcpy(x + size_t(i) * din, p.us->u.data(), sizeof(float) * du);
  m_.ad_side(rows, m, x + du, din, ws.qc.data());  // a_c into x, q_c into ws.qc
  for (const Part& p : parts) {
    const UserState& us = *p.us;
    const int mm = p.hi - p.lo;
    if (us.n > 0) {
      cpu::gemm(ws.qc.data() + size_t(p.lo) * ds, mm, ds, us.h_scaled, ws.att.data(), us.n, cpu::Epilogue{}, gp);
      for (int i = 0; i < mm; i++) cpu::softmax_inplace(ws.att.data() + size_t(i) * us.n, us.n);
      cpu::gemm(ws.att.data(), mm, us.n, us.h_t, x + size_t(p.lo) * din + du + da, din, cpu::Epilogue{}, gp);
    } else {
      for (int i = p.lo; i < p.hi; i++) std::memset(x + size_t(i) * din + du + da, 0, sizeof(float) * ds);
    }
  }
  capture(out.ad, x + du, din, da);
  capture(out.ta, x + du + da, din, ds);
  capture(out.input, x, din, din);
  double t1 = steady_us();
  st.gather += t1 - t0;

  // MaskNet: x̂ = LN(x); hidden = ReLU(W_1[:, du:] [a;ta] + bias_eff) for all blocks at once;
  // x̂ ⊙ m_i in the epilogue of W_i2; o_i = ReLU(LN_i(proj_i(·))) into x0[:, i·o].
  layer_norm_rows(x, din, ws.xhat.data(), din, m, din, m_.input_norm_w, m_.input_norm_b, false);
  {
    // The bias (user half of layer 1) differs per request, so it is added after the GEMM, row by
    // row, for a batch of one as for many: acc + bias then ReLU, the epilogue's arithmetic.
    cpu::gemm(x + du, m, din, m_.mask1_ad, ws.hid.data(), Bh, cpu::Epilogue{}, gp);
    for (const Part& p : parts) {
      const float* b1 = p.us->bias1.data();
      for (int i = p.lo; i < p.hi; i++) {
        float* hrow = ws.hid.data() + size_t(i) * Bh;
        for (int j = 0; j < Bh; j++) hrow[j] = std::max(hrow[j] + b1[j], 0.f);
      }
    }
  }
  float* x0 = ws.x0.data();
  for (int i = 0; i < B; i++) {
    const MaskBlock& blk = m_.blocks[i];
    cpu::Epilogue ep;
    ep.bias = blk.mask2.b.data();
    ep.mul = ws.xhat.data();
    ep.ld_mul = din;
    cpu::gemm(ws.hid.data() + size_t(i) * h, m, Bh, blk.mask2.w, ws.t.data(), din, ep, gp);
    cpu::gemm(ws.t.data(), m, din, blk.proj, x0 + size_t(i) * o, D, cpu::Epilogue{}, gp);
    layer_norm_rows(x0 + size_t(i) * o, D, x0 + size_t(i) * o, D, m, o, blk.norm_w, blk.norm_b, true);
  }
  capture(out.x0, x0, D, D);
  double t2 = steady_us();
  st.masknet += t2 - t1;

  // DCNv2: x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l (low rank: W_l x_l = U_l (V_l x_l)).
  const float* cur = x0;
  for (size_t l = 0; l < m_.cross.size(); l++) {
    const CrossLayer& c = m_.cross[l];
    float* next = (l % 2 == 0) ? ws.xa.data() : ws.xb.data();
    cpu::Epilogue ep;
    ep.bias = c.b.data();
    ep.mul = x0;
    ep.ld_mul = D;
    ep.add = cur;
    ep.ld_add = D;
    if (d.dcn_rank > 0) {
      cpu::gemm(cur, m, D, c.v, ws.lr.data(), d.dcn_rank, cpu::Epilogue{}, gp);
      cpu::gemm(ws.lr.data(), m, d.dcn_rank, c.u, next, D, ep, gp);
    } else {
      cpu::gemm(cur, m, D, c.w, next, D, ep, gp);
    }
    cur = next;
  }
  capture(out.cross, cur, D, D);
  double t3 = steady_us();
  st.dcn += t3 - t2;

  // MLP (ReLU), heads, calibration, utility.
  int width = D;
  for (size_t k = 0; k < m_.mlp.size(); k++) {
    float* next = (k % 2 == 0) ? ws.ma.data() : ws.mb.data();
    linear(cur, m, width, m_.mlp[k], next, m_.mlp[k].w.n(), true, gp);
    cur = next;
    width = m_.mlp[k].w.n();
  }
  capture(out.hidden, cur, width, width);
  linear(cur, m, width, m_.heads, ws.logits.data(), T, false, gp);
  capture(out.logits, ws.logits.data(), T, T);
  for (const Part& part : parts) {
    const UserState& us = *part.us;
    const float* scale = m_.calib_scale.data() + size_t(us.surface) * T;
    const float* bias = m_.calib_bias.data() + size_t(us.surface) * T;
    for (int i = part.lo; i < part.hi; i++) {
      float value = 0;
      for (int t = 0; t < T; t++) {
        const float p = sigmoid(scale[t] * ws.logits[size_t(i) * T + t] + bias[t]);
        if (out.probs) out.probs[(r0 + i) * T + t] = p;
        value += us.weights[t] * p;
      }
      if (out.value) out.value[r0 + i] = value;
      if (out.utility) out.utility[r0 + i] = out.state->bid(rows[i]) * value;
    }
  }
  st.mlp += steady_us() - t3;
}

void CpuBackend::forward(const UserState& us, const int32_t* rows, int64_t count, const ForwardOut& out, Timings& t) {
  forward(std::vector<Segment>{Segment{&us, 0, count}}, rows, count, out, t);
}

void CpuBackend::forward(const std::vector<Segment>& segs, const int32_t* rows, int64_t count, const ForwardOut& out, Timings& t) {
  if (count == 0) return;
  const double t0 = steady_us();
  const int64_t threads = pool_ ? pool_->size() : 1;
  // Equal chunks, a multiple of the thread count where the rows allow, none over kChunk rows
  // (cpu::row_chunks)
  const cpu::RowChunks plan = cpu::row_chunks(count, int(threads), kChunk, kWholeChunk, kMinChunkRows);
  const int64_t rows_per = plan.rows, chunks = plan.chunks;
  cpu::ThreadPool* gp = chunks < threads ? pool_ : nullptr;
  std::mutex mu;
  StageTime total;
  auto run = [&](int64_t c0, int64_t c1) {
    std::unique_ptr<Workspace> ws = acquire();
    StageTime st;
    try {
      for (int64_t c = c0; c < c1; c++) {
        const int64_t r0 = c * rows_per;
        forward_chunk(segs, rows + r0, int(std::min<int64_t>(rows_per, count - r0)), r0, *ws, out, st, gp);
      }
    } catch (...) {
      release(std::move(ws));
      throw;
    }
    release(std::move(ws));
    std::lock_guard<std::mutex> lock(mu);
    total.gather += st.gather;
    total.masknet += st.masknet;
    total.dcn += st.dcn;
    total.mlp += st.mlp;
  };
  if (pool_) pool_->parallel_for(chunks, run, 1); else run(0, chunks);
  const double wall = steady_us() - t0;
  const double busy = total.gather + total.masknet + total.dcn + total.mlp;
  const double f = busy > 0 ? wall / busy : 0;
  t.gather += total.gather * f;
  t.masknet += total.masknet * f;
  t.dcn += total.dcn * f;
  t.mlp += total.mlp * f;
}

std::vector<Candidate> CpuBackend::scan(const Request& req, const AdStateTable& state, const UserState& us, uint32_t k, uint32_t cap,
                                        Counts& counts) {
  return retrieval_scan(m_, state, req, us.query.data(), k, cap, counts, pool_);
}

// Selects K of `rows` (all eligible, forward outputs in probs/utility/value) with the request's cap
// and mode, prices if asked.
void CpuBackend::finish_ranked(const Request& req, const std::vector<int32_t>& rows, const float* probs, const float* utility,
                               const float* value, const AdStateTable& state, Result& r, bool want_prices) const {
  const int T = m_.dims().tasks;
  const size_t n = rows.size();
  const double t0 = steady_us();
  std::vector<Candidate> cands;
  cands.reserve(n);
  for (size_t i = 0; i < n; i++) cands.push_back(make_candidate(utility[i], m_.ad_id[rows[i]], m_.ad_advertiser[rows[i]], int32_t(i)));
  const Selection s = select(cands, req, want_prices);
  r.counts.capped += s.capped;
  const size_t k = s.winners.size();
  r.ad_ids.resize(k);
  r.advertisers.resize(k);
  r.rows.resize(k);
  r.scores.resize(k);
  r.probs.resize(k * T);
  r.values.resize(k);
  for (size_t i = 0; i < k; i++) {
    const int32_t idx = s.winners[i].index;
    r.ad_ids[i] = s.winners[i].id;
    r.advertisers[i] = s.winners[i].advertiser;
    r.rows[i] = rows[idx];
    r.scores[i] = utility[idx];
    r.values[i] = value[idx];
    std::memcpy(r.probs.data() + i * T, probs + size_t(idx) * T, sizeof(float) * T);
  }
  if (want_prices)
    r.prices = gsp_prices(s, req.reserve, [&](int32_t idx) { return state.bid(rows[idx]); }, [&](int32_t idx) { return value[idx]; });
  r.timings.select += steady_us() - t0;
}

void CpuBackend::blend_sources(const Request& req, const AdStateTable& state, Result& r, std::vector<int32_t>& rows) const {
  SourceCounts ret, caller;
  ret.source = kSourceRetrieval;
  ret.counts = r.counts;  // the scan's: received = ads scanned, drops, eligible
  ret.ranked = int64_t(rows.size());
  caller.source = kSourceCaller;
  if (req.candidates.size > 0) {
    // intake: request order, unknown and repeats within the list counted, first occurrence kept
    const std::vector<int32_t> known = intake(m_, req.candidates, caller.counts);
    RowSet retrieved(rows.size());
    for (int32_t row : rows) retrieved.insert(row);
    const Eligibility el(m_, state, req);
    for (int32_t row : known) {  // unique rows: no caller row repeats
      if (retrieved.contains(row)) {  // already passed to ranking by retrieval: credited there
        caller.earlier_source++;
        continue;
      }
      const Drop drop = el.check(row);
      Eligibility::count(drop, caller.counts);
      if (drop != Drop::kEligible) continue;
      if (req.candidate_quota != 0 && caller.ranked >= int64_t(req.candidate_quota)) {
        caller.over_quota++;
        continue;
      }
      rows.push_back(row);
      caller.ranked++;
    }
  }
  r.source_counts = {ret, caller};
}

void CpuBackend::credit_winners(const std::vector<int32_t>& rows, Result& r) {
  // Row indices are not kept by finish_ranked, but a row appears once in `rows`: the first
  // `retrieved` rows are retrieval's, the rest the caller's.
  RowSet from_retrieval(size_t(r.retrieved));
  for (int64_t i = 0; i < r.retrieved; i++) from_retrieval.insert(rows[size_t(i)]);
  r.sources.resize(r.rows.size());
  for (size_t w = 0; w < r.rows.size(); w++) {
    const bool ret = from_retrieval.contains(r.rows[w]);
    r.sources[w] = ret ? kSourceRetrieval : kSourceCaller;
    if (r.source_counts.size() == 2) r.source_counts[ret ? 0 : 1].winners++;
  }
}

// A micro-batch of Rank / RetrieveAndRank requests: intake and eligibility per request, the request
// sides together (compute_users), corpus scans per request, then ONE forward over the concatenated
// candidates (each row with its own request side) and selection per request. A batch of one is the
// single-request path, so a request's answer does not depend on what it was batched with.
void CpuBackend::rank_many(const std::vector<BatchEntry>& es, const std::vector<size_t>& which, const AdStateTable& state,
                           std::vector<Result>& res) {
  std::vector<std::vector<int32_t>> rows(es.size());
  std::vector<size_t> need;  // requests that need the request side and the forward
  for (size_t i : which) {
    const Request& req = *es[i].req;
    if (es[i].op == Op::kRetrieveAndRank) {
      need.push_back(i);
      continue;
    }
    Result& r = res[i];
    const double t0 = steady_us();
    const std::vector<int32_t> known = intake(m_, req.candidates, r.counts);
    const Eligibility el(m_, state, req);
    rows[i].reserve(known.size());
    for (int32_t row : known) {
      const Drop drop = el.check(row);
      Eligibility::count(drop, r.counts);
      if (drop == Drop::kEligible) rows[i].push_back(row);
    }
    r.timings.select += steady_us() - t0;
    if (!rows[i].empty()) need.push_back(i);
  }
  if (need.empty()) return;

  const double t1 = steady_us();
  std::vector<const Request*> reqs;
  for (size_t i : need) reqs.push_back(es[i].req);
  std::vector<UserState> users;
  compute_users(reqs, true, users);
  const double user_us = steady_us() - t1;
  for (size_t i : need) res[i].timings.user = user_us;

  for (size_t j = 0; j < need.size(); j++) {
    const size_t i = need[j];
    if (es[i].op != Op::kRetrieveAndRank) continue;
    const Request& req = *es[i].req;
    Result& r = res[i];
    const double t2 = steady_us();
    std::vector<Candidate> cands = scan(req, state, users[j], req.retrieve_count, 0, r.counts);
    const Selection top = select_global(cands, req.retrieve_count, 0, false);
    rows[i].reserve(top.winners.size() + req.candidates.size);
    for (const Candidate& c : top.winners) rows[i].push_back(c.index);
    r.retrieved = int64_t(rows[i].size());
    r.timings.retrieve = steady_us() - t2;
    const double t3 = steady_us();
    blend_sources(req, state, r, rows[i]);
    r.timings.select += steady_us() - t3;
  }

  std::vector<Segment> segs;
  std::vector<int32_t> all;
  int64_t total = 0;
  for (size_t i : need) total += int64_t(rows[i].size());
  all.reserve(size_t(total));
  for (size_t j = 0; j < need.size(); j++) {
    const std::vector<int32_t>& rj = rows[need[j]];
    if (rj.empty()) continue;
    segs.push_back(Segment{&users[j], int64_t(all.size()), int64_t(all.size() + rj.size())});
    all.insert(all.end(), rj.begin(), rj.end());
  }
  const int T = m_.dims().tasks;
  std::vector<float> probs(size_t(total) * T), utility(static_cast<size_t>(total)), value(static_cast<size_t>(total));
  ForwardOut out;
  out.state = &state;
  out.probs = probs.data();
  out.utility = utility.data();
  out.value = value.data();
  Timings ft;
  forward(segs, all.data(), total, out, ft);

  int64_t off = 0;
  for (size_t i : need) {
    Result& r = res[i];
    r.timings.gather += ft.gather;
    r.timings.masknet += ft.masknet;
    r.timings.dcn += ft.dcn;
    r.timings.mlp += ft.mlp;
    const bool price = es[i].op == Op::kRetrieveAndRank || es[i].req->price();
    finish_ranked(*es[i].req, rows[i], probs.data() + size_t(off) * T, utility.data() + off, value.data() + off, state, r, price);
    if (es[i].op == Op::kRetrieveAndRank) credit_winners(rows[i], r);
    off += int64_t(rows[i].size());
  }
}

std::vector<Result> CpuBackend::run_batch(const std::vector<BatchEntry>& es, const AdStateTable& state, cpu::ThreadPool*) {
  std::vector<Result> res(es.size());
  std::vector<size_t> ranked;
  for (size_t i = 0; i < es.size(); i++) {
    if (es[i].op == Op::kRank || es[i].op == Op::kRetrieveAndRank) ranked.push_back(i);
    else if (es[i].op == Op::kRetrieve) res[i] = retrieve(*es[i].req, state);
    else throw std::runtime_error(std::string("expected rank, retrieve or retrieveAndRank for a batch entry's op, got ") + op_name(es[i].op));
  }
  rank_many(es, ranked, state, res);
  return res;
}

Result CpuBackend::rank(const Request& req, const AdStateTable& state) {
  std::vector<Result> res(1);
  rank_many({BatchEntry{&req, Op::kRank}}, {0}, state, res);
  return std::move(res[0]);
}

CpuBackend::Scanned CpuBackend::scan_corpus(const Request& req, const AdStateTable& state, bool for_ranking, Result& r) {
  const double t0 = steady_us();
  Scanned s{compute_user(req, for_ranking), {}};
  const double t1 = steady_us();
  r.timings.user = t1 - t0;
  s.cands = scan(req, state, s.us, req.k, req.cap, r.counts);
  r.timings.retrieve = steady_us() - t1;
  return s;
}

Result CpuBackend::retrieve(const Request& req, const AdStateTable& state) {
  Result r;
  Scanned sc = scan_corpus(req, state, false, r);
  const double t2 = steady_us();
  const Selection s = select_global(sc.cands, req.k, req.cap, false);
  r.counts.capped += s.capped;
  for (const Candidate& c : s.winners) {
    r.ad_ids.push_back(c.id);
    r.advertisers.push_back(c.advertiser);
    r.rows.push_back(c.index);
    r.scores.push_back(c.score);
  }
  r.timings.select = steady_us() - t2;
  return r;
}

Result CpuBackend::retrieve_and_rank(const Request& req, const AdStateTable& state) {
  std::vector<Result> res(1);
  rank_many({BatchEntry{&req, Op::kRetrieveAndRank}}, {0}, state, res);
  return std::move(res[0]);
}

Explain CpuBackend::explain(const Request& req, const AdStateTable& state) {
  const ModelDims& d = m_.dims();
  Explain e;
  Counts ignored;
  e.rows = intake(m_, req.candidates, ignored);
  const Eligibility eligible(m_, state, req);
  e.drops.reserve(e.rows.size());
  for (const int32_t row : e.rows) e.drops.push_back(uint8_t(eligible.check(row)));
  const UserState us = compute_user(req, true);
  e.user = us.u;
  e.sequence = us.H;
  e.query = us.query;
  const size_t n = e.rows.size();
  e.ad.resize(n * d.ad());
  e.target_attention.resize(n * d.seq_dim);
  e.input.resize(n * d.input());
  e.masknet.resize(n * d.cross());
  e.cross.resize(n * d.cross());
  e.hidden.resize(n * d.last());
  e.logits.resize(n * d.tasks);
  e.probs.resize(n * d.tasks);
  e.utility.resize(n);
  e.retrieval_scores.resize(n);
  ForwardOut out;
  out.state = &state;  // the live bids, as the RPC it explains uses
  out.probs = e.probs.data();
  out.utility = e.utility.data();
  out.ad = e.ad.data();
  out.ta = e.target_attention.data();
  out.input = e.input.data();
  out.x0 = e.masknet.data();
  out.cross = e.cross.data();
  out.hidden = e.hidden.data();
  out.logits = e.logits.data();
  Timings t;
  forward(us, e.rows.data(), int64_t(n), out, t);
  for (size_t i = 0; i < n; i++)
    e.retrieval_scores[i] = cpu::dot(us.query.data(), m_.ad_retrieval.data() + size_t(e.rows[i]) * d.retrieval_dim, d.retrieval_dim);
  return e;
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model, cpu::ThreadPool* pool) {
  return std::make_unique<CpuBackend>(std::move(model), pool);
}

}  // namespace adrank
