// The CPU backend: DESIGN §4 in fp32 on cpu::gemm with fused epilogues, candidates in chunks of
// kChunk rows spread over the engine's ThreadPool, per-chunk scratch from a reusable pool.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "engine/backend.h"
#include "engine/funnel.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/layer_norm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vector_ops.h"

namespace adrank {

namespace {

constexpr int kChunk = 256;           // most candidate rows per forward chunk (workspace size)
constexpr int kMinChunk = 32;         // fewest, so small requests still spread over the threads
constexpr int64_t kScanChunk = 16384; // ads per retrieval-scan chunk

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void linear(const float* a, int m, int64_t lda, const Linear& l, float* c, int64_t ldc, bool relu) {
  cpu::Epilogue ep;
  ep.bias = l.b.empty() ? nullptr : l.b.data();
  ep.relu = relu;
  cpu::gemm(a, m, lda, l.w, c, ldc, ep, nullptr);
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

// Everything about the request that every candidate shares (DESIGN §4 "request side").
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
  float* probs = nullptr;    // [× T]
  float* utility = nullptr;  // [×]
  float* value = nullptr;    // Σ_t w_t p_t, [×]
  float *ad = nullptr, *ta = nullptr, *input = nullptr, *x0 = nullptr, *cross = nullptr, *hidden = nullptr, *logits = nullptr;
};

struct StageTime {
  double gather = 0, masknet = 0, dcn = 0, mlp = 0;
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
  Explain explain(const Request& req) override;

 private:
  UserState compute_user(const Request& req, bool for_ranking) const;
  void encode_sequence(const Request& req, UserState& us) const;
  void forward(const UserState& us, const int32_t* rows, int64_t count, const ForwardOut& out, Timings& t);
  void forward_chunk(const UserState& us, const int32_t* rows, int m, int64_t r0, Workspace& ws, const ForwardOut& out,
                     StageTime& st) const;
  // Eligibility over the whole corpus with retrieval scores for the eligible ads.
  std::vector<Candidate> scan(const Request& req, const AdStateTable& state, const UserState& us, Counts& counts);
  // Retrieval's first half, shared by Retrieve and RetrieveAndRank: the request side, then scan();
  // sets r.timings.user and r.timings.retrieve and r.counts.
  struct Scanned {
    UserState us;
    std::vector<Candidate> cands;
  };
  Scanned scan_corpus(const Request& req, const AdStateTable& state, bool for_ranking, Result& r);
  Result finish_ranked(const Request& req, const std::vector<int32_t>& rows, const UserState& us, Result r,
                       bool want_prices);

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

UserState CpuBackend::compute_user(const Request& req, bool for_ranking) const {
  const ModelDims& d = m_.dims();
  UserState us;
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

  // Retrieval query: user tower (ReLU between layers, none after the last), then L2n.
  std::vector<float> a(us.u), b;
  for (size_t k = 0; k < m_.user_tower.size(); k++) {
    const Linear& l = m_.user_tower[k];
    b.assign(l.w.n(), 0.f);
    linear(a.data(), 1, l.w.k(), l, b.data(), l.w.n(), k + 1 < m_.user_tower.size());
    std::swap(a, b);
  }
  cpu::l2_normalize(a.data(), int64_t(a.size()));
  us.query = std::move(a);

  const int T = d.tasks;
  const float* w = req.weights_override() ? req.task_weights.data : m_.task_weights.data() + size_t(us.surface) * T;
  us.weights.assign(w, w + T);

  if (for_ranking) {
    us.bias1.assign(size_t(d.masknet_blocks) * d.masknet_hidden, 0.f);
    linear(us.u.data(), 1, d.user(), m_.mask1_user, us.bias1.data(), int64_t(us.bias1.size()), false);
    if (us.n > 0) {
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
  return us;
}

void CpuBackend::forward_chunk(const UserState& us, const int32_t* rows, int m, int64_t r0, Workspace& ws,
                               const ForwardOut& out, StageTime& st) const {
  const ModelDims& d = m_.dims();
  const int du = d.user(), da = d.ad(), ds = d.seq_dim, din = d.input(), D = d.cross(), T = d.tasks;
  const int B = d.masknet_blocks, h = d.masknet_hidden, o = d.masknet_output, Bh = B * h;
  auto capture = [&](float* dst, const float* src, int64_t ld, int width) {
    if (!dst) return;
    for (int i = 0; i < m; i++) std::memcpy(dst + (r0 + i) * width, src + i * ld, sizeof(float) * width);
  };
  double t0 = now_us();

  // Gather x = [u ; a_c ; ta_c]; target attention ta = softmax(q_c Hᵀ / √d_s) H.
  float* x = ws.x.data();
  for (int i = 0; i < m; i++) {
    std::memcpy(x + size_t(i) * din, us.u.data(), sizeof(float) * du);
    std::memcpy(x + size_t(i) * din + du, m_.ad_features.data() + size_t(rows[i]) * da, sizeof(float) * da);
  }
  if (us.n > 0) {
    for (int i = 0; i < m; i++) std::memcpy(ws.qc.data() + size_t(i) * ds, m_.ad_query.data() + size_t(rows[i]) * ds, sizeof(float) * ds);
    cpu::gemm(ws.qc.data(), m, ds, us.h_scaled, ws.att.data(), us.n, cpu::Epilogue{}, nullptr);
    for (int i = 0; i < m; i++) cpu::softmax_inplace(ws.att.data() + size_t(i) * us.n, us.n);
    cpu::gemm(ws.att.data(), m, us.n, us.h_t, x + du + da, din, cpu::Epilogue{}, nullptr);
  } else {
    for (int i = 0; i < m; i++) std::memset(x + size_t(i) * din + du + da, 0, sizeof(float) * ds);
  }
  capture(out.ad, x + du, din, da);
  capture(out.ta, x + du + da, din, ds);
  capture(out.input, x, din, din);
  double t1 = now_us();
  st.gather += t1 - t0;

  // MaskNet: x̂ = LN(x); hidden = ReLU(W_1[:, du:] [a;ta] + bias_eff) for all blocks at once;
  // x̂ ⊙ m_i in the epilogue of W_i2; o_i = ReLU(LN_i(proj_i(·))) into x0[:, i·o].
  layer_norm_rows(x, din, ws.xhat.data(), din, m, din, m_.input_norm_w, m_.input_norm_b, false);
  {
    cpu::Epilogue ep;
    ep.bias = us.bias1.data();
    ep.relu = true;
    cpu::gemm(x + du, m, din, m_.mask1_ad, ws.hid.data(), Bh, ep, nullptr);
  }
  float* x0 = ws.x0.data();
  for (int i = 0; i < B; i++) {
    const MaskBlock& blk = m_.blocks[i];
    cpu::Epilogue ep;
    ep.bias = blk.mask2.b.data();
    ep.mul = ws.xhat.data();
    ep.ld_mul = din;
    cpu::gemm(ws.hid.data() + size_t(i) * h, m, Bh, blk.mask2.w, ws.t.data(), din, ep, nullptr);
    cpu::gemm(ws.t.data(), m, din, blk.proj, x0 + size_t(i) * o, D, cpu::Epilogue{}, nullptr);
    layer_norm_rows(x0 + size_t(i) * o, D, x0 + size_t(i) * o, D, m, o, blk.norm_w, blk.norm_b, true);
  }
  capture(out.x0, x0, D, D);
  double t2 = now_us();
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
      cpu::gemm(cur, m, D, c.v, ws.lr.data(), d.dcn_rank, cpu::Epilogue{}, nullptr);
      cpu::gemm(ws.lr.data(), m, d.dcn_rank, c.u, next, D, ep, nullptr);
    } else {
      cpu::gemm(cur, m, D, c.w, next, D, ep, nullptr);
    }
    cur = next;
  }
  capture(out.cross, cur, D, D);
  double t3 = now_us();
  st.dcn += t3 - t2;

  // MLP (ReLU), heads, calibration, utility.
  int width = D;
  for (size_t k = 0; k < m_.mlp.size(); k++) {
    float* next = (k % 2 == 0) ? ws.ma.data() : ws.mb.data();
    linear(cur, m, width, m_.mlp[k], next, m_.mlp[k].w.n(), true);
    cur = next;
    width = m_.mlp[k].w.n();
  }
  capture(out.hidden, cur, width, width);
  linear(cur, m, width, m_.heads, ws.logits.data(), T, false);
  capture(out.logits, ws.logits.data(), T, T);
  const float* scale = m_.calib_scale.data() + size_t(us.surface) * T;
  const float* bias = m_.calib_bias.data() + size_t(us.surface) * T;
  for (int i = 0; i < m; i++) {
    float value = 0;
    for (int t = 0; t < T; t++) {
      const float p = sigmoid(scale[t] * ws.logits[size_t(i) * T + t] + bias[t]);
      if (out.probs) out.probs[(r0 + i) * T + t] = p;
      value += us.weights[t] * p;
    }
    if (out.value) out.value[r0 + i] = value;
    if (out.utility) out.utility[r0 + i] = m_.ad_bid[rows[i]] * value;
  }
  st.mlp += now_us() - t3;
}

void CpuBackend::forward(const UserState& us, const int32_t* rows, int64_t count, const ForwardOut& out, Timings& t) {
  if (count == 0) return;
  const double t0 = now_us();
  const int64_t threads = pool_ ? pool_->size() : 1;
  // Equal chunks, a multiple of the thread count, none over kChunk rows: 608 rows on 2 threads
  // run as 4 × 152, not 256 + 256 + 96 (one thread idle for a third of the time).
  const int64_t per_thread = (count + threads * kChunk - 1) / (threads * kChunk);
  const int64_t rows_per = std::max<int64_t>(kMinChunk, (count + threads * per_thread - 1) / (threads * per_thread));
  const int64_t chunks = (count + rows_per - 1) / rows_per;
  std::mutex mu;
  StageTime total;
  auto run = [&](int64_t c0, int64_t c1) {
    std::unique_ptr<Workspace> ws = acquire();
    StageTime st;
    try {
      for (int64_t c = c0; c < c1; c++) {
        const int64_t r0 = c * rows_per;
        forward_chunk(us, rows + r0, int(std::min<int64_t>(rows_per, count - r0)), r0, *ws, out, st);
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
  const double wall = now_us() - t0;
  const double busy = total.gather + total.masknet + total.dcn + total.mlp;
  const double f = busy > 0 ? wall / busy : 0;
  t.gather += total.gather * f;
  t.masknet += total.masknet * f;
  t.dcn += total.dcn * f;
  t.mlp += total.mlp * f;
}

std::vector<Candidate> CpuBackend::scan(const Request& req, const AdStateTable& state, const UserState& us, Counts& counts) {
  const int64_t N = m_.num_ads();
  const int Dr = m_.dims().retrieval_dim;
  const Eligibility el(m_, state, req);
  const int64_t chunks = (N + kScanChunk - 1) / kScanChunk;
  std::vector<std::vector<Candidate>> parts(size_t(std::max<int64_t>(chunks, 0)));
  std::vector<Counts> part_counts(parts.size());
  auto run = [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
      const int64_t r1 = std::min(N, (c + 1) * kScanChunk);
      for (int64_t r = c * kScanChunk; r < r1; r++) {
        const Drop drop = el.check(int32_t(r));
        Eligibility::count(drop, part_counts[c]);
        if (drop != Drop::kEligible) continue;
        const float s = cpu::dot(us.query.data(), m_.ad_retrieval.data() + size_t(r) * Dr, Dr);
        parts[c].push_back(make_candidate(s, m_.ad_id[r], m_.ad_advertiser[r], int32_t(r)));
      }
    }
  };
  if (pool_) pool_->parallel_for(chunks, run, 1); else run(0, chunks);
  counts.received += N;
  size_t total = 0;
  for (size_t c = 0; c < parts.size(); c++) {
    const Counts& p = part_counts[c];
    counts.excluded_ad += p.excluded_ad;
    counts.excluded_advertiser += p.excluded_advertiser;
    counts.inactive += p.inactive;
    counts.out_of_budget += p.out_of_budget;
    counts.targeting += p.targeting;
    counts.paced += p.paced;
    counts.eligible += p.eligible;
    total += parts[c].size();
  }
  std::vector<Candidate> all;
  all.reserve(total);
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

// Ranks `rows` (all eligible), selects K with the request's cap and mode, prices if asked.
Result CpuBackend::finish_ranked(const Request& req, const std::vector<int32_t>& rows, const UserState& us, Result r,
                                 bool want_prices) {
  const int T = m_.dims().tasks;
  const size_t n = rows.size();
  std::vector<float> probs(n * T), utility(n), value(n);
  ForwardOut out;
  out.probs = probs.data();
  out.utility = utility.data();
  out.value = value.data();
  forward(us, rows.data(), int64_t(n), out, r.timings);

  const double t0 = now_us();
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
  for (size_t i = 0; i < k; i++) {
    const int32_t idx = s.winners[i].index;
    r.ad_ids[i] = s.winners[i].id;
    r.advertisers[i] = s.winners[i].advertiser;
    r.rows[i] = rows[idx];
    r.scores[i] = utility[idx];
    std::memcpy(r.probs.data() + i * T, probs.data() + size_t(idx) * T, sizeof(float) * T);
  }
  if (want_prices)
    r.prices = gsp_prices(s, req.reserve, [&](int32_t idx) { return m_.ad_bid[rows[idx]]; }, [&](int32_t idx) { return value[idx]; });
  r.timings.select += now_us() - t0;
  return r;
}

Result CpuBackend::rank(const Request& req, const AdStateTable& state) {
  Result r;
  double t0 = now_us();
  const std::vector<int32_t> known = intake(m_, req.candidates, r.counts);
  const Eligibility el(m_, state, req);
  std::vector<int32_t> rows;
  rows.reserve(known.size());
  for (int32_t row : known) {
    const Drop drop = el.check(row);
    Eligibility::count(drop, r.counts);
    if (drop == Drop::kEligible) rows.push_back(row);
  }
  double t1 = now_us();
  r.timings.select += t1 - t0;
  if (rows.empty()) return r;
  const UserState us = compute_user(req, true);
  r.timings.user = now_us() - t1;
  return finish_ranked(req, rows, us, std::move(r), req.price());
}

CpuBackend::Scanned CpuBackend::scan_corpus(const Request& req, const AdStateTable& state, bool for_ranking, Result& r) {
  const double t0 = now_us();
  Scanned s{compute_user(req, for_ranking), {}};
  const double t1 = now_us();
  r.timings.user = t1 - t0;
  s.cands = scan(req, state, s.us, r.counts);
  r.timings.retrieve = now_us() - t1;
  return s;
}

Result CpuBackend::retrieve(const Request& req, const AdStateTable& state) {
  Result r;
  Scanned sc = scan_corpus(req, state, false, r);
  const double t2 = now_us();
  const Selection s = select_global(sc.cands, req.k, req.cap, false);
  r.counts.capped += s.capped;
  for (const Candidate& c : s.winners) {
    r.ad_ids.push_back(c.id);
    r.advertisers.push_back(c.advertiser);
    r.rows.push_back(c.index);
    r.scores.push_back(c.score);
  }
  r.timings.select = now_us() - t2;
  return r;
}

Result CpuBackend::retrieve_and_rank(const Request& req, const AdStateTable& state) {
  Result r;
  Scanned sc = scan_corpus(req, state, true, r);
  const double t1 = now_us();
  const Selection top = select_global(sc.cands, req.retrieve_count, 0, false);
  std::vector<int32_t> rows;
  rows.reserve(top.winners.size());
  for (const Candidate& c : top.winners) rows.push_back(c.index);
  r.retrieved = int64_t(rows.size());
  r.timings.retrieve += now_us() - t1;
  return finish_ranked(req, rows, sc.us, std::move(r), true);
}

Explain CpuBackend::explain(const Request& req) {
  const ModelDims& d = m_.dims();
  Explain e;
  Counts ignored;
  e.rows = intake(m_, req.candidates, ignored);
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
