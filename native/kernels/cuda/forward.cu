// Model forward on the device (docs/design.md §4). Layout: CPU references, kernels, launchers.
// fp32 for norms, softmax, attention and epilogues; bf16 operands with fp32 accumulation for the
// candidate GEMMs (gemm_bf16.cu).
#include "kernels/cuda/forward.cuh"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/cuda/gemm_bf16.cuh"

namespace adrank::cuda {

constexpr float kLnEps = 1e-5f;

// ---- CPU references -------------------------------------------------------------------------------

void heads_utility_reference(const float* h, int last, const float* heads_w, const float* heads_b, int T,
                             const float* scale, const float* bias, const float* w, float bid, float* probs,
                             float* value, float* utility) {
  double v = 0;
  for (int t = 0; t < T; ++t) {
    double logit = heads_b[t];
    for (int c = 0; c < last; ++c) logit += double(h[c]) * heads_w[t * last + c];
    const double p = 1.0 / (1.0 + std::exp(-(scale[t] * logit + bias[t])));
    probs[t] = float(p);
    v += w[t] * p;
  }
  *value = float(v);
  *utility = float(bid * v);
}

void layer_norm_relu_reference(const float* x, int n, const float* gamma, const float* beta, float* y) {
  double mean = 0, var = 0;
  for (int j = 0; j < n; ++j) mean += x[j];
  mean /= n;
  for (int j = 0; j < n; ++j) var += (x[j] - mean) * (x[j] - mean);
  var /= n;
  const double rstd = 1.0 / std::sqrt(var + kLnEps);
  for (int j = 0; j < n; ++j) y[j] = std::max(0.f, float((x[j] - mean) * rstd * gamma[j] + beta[j]));
}

// ---- kernels --------------------------------------------------------------------------------------

namespace {

__device__ __forceinline__ int seq_len(const RequestDesc* desc, int max_len) {
  return min(int(desc->seq_len), max_len);
}

// Token j = item[item_id mod buckets] + action[action] + position[j], j < n.
__global__ void seq_tokens_kernel(DeviceModel m, const RequestDesc* desc, const unsigned char* bundle, float* x) {
  pdl_begin();  // a programmatic dependent under ADRANK_CUDA_PDL (request side)
  const int j = blockIdx.x, n = seq_len(desc, m.seq_max_len);
  if (j >= n) return;
  const int64_t item = section<int64_t>(bundle, desc->off_seq_items)[j];
  const uint32_t action = min(section<uint32_t>(bundle, desc->off_seq_actions)[j], uint32_t(m.seq_actions - 1));
  const float* it = m.seq_item + bucket_of(item, m.seq_item_buckets) * m.d_s;
  const float* ac = m.seq_action + int64_t(action) * m.d_s;
  const float* po = m.seq_position + int64_t(j) * m.d_s;
  for (int c = threadIdx.x; c < m.d_s; c += blockDim.x) x[j * m.d_s + c] = it[c] + ac[c] + po[c];
}

// y[r] = LayerNorm(x[r]) (eps 1e-5, affine), one warp per row, rows < min(*rows_dev, cap).
__global__ void rows_layernorm_kernel(const float* x, float* y, int d, const float* g, const float* b,
                                      const uint32_t* rows_dev, int cap) {
  pdl_begin();  // a programmatic dependent under ADRANK_CUDA_PDL (request side)
  const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  const int rows = rows_dev ? min(int(*rows_dev), cap) : cap;
  if (r >= rows) return;
  const float* xr = x + int64_t(r) * d;
  float s = 0.f;
  for (int c = lane; c < d; c += 32) s += xr[c];
  const float mean = warp_sum(s) / d;
  float v = 0.f;
  for (int c = lane; c < d; c += 32) v += (xr[c] - mean) * (xr[c] - mean);
  const float rstd = rsqrtf(warp_sum(v) / d + kLnEps);
  for (int c = lane; c < d; c += 32) y[int64_t(r) * d + c] = (xr[c] - mean) * rstd * g[c] + b[c];
}

// y[r, o] (+)= act(W[o] · x[r] + b[o]) for rows < min(*rows_dev, cap). Small fp32 layers only
// (request side: sequence encoder, user tower); one thread per output. With L.wt the warp's 32
// outputs read 32 consecutive floats of Wᵀ per k (coalesced) instead of 32 rows of W; the sum is the
// same chain over k either way, so the result is bit for bit the same.
__global__ void rows_linear_kernel(const float* x, int ldx, DenseLinearF32 L, float* y, int ldy, bool relu, bool accumulate,
                                   const uint32_t* rows_dev, int cap) {
  pdl_begin();  // a programmatic dependent under ADRANK_CUDA_PDL (request side)
  const int r = blockIdx.y, o = blockIdx.x * blockDim.x + threadIdx.x;
  const int rows = rows_dev ? min(int(*rows_dev), cap) : cap;
  if (r >= rows || o >= L.out) return;
  const float* xr = x + int64_t(r) * ldx;
  float acc = L.b ? L.b[o] : 0.f;
  if (L.wt) {
    const float* wt = L.wt + o;
    for (int k = 0; k < L.in; ++k) acc = fmaf(wt[int64_t(k) * L.out], xr[k], acc);
  } else {
    const float* w = L.w + int64_t(o) * L.in;
    for (int k = 0; k < L.in; ++k) acc = fmaf(w[k], xr[k], acc);
  }
  if (relu) acc = fmaxf(acc, 0.f);
  float* out = y + int64_t(r) * ldy + o;
  *out = accumulate ? *out + acc : acc;
}

// One warp: the softmax numerators of scaled dot-product attention, sc[j] = exp(scale·(q·k_j) − max)
// for the n keys k_j = keys + j·stride (dim values each); returns Σ_j sc[j], reduced over the warp.
// Shared by the sequence encoder's self-attention and the candidates' target attention.
__device__ float warp_attention_weights(const float* q, const float* keys, int64_t stride, int dim, int n, float scale,
                                        float* sc) {
  const int lane = threadIdx.x & 31;
  float mx = -INFINITY;
  for (int j = lane; j < n; j += 32) {
    const float* k = keys + j * stride;
    float s = 0.f;
    for (int t = 0; t < dim; ++t) s = fmaf(q[t], k[t], s);
    s *= scale;
    sc[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = warp_max(mx);
  float sum = 0.f;
  for (int j = lane; j < n; j += 32) {
    const float e = __expf(sc[j] - mx);
    sc[j] = e;
    sum += e;
  }
  return warp_sum(sum);
}

// Multi-head self-attention core over the n tokens (no mask): one warp per (head, query).
__global__ void seq_attention_kernel(const float* qkv, float* out, int d, int heads, int max_len, const RequestDesc* desc) {
  extern __shared__ float sc[];  // [max_len]
  pdl_begin();  // a programmatic dependent under ADRANK_CUDA_PDL (request side)
  const int hd = blockIdx.x, i = blockIdx.y, lane = threadIdx.x, n = seq_len(desc, max_len);
  if (i >= n) return;
  const int dh = d / heads;
  const float scale = rsqrtf(float(dh));
  const float* q = qkv + int64_t(i) * 3 * d + hd * dh;
  const float sum = warp_attention_weights(q, qkv + d + hd * dh, int64_t(3) * d, dh, n, scale, sc);
  __syncwarp();
  const float inv = 1.f / sum;
  for (int t = lane; t < dh; t += 32) {
    float o = 0.f;
    for (int j = 0; j < n; ++j) o = fmaf(sc[j], qkv[int64_t(j) * 3 * d + 2 * d + hd * dh + t], o);
    out[int64_t(i) * d + hd * dh + t] = o * inv;
  }
}

// In place: v[0, n) ← v / max(‖v‖, 1e-12) over a block; v[n, n_pad) ← 0.
__device__ void block_l2n(float* v, int n, int n_pad, float* scratch) {
  float s = 0.f;
  for (int c = threadIdx.x; c < n; c += blockDim.x) s += v[c] * v[c];
  const float inv = 1.f / fmaxf(sqrtf(block_sum(s, scratch)), 1e-12f);
  for (int c = threadIdx.x; c < n_pad; c += blockDim.x) v[c] = c < n ? v[c] * inv : 0.f;
  __syncthreads();
}

// u = [z(user_dense) ; user sparse bags (mean, L2n) ; L2n(user_embedding) ; seq ; surface]. One block.
__global__ void user_vector_kernel(DeviceModel m, const RequestDesc* desc, const unsigned char* bundle, const float* H,
                                   float* u) {
  __shared__ float scratch[32];
  __shared__ uint32_t start[kMaxSparseFields + 1];
  pdl_begin();  // a programmatic dependent under ADRANK_CUDA_PDL (request side)
  const int tid = threadIdx.x;
  const float* ud = section<float>(bundle, desc->off_user_dense);
  for (int i = tid; i < m.n_ud; i += blockDim.x)
    u[i] = fminf(fmaxf((ud[i] - m.user_dense_mean[i]) / m.user_dense_std[i], -m.clip), m.clip);
  int off = m.n_ud;
  const uint32_t* lens = section<uint32_t>(bundle, desc->off_sparse_len);
  if (tid == 0) {
    start[0] = 0;
    for (int f = 0; f < m.n_user_sparse; ++f) start[f + 1] = start[f] + lens[f];
  }
  __syncthreads();
  const int64_t* ids = section<int64_t>(bundle, desc->off_sparse_ids);
  for (int f = 0; f < m.n_user_sparse; ++f) {
    const int dim = m.user_sparse_dim[f], card = m.user_sparse_card[f];
    const uint32_t b = start[f], e = start[f + 1];
    for (int c = tid; c < dim; c += blockDim.x) {
      float s = 0.f;
      for (uint32_t t = b; t < e; ++t) s += m.user_sparse_table[f][bucket_of(ids[t], card) * dim + c];
      u[off + c] = e > b ? s / float(e - b) : 0.f;
    }
    __syncthreads();
    block_l2n(u + off, dim, dim, scratch);
    off += dim;
  }
  const float* ue = section<float>(bundle, desc->off_user_embedding);
  for (int c = tid; c < m.d_ue; c += blockDim.x) u[off + c] = ue[c];
  __syncthreads();
  block_l2n(u + off, m.d_ue, m.d_ue, scratch);
  off += m.d_ue;
  const int n = seq_len(desc, m.seq_max_len);
  for (int c = tid; c < m.d_s; c += blockDim.x) {
    float s = 0.f;
    for (int j = 0; j < n; ++j) s += H[j * m.d_s + c];
    u[off + c] = n > 0 ? s / n : 0.f;
  }
  __syncthreads();
  block_l2n(u + off, m.d_s, m.d_s, scratch);
  off += m.d_s;
  const uint32_t s = min(desc->surface, uint32_t(m.surfaces - 1));
  for (int c = tid; c < m.d_surf; c += blockDim.x) u[off + c] = m.surface_table[s * m.d_surf + c];
}

// out[j] = b[j] + W_user[j] · u: the user half of MaskNet's first layer, once per request.
__global__ void user_bias_kernel(const float* w, const float* b, const float* u, int du, int n, float* out) {
  pdl_begin();  // a programmatic dependent under ADRANK_CUDA_PDL (request side)
  const int j = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (j >= n) return;
  float s = 0.f;
  for (int k = lane; k < du; k += 32) s = fmaf(w[int64_t(j) * du + k], u[k], s);
  s = warp_sum(s);
  if (lane == 0) out[j] = s + b[j];
}

__global__ void l2n_kernel(float* v, int n, int n_pad) {
  __shared__ float scratch[32];
  pdl_begin();  // a programmatic dependent under ADRANK_CUDA_PDL (request side)
  block_l2n(v, n, n_pad, scratch);
}

// Per candidate (one warp each): target attention ta = Σ_j softmax_j(q_c·H_j/√d_s) H_j with the
// static query q_c = W_ta L2n(ads.embedding[c]) + b_ta (precomputed at load, ad_query), written as
// the bf16 GEMM operand; then x = [u ; a_c ; ta] and x̂ = input_norm(x) in fp32 (0 in padding).
__global__ void target_attention_xhat_kernel(DeviceModel m, const RequestDesc* desc, const float* H, const float* u,
                                             const int* rows, const int* m_dev, bf16* ta, int ta_w, float* xhat) {
  extern __shared__ float smem[];
  const int d_s = m.d_s, L = m.seq_max_len;
  float* Hs = smem;         // [L, d_s]
  float* us = Hs + L * d_s; // [du]
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  float* t = us + m.du + warp * (d_s + L);  // per warp: ta [d_s], scores [L]
  float* sc = t + d_s;
  const int n = seq_len(desc, L);
  for (int i = threadIdx.x; i < n * d_s; i += blockDim.x) Hs[i] = H[i];
  for (int i = threadIdx.x; i < m.du; i += blockDim.x) us[i] = u[i];
  __syncthreads();
  const int mrows = *m_dev;
  const float inv_sqrt = rsqrtf(float(d_s));
  for (int i = blockIdx.x * warps + warp; i < mrows; i += gridDim.x * warps) {
    const int row = rows[i];
    bf16* ta_row = ta + int64_t(i) * ta_w;
    if (n > 0) {
      const float* q = m.ad_query + int64_t(row) * d_s;
      const float isum = 1.f / warp_attention_weights(q, Hs, d_s, d_s, n, inv_sqrt, sc);
      __syncwarp();
      for (int c = lane; c < d_s; c += 32) {
        float a = 0.f;
        for (int j = 0; j < n; ++j) a = fmaf(sc[j], Hs[j * d_s + c], a);
        t[c] = a * isum;
      }
    } else {
      for (int c = lane; c < d_s; c += 32) t[c] = 0.f;
    }
    __syncwarp();
    for (int c = lane; c < ta_w; c += 32) ta_row[c] = __float2bfloat16(c < d_s ? t[c] : 0.f);
    // x = [u ; a_c ; ta], two-pass LayerNorm statistics. a_c is read from the bf16 gather table.
    const bf16* a = m.ad_features + int64_t(row) * m.da_pad;
    auto xval = [&](int c) -> float {
      if (c < m.du) return us[c];
      if (c < m.du + m.da) return __bfloat162float(a[c - m.du]);
      return t[c - m.du - m.da];
    };
    float s = 0.f;
    for (int c = lane; c < m.d; c += 32) s += xval(c);
    const float mean = warp_sum(s) / m.d;
    float v = 0.f;
    for (int c = lane; c < m.d; c += 32) {
      const float dx = xval(c) - mean;
      v += dx * dx;
    }
    const float rstd = rsqrtf(warp_sum(v) / m.d + kLnEps);
    float* xr = xhat + int64_t(i) * m.d_pad;
    for (int c = lane; c < m.d_pad; c += 32)
      xr[c] = c < m.d ? (xval(c) - mean) * rstd * m.input_norm_w[c] + m.input_norm_b[c] : 0.f;
    __syncwarp();
  }
}

// One warp per (row, group): y[r, g·n + j] = ReLU(LayerNorm(x[r, g·group_stride + j])), fp32 and bf16.
__global__ void layer_norm_relu_kernel(const float* x, int64_t ldx, int group_stride, int n, int groups, const float* gamma,
                                       const float* beta, float* y32, bf16* y16, int64_t ldy, int y_cols_pad,
                                       const int* m_dev, int m_cap) {
  const int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  const int rows = m_dev ? min(*m_dev, m_cap) : m_cap;
  const int r = w / groups, g = w % groups;
  if (r >= rows) return;
  const float* xr = x + int64_t(r) * ldx + int64_t(g) * group_stride;
  float s = 0.f;
  for (int j = lane; j < n; j += 32) s += xr[j];
  const float mean = warp_sum(s) / n;
  float v = 0.f;
  for (int j = lane; j < n; j += 32) v += (xr[j] - mean) * (xr[j] - mean);
  const float rstd = rsqrtf(warp_sum(v) / n + kLnEps);
  float* o32 = y32 + int64_t(r) * ldy;
  bf16* o16 = y16 + int64_t(r) * ldy;
  for (int j = lane; j < n; j += 32) {
    const int c = g * n + j;
    const float val = fmaxf((xr[j] - mean) * rstd * gamma[c] + beta[c], 0.f);
    o32[c] = val;
    o16[c] = __float2bfloat16(val);
  }
  if (g == groups - 1)
    for (int c = groups * n + lane; c < y_cols_pad; c += 32) {
      o32[c] = 0.f;
      o16[c] = __float2bfloat16(0.f);
    }
}

// One warp per row: logits = heads·h + b; p = sigmoid(scale·logit + bias); value = Σ w p;
// utility = bid · value. w = the request's task weights (flag) or utility.task_weights[surface].
__global__ void heads_utility_kernel(DeviceModel m, const RequestDesc* desc, const unsigned char* bundle, const float* h,
                                     int64_t ldh, int last, const int* rows, const int* m_dev, float* logits, float* probs,
                                     float* value, float* utility) {
  const int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (i >= *m_dev) return;
  const int T = m.tasks;
  const uint32_t s = min(desc->surface, uint32_t(m.surfaces - 1));
  const float* w = (desc->flags & 1u) ? section<float>(bundle, desc->off_task_weights) : m.task_weights + s * T;
  const float* hr = h + int64_t(i) * ldh;
  float val = 0.f;
  for (int t = 0; t < T; ++t) {
    float a = 0.f;
    for (int c = lane; c < last; c += 32) a = fmaf(hr[c], m.heads_w[t * last + c], a);
    const float logit = warp_sum(a) + m.heads_b[t];
    const float p = 1.f / (1.f + __expf(-(m.calib_scale[s * T + t] * logit + m.calib_bias[s * T + t])));
    val = fmaf(w[t], p, val);
    if (lane == 0) {
      logits[int64_t(i) * T + t] = logit;
      probs[int64_t(i) * T + t] = p;
    }
  }
  if (lane == 0) {
    value[i] = val;
    utility[i] = m.ad_bid[rows[i]] * val;
  }
}

void linear_rows(const float* x, int ldx, const DenseLinearF32& L, float* y, int ldy, bool relu, bool accumulate,
                 const uint32_t* rows_dev, int cap, cudaStream_t st, bool pdl) {
  launch_kernel(rows_linear_kernel, dim3(ceil_div(L.out, 128), cap), dim3(128), 0, st, pdl, "rows_linear_kernel", x, ldx, L, y, ldy,
                relu, accumulate, rows_dev, cap);
}

void layernorm_rows(const float* x, float* y, int d, const float* g, const float* b, const uint32_t* rows_dev, int cap,
                    cudaStream_t st, bool pdl) {
  launch_kernel(rows_layernorm_kernel, dim3(ceil_div(cap, 4)), dim3(128), 0, st, pdl, "rows_layernorm_kernel", x, y, d, g, b,
                rows_dev, cap);
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------

namespace {

ForwardWorkspace carve(const DeviceModel& m, int m_cap, int chunk, Carver& c) {
  ForwardWorkspace ws;
  ws.m_cap = m_cap;
  ws.chunk = chunk;
  const size_t L = std::max(m.seq_max_len, 1), ds = std::max(m.d_s, 1);
  ws.seq_x = c.take<float>(L * ds);
  ws.seq_h = c.take<float>(L * ds);
  ws.seq_qkv = c.take<float>(L * 3 * ds);
  ws.seq_attn = c.take<float>(L * ds);
  ws.seq_ffn = c.take<float>(L * std::max(m.seq_ffn, 1));
  ws.seq_H = c.take<float>(L * ds);
  ws.u = c.take<float>(m.du);
  ws.mask1_bias = c.take<float>(size_t(m.mask_blocks) * m.h_pad);
  int tw = m.du;
  for (int l = 0; l < m.tower_layers; ++l) tw = std::max(tw, m.tower[l].out);
  ws.tower_a = c.take<float>(tw);
  ws.tower_b = c.take<float>(tw);
  ws.query = c.take<float>(std::max(m.d_r_pad, tw));
  const size_t M = chunk;
  ws.ta = c.take<bf16>(M * (m.k1 - m.da_pad));
  ws.xhat = c.take<float>(M * m.d_pad);
  ws.hidden = c.take<bf16>(M * m.mask_blocks * m.h_pad);
  ws.masked = c.take<bf16>(size_t(m.mask_blocks) * M * m.d_pad);
  ws.proj = c.take<float>(M * m.mask_blocks * m.o_pad);
  ws.x0_f32 = c.take<float>(M * m.D_pad);
  ws.x0_bf16 = c.take<bf16>(M * m.D_pad);
  ws.xa_f32 = c.take<float>(M * m.D_pad);
  ws.xb_f32 = c.take<float>(M * m.D_pad);
  ws.xa_bf16 = c.take<bf16>(M * m.D_pad);
  ws.xb_bf16 = c.take<bf16>(M * m.D_pad);
  ws.lowrank = c.take<bf16>(M * std::max(m.dcn_rank_pad, 1));
  int wmax = 32;
  for (int l = 0; l < m.mlp_layers; ++l) wmax = std::max(wmax, m.mlp_out_pad[l]);
  ws.mlp_a = c.take<bf16>(M * wmax);
  ws.mlp_b = c.take<bf16>(M * wmax);
  ws.last_f32 = c.take<float>(M * wmax);
  const size_t R = m_cap;
  ws.logits = c.take<float>(R * m.tasks);
  ws.probs = c.take<float>(R * m.tasks);
  ws.value = c.take<float>(R);
  ws.utility = c.take<float>(R);
  return ws;
}
}  // namespace

size_t forward_workspace_bytes(const DeviceModel& m, int m_cap, int chunk) {
  Carver c{nullptr};
  carve(m, m_cap, chunk, c);
  return c.off;
}

ForwardWorkspace forward_workspace_carve(const DeviceModel& m, int m_cap, int chunk, void* base) {
  Carver c{static_cast<char*>(base)};
  return carve(m, m_cap, chunk, c);
}

void layer_norm_relu(const float* x, int64_t ldx, int group_stride, int n, int groups, const float* gamma,
                     const float* beta, float* y_f32, bf16* y_bf16, int64_t ldy, int y_cols_pad, const int* m_dev,
                     int m_cap, cudaStream_t st) {
  const int64_t warps = int64_t(m_cap) * groups;
  layer_norm_relu_kernel<<<grid_for(warps, 8, 1 << 30), 256, 0, st>>>(x, ldx, group_stride, n, groups, gamma, beta, y_f32,
                                                                    y_bf16, ldy, y_cols_pad, m_dev, m_cap);
  CUDA_CHECK_LAUNCH("layer_norm_relu_kernel");
}

void enqueue_request_side(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle,
                          ForwardWorkspace& ws, bool need_query, bool need_rank, cudaStream_t st) {
  NvtxRange range(stage::kUser);
  const uint32_t* n_dev = &desc->seq_len;  // clamped to max_len inside the kernels via `cap`
  const int L = m.seq_max_len, ds = m.d_s;
  // ADRANK_CUDA_PDL: every kernel of the request side after its first is a programmatic dependent
  // of the one before it (the first follows the intake, or a copy).
  const bool pdl_on = pdl_enabled();
  bool pdl = false;
  const auto next = [&] {
    const bool p = pdl;
    pdl = pdl_on;
    return p;
  };
  if (L > 0 && ds > 0) {
    launch_kernel(seq_tokens_kernel, dim3(L), dim3(128), 0, st, next(), "seq_tokens_kernel", m, desc, bundle, ws.seq_x);
    for (int l = 0; l < m.seq_layers; ++l) {
      const SeqLayer& sl = m.seq[l];
      layernorm_rows(ws.seq_x, ws.seq_h, ds, sl.norm1_w, sl.norm1_b, n_dev, L, st, next());
      linear_rows(ws.seq_h, ds, sl.in_proj, ws.seq_qkv, 3 * ds, false, false, n_dev, L, st, next());
      launch_kernel(seq_attention_kernel, dim3(m.seq_heads, L), dim3(32), L * sizeof(float), st, next(), "seq_attention_kernel",
                    ws.seq_qkv, ws.seq_attn, ds, m.seq_heads, L, desc);
      linear_rows(ws.seq_attn, ds, sl.out_proj, ws.seq_x, ds, false, true, n_dev, L, st, next());
      layernorm_rows(ws.seq_x, ws.seq_h, ds, sl.norm2_w, sl.norm2_b, n_dev, L, st, next());
      linear_rows(ws.seq_h, ds, sl.linear1, ws.seq_ffn, m.seq_ffn, true, false, n_dev, L, st, next());
      linear_rows(ws.seq_ffn, m.seq_ffn, sl.linear2, ws.seq_x, ds, false, true, n_dev, L, st, next());
    }
    layernorm_rows(ws.seq_x, ws.seq_H, ds, m.seq_norm_w, m.seq_norm_b, n_dev, L, st, next());
  }
  launch_kernel(user_vector_kernel, dim3(1), dim3(256), 0, st, next(), "user_vector_kernel", m, desc, bundle,
                static_cast<const float*>(ws.seq_H), ws.u);
  if (need_rank) {
    const int n = m.mask_blocks * m.h_pad;
    launch_kernel(user_bias_kernel, dim3(ceil_div(n, 8)), dim3(256), 0, st, next(), "user_bias_kernel",
                  static_cast<const float*>(m.mask1_user_w), static_cast<const float*>(m.mask1_b), static_cast<const float*>(ws.u),
                  m.du, n, ws.mask1_bias);
  }
  if (need_query) {
    const float* in = ws.u;
    int in_dim = m.du;
    for (int l = 0; l < m.tower_layers; ++l) {
      const bool last = l == m.tower_layers - 1;
      float* out = last ? ws.query : (l % 2 ? ws.tower_b : ws.tower_a);
      linear_rows(in, in_dim, m.tower[l], out, m.tower[l].out, !last, false, nullptr, 1, st, next());
      in = out;
      in_dim = m.tower[l].out;
    }
    if (m.tower_layers == 0) {
      CUDA_CHECK(cudaMemcpyAsync(ws.query, ws.u, sizeof(float) * m.du, cudaMemcpyDeviceToDevice, st));
      pdl = false;  // the next kernel follows a copy, not a kernel
    }
    launch_kernel(l2n_kernel, dim3(1), dim3(256), 0, st, next(), "l2n_kernel", ws.query, m.d_r, m.d_r_pad);
  }
}

void enqueue_candidates(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle, const int* rows,
                        const int* m_dev, int rows_cap, int out_offset, ForwardWorkspace& ws, cudaStream_t st,
                        const cudaEvent_t* marks) {
  const int M = rows_cap, C = ws.chunk, B = m.mask_blocks;
  if (rows_cap > ws.chunk) throw std::invalid_argument("enqueue_candidates: rows_cap > workspace chunk");
  const int ta_w = m.k1 - m.da_pad;
  auto mark = [&](int i) {
    if (marks) record_mark(marks[i], st);
  };
  {
    NvtxRange range(stage::kGather);
    const int warps = 8;
    const size_t smem = sizeof(float) * (size_t(m.seq_max_len) * m.d_s + m.du + size_t(warps) * (m.d_s + m.seq_max_len));
    opt_in_smem(reinterpret_cast<const void*>(target_attention_xhat_kernel), int(smem), "target_attention_xhat_kernel");
    target_attention_xhat_kernel<<<std::max(1, std::min(ceil_div(M, warps), 4 * device_sm_count())), warps * 32, smem, st>>>(
        m, desc, ws.seq_H, ws.u, rows, m_dev, ws.ta, ta_w, ws.xhat);
    CUDA_CHECK_LAUNCH("target_attention_xhat_kernel");
    mark(0);
  }
  {
    NvtxRange range(stage::kMaskNet);
    // mask.0 for all blocks at once; A row i = [ad_features[rows[i]] ; ta[i]] (gather fused).
    GemmShape s1{M, B * m.h_pad, m.k1, m_dev, 1, m.mask1_w, m.k1, 0};
    ASource a1{m.ad_features, m.da_pad, rows, m.da_pad, ws.ta, ta_w, 0, 0};
    BiasActEpilogue<true> e1;
    e1.bias = ws.mask1_bias;
    e1.out_bf16 = ws.hidden;
    e1.ld_bf16 = int64_t(B) * m.h_pad;
    gemm_bf16(s1, a1, e1, st);
    // mask.2 per block (z), times x̂.
    GemmShape s2{M, m.d_pad, m.h_pad, m_dev, B, m.mask2_w, m.h_pad, int64_t(m.d_pad) * m.h_pad};
    ASource a2;
    a2.seg0 = ws.hidden;
    a2.ld0 = int64_t(B) * m.h_pad;
    a2.z_stride0 = m.h_pad;
    MaskProductEpilogue e2{m.mask2_b, m.d_pad, ws.xhat, m.d_pad, ws.masked, m.d_pad, int64_t(C) * m.d_pad};
    gemm_bf16(s2, a2, e2, st);
    // proj per block (z) → fp32, then LayerNorm + ReLU (second pass) into x0.
    GemmShape s3{M, m.o_pad, m.d_pad, m_dev, B, m.proj_w, m.d_pad, int64_t(m.o_pad) * m.d_pad};
    ASource a3;
    a3.seg0 = ws.masked;
    a3.ld0 = m.d_pad;
    a3.z_stride0 = int64_t(C) * m.d_pad;
    BiasActEpilogue<false> e3;
    e3.out_f32 = ws.proj;
    e3.ld_f32 = int64_t(B) * m.o_pad;
    e3.out_f32_z = m.o_pad;
    gemm_bf16(s3, a3, e3, st);
    layer_norm_relu(ws.proj, int64_t(B) * m.o_pad, m.o_pad, m.o, B, m.block_norm_w, m.block_norm_b, ws.x0_f32, ws.x0_bf16,
                    m.D_pad, m.D_pad, m_dev, M, st);
    mark(1);
  }
  const float* xl_f32 = ws.x0_f32;
  const bf16* xl_bf16 = ws.x0_bf16;
  {
    NvtxRange range(stage::kDcn);
    for (int l = 0; l < m.dcn_layers; ++l) {
      float* o32 = l % 2 ? ws.xb_f32 : ws.xa_f32;
      bf16* o16 = l % 2 ? ws.xb_bf16 : ws.xa_bf16;
      CrossEpilogue ec{m.dcn_b[l], ws.x0_f32, m.D_pad, xl_f32, m.D_pad, o32, m.D_pad, o16, m.D_pad};
      ASource a;
      a.seg0 = xl_bf16;
      a.ld0 = m.D_pad;
      if (m.dcn_rank == 0) {
        gemm_bf16(GemmShape{M, m.D_pad, m.D_pad, m_dev, 1, m.dcn_w[l], m.D_pad, 0}, a, ec, st);
      } else {
        BiasActEpilogue<false> ev;
        ev.out_bf16 = ws.lowrank;
        ev.ld_bf16 = m.dcn_rank_pad;
        gemm_bf16(GemmShape{M, m.dcn_rank_pad, m.D_pad, m_dev, 1, m.dcn_v[l], m.D_pad, 0}, a, ev, st);
        ASource au;
        au.seg0 = ws.lowrank;
        au.ld0 = m.dcn_rank_pad;
        gemm_bf16(GemmShape{M, m.D_pad, m.dcn_rank_pad, m_dev, 1, m.dcn_u[l], m.dcn_rank_pad, 0}, au, ec, st);
      }
      xl_f32 = o32;
      xl_bf16 = o16;
    }
    mark(2);
  }
  const float* h = xl_f32;
  int64_t ldh = m.D_pad;
  int last = m.D;
  {
    NvtxRange range(stage::kMlp);
    const bf16* in = xl_bf16;
    int in_pad = m.D_pad;
    for (int l = 0; l < m.mlp_layers; ++l) {
      bf16* out = l % 2 ? ws.mlp_b : ws.mlp_a;
      BiasActEpilogue<true> e;
      e.bias = m.mlp_b[l];
      e.out_bf16 = out;
      e.ld_bf16 = m.mlp_out_pad[l];
      if (l == m.mlp_layers - 1) {
        e.out_f32 = ws.last_f32;
        e.ld_f32 = m.mlp_out_pad[l];
      }
      ASource a;
      a.seg0 = in;
      a.ld0 = in_pad;
      gemm_bf16(GemmShape{M, m.mlp_out_pad[l], in_pad, m_dev, 1, m.mlp_w[l], in_pad, 0}, a, e, st);
      in = out;
      in_pad = m.mlp_out_pad[l];
    }
    if (m.mlp_layers > 0) {
      h = ws.last_f32;
      ldh = m.mlp_out_pad[m.mlp_layers - 1];
      last = m.mlp_out[m.mlp_layers - 1];
    }
    const int64_t o = out_offset;
    heads_utility_kernel<<<ceil_div(M, 8), 256, 0, st>>>(m, desc, bundle, h, ldh, last, rows, m_dev, ws.logits + o * m.tasks,
                                                         ws.probs + o * m.tasks, ws.value + o, ws.utility + o);
    CUDA_CHECK_LAUNCH("heads_utility_kernel");
    mark(3);
  }
}

}  // namespace adrank::cuda
