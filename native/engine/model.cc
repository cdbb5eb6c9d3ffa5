#include "engine/model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vector_ops.h"

namespace adrank {

namespace {

int sum_dims(const std::vector<SparseFieldDims>& fs) {
  int s = 0;
  for (const auto& f : fs) s += f.dim;
  return s;
}

[[noreturn]] void bad_dim(const std::string& field, const std::string& what, double got) {
  std::ostringstream os;
  os << "expected " << what << " for dims." << field << ", got " << got;
  throw std::runtime_error(os.str());
}

void need_positive(const char* field, double v) {
  if (!(v >= 1)) bad_dim(field, "a positive integer", v);
}
void need_nonneg(const char* field, double v) {
  if (!(v >= 0)) bad_dim(field, "a non-negative integer", v);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); i++) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

// Looks a tensor up and checks dtype and element count against the shape the config implies.
class Tensors {
 public:
  explicit Tensors(const std::map<std::string, TensorRef>& m) : m_(m) {}

  const void* get(const std::string& name, std::vector<int64_t> shape, std::initializer_list<DType> dtypes,
                  DType* got_dtype = nullptr) const {
    auto it = m_.find(name);
    if (it == m_.end()) throw std::runtime_error("missing tensor " + name + " (expected shape " + shape_str(shape) + ")");
    const TensorRef& t = it->second;
    bool ok = false;
    for (DType d : dtypes) ok = ok || d == t.dtype;
    if (!ok) {
      std::string want;
      for (DType d : dtypes) want += (want.empty() ? "" : " or ") + std::string(dtype_name(d));
      throw std::runtime_error("tensor " + name + ": expected dtype " + want + ", got " + dtype_name(t.dtype));
    }
    int64_t n = 1;
    for (int64_t s : shape)
      if (__builtin_mul_overflow(n, s, &n))
        throw std::runtime_error("tensor " + name + ": expected shape " + shape_str(shape) + " overflows 64 bits");
    if (int64_t(t.count) != n)
      throw std::runtime_error("tensor " + name + ": expected shape " + shape_str(shape) + " (" + std::to_string(n) +
                               " values), got " + std::to_string(t.count) + " values");
    if (n > 0 && t.data == nullptr) throw std::runtime_error("tensor " + name + ": no data");
    if (got_dtype) *got_dtype = t.dtype;
    return t.data;
  }

  // An F32 tensor, copied, with every value checked finite.
  std::vector<float> f32(const std::string& name, std::vector<int64_t> shape) const {
    const float* p = static_cast<const float*>(get(name, shape, {DType::F32}));
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    for (int64_t i = 0; i < n; i++)
      if (!std::isfinite(p[i]))
        throw std::runtime_error("tensor " + name + ": expected finite values, got " + std::to_string(p[i]) + " at index " + std::to_string(i));
    return std::vector<float>(p, p + n);
  }

  Linear linear(const std::string& prefix, int out, int in, bool bias = true) const {
    Linear l;
    const std::vector<float> w = f32(prefix + ".weight", {out, in});
    l.w = cpu::PackedMatrix(w.data(), out, in);
    if (bias) l.b = f32(prefix + ".bias", {out});
    return l;
  }

 private:
  const std::map<std::string, TensorRef>& m_;
};

float bf16_to_f32(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// A table read in place when it lies in the mapped bundle file, else copied.
template <class T>
void keep_table(Table<T>& out, const T* p, size_t n, const MappedFile* mapping) {
  if (mapping && n > 0 && mapping->contains(p, n * sizeof(T)))
    out.borrow(p, n);
  else
    out.own(std::vector<T>(p, p + n));
}

void check_finite(const std::string& name, const float* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!std::isfinite(p[i]))
      throw std::runtime_error("tensor " + name + ": expected finite values, got " + std::to_string(p[i]) + " at index " + std::to_string(i));
}

// The ad tables every path needs, the fallback's included: ids (and the id → row map),
// advertisers, bids, targeting masks.
void load_ad_tables(Model& m, const ModelDims& d, const Tensors& t, const ModelInit& init, cpu::ThreadPool* pool) {
  const int64_t N = d.num_ads;
  const MappedFile* map = init.mapping.get();
  const int64_t* ids = static_cast<const int64_t*>(t.get("ads.id", {N}, {DType::I64}));
  keep_table(m.ad_id, ids, size_t(N), map);
  const int64_t* adv = static_cast<const int64_t*>(t.get("ads.advertiser", {N}, {DType::I64}));
  keep_table(m.ad_advertiser, adv, size_t(N), map);
  if (init.id_map && init.id_map->built()) {
    m.id_to_row = *init.id_map;  // shared, built from these ids by the loader
  } else {
    int64_t dup = 0;
    if (!m.id_to_row.build(m.ad_id.data(), N, &dup, pool))
      throw std::runtime_error("tensor ads.id: expected unique ad ids, got " + std::to_string(dup) + " more than once");
  }
  const float* bid = static_cast<const float*>(t.get("ads.bid", {N}, {DType::F32}));
  check_finite("ads.bid", bid, size_t(N));
  keep_table(m.ad_bid, bid, size_t(N), map);
  const uint64_t* tg = static_cast<const uint64_t*>(t.get("ads.targeting", {N, d.targeting_dims}, {DType::U64}));
  keep_table(m.ad_targeting, tg, size_t(N) * d.targeting_dims, map);
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::I64: return "I64";
    case DType::U64: return "U64";
    case DType::BF16: return "BF16";
  }
  return "?";
}

int ModelDims::user() const { return user_dense + sum_dims(user_sparse) + user_embedding_dim + seq_dim + surface_dim; }
int ModelDims::ad() const { return ad_dense + sum_dims(ad_sparse) + ad_embedding_dim; }
int ModelDims::input() const { return user() + ad() + seq_dim; }
int ModelDims::cross() const { return masknet_blocks * masknet_output; }
int ModelDims::last() const { return mlp.empty() ? cross() : mlp.back(); }

void ModelDims::validate() const {
  need_nonneg("userDense", user_dense);
  need_nonneg("adDense", ad_dense);
  if (!(dense_clip > 0)) bad_dim("denseClip", "a positive number", dense_clip);
  for (size_t i = 0; i < user_sparse.size(); i++) {
    need_positive("userSparseCardinality", double(user_sparse[i].cardinality));
    need_positive("userSparseDim", user_sparse[i].dim);
  }
  for (size_t i = 0; i < ad_sparse.size(); i++) {
    need_positive("adSparseCardinality", double(ad_sparse[i].cardinality));
    need_positive("adSparseDim", ad_sparse[i].dim);
  }
  need_nonneg("userEmbeddingDim", user_embedding_dim);
  need_nonneg("adEmbeddingDim", ad_embedding_dim);
  need_nonneg("surfaceDim", surface_dim);
  need_positive("surfaces", surfaces);
  need_positive("tasks", tasks);
  need_nonneg("targetingDims", targeting_dims);
  need_positive("seqMaxLen", seq_max_len);
  need_positive("seqItemBuckets", double(seq_item_buckets));
  need_positive("seqActions", seq_actions);
  need_positive("seqDim", seq_dim);
  need_positive("seqHeads", seq_heads);
  if (seq_dim % seq_heads != 0) bad_dim("seqHeads", "a divisor of seqDim " + std::to_string(seq_dim), seq_heads);
  need_positive("seqFfnDim", seq_ffn_dim);
  need_nonneg("seqLayers", seq_layers);
  need_positive("masknetBlocks", masknet_blocks);
  need_positive("masknetHidden", masknet_hidden);
  need_positive("masknetOutput", masknet_output);
  need_nonneg("dcnLayers", dcn_layers);
  need_nonneg("dcnRank", dcn_rank);
  for (int w : mlp) need_positive("mlp", w);
  need_positive("retrievalDim", retrieval_dim);
  for (int w : retrieval_hidden) need_positive("retrievalHidden", w);
  need_nonneg("numAds", double(num_ads));
  if (num_ads >= (int64_t(1) << 31) - 1) bad_dim("numAds", "fewer than 2^31 - 1 ads", double(num_ads));
  if (int64_t(masknet_blocks) * masknet_hidden >= (int64_t(1) << 31)) bad_dim("masknetHidden", "blocks * hidden < 2^31", masknet_hidden);
}

bool IdMap::build(const int64_t* ids, int64_t n, int64_t* dup, cpu::ThreadPool* pool, int32_t* dup_rows) {
  auto t = std::make_shared<Storage>();
  size_t cap = 16;
  while (cap < size_t(n) + size_t(n) / 2) cap <<= 1;
  t->mask = cap - 1;
  t->rows.assign(cap, -1);
  // Insertion claims a slot with a compare-and-swap on its row; the key is read back through the
  // row (ids[row]), so there is nothing else to publish and threads insert independently.
  std::atomic<bool> failed{false};
  std::mutex dup_mu;
  int32_t first = -1, second = -1;
  int32_t* rows = t->rows.data();
  const uint64_t mask = t->mask;
  auto insert = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1 && !failed.load(std::memory_order_relaxed); r++) {
      const int64_t id = ids[r];
      for (uint64_t s = splitmix64(uint64_t(id)) & mask;; s = (s + 1) & mask) {
        int32_t cur = __atomic_load_n(&rows[s], __ATOMIC_ACQUIRE);
        if (cur < 0) {
          if (__atomic_compare_exchange_n(&rows[s], &cur, int32_t(r), false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) break;
        }
        if (ids[cur] == id) {
          std::lock_guard<std::mutex> lock(dup_mu);
          const int32_t a = std::min(cur, int32_t(r)), b = std::max(cur, int32_t(r));
          if (first < 0 || b < second) first = a, second = b;
          failed.store(true);
          break;
        }
      }
    }
  };
  if (pool && n > 4096) pool->parallel_for(n, insert, 1 << 15); else insert(0, n);
  if (failed.load()) {
    *dup = ids[second];
    if (dup_rows) dup_rows[0] = first, dup_rows[1] = second;
    return false;
  }
  t->keys.resize(cap);
  int64_t* keys = t->keys.data();
  auto fill = [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; s++) keys[s] = rows[s] >= 0 ? ids[rows[s]] : 0;
  };
  if (pool && n > 4096) pool->parallel_for(int64_t(cap), fill, 1 << 16); else fill(0, int64_t(cap));
  t_ = std::move(t);
  return true;
}

Model::Model(const ModelInit& init, cpu::ThreadPool* pool) : dims_(init.dims), ads_only_(init.ads_only) {
  const ModelDims& d = dims_;
  d.validate();
  const Tensors t(init.tensors);
  mapping = init.mapping;
  if (ads_only_) {
    load_ad_tables(*this, d, t, init, pool);
    release_unborrowed(init);
    return;
  }
  const int ds = d.seq_dim, du = d.user(), da = d.ad(), din = d.input(), D = d.cross();
  const int64_t N = d.num_ads;

  ud_mean = t.f32("features.user_dense.mean", {d.user_dense});
  ud_std = t.f32("features.user_dense.std", {d.user_dense});
  ad_mean_ = t.f32("features.ad_dense.mean", {d.ad_dense});
  ad_std_ = t.f32("features.ad_dense.std", {d.ad_dense});
  for (const auto& f : d.user_sparse) user_sparse.push_back(t.f32("features.user_sparse." + f.name, {f.cardinality, f.dim}));
  for (const auto& f : d.ad_sparse) ad_sparse_.push_back(t.f32("features.ad_sparse." + f.name, {f.cardinality, f.dim}));
  surface = t.f32("features.surface", {d.surfaces, d.surface_dim});

  seq_item = t.f32("sequence.item", {d.seq_item_buckets, ds});
  seq_action = t.f32("sequence.action", {d.seq_actions, ds});
  seq_position = t.f32("sequence.position", {d.seq_max_len, ds});
  for (int i = 0; i < d.seq_layers; i++) {
    const std::string p = "sequence.layers." + std::to_string(i) + ".";
    SequenceLayer L;
    {
      const std::vector<float> w = t.f32(p + "self_attn.in_proj_weight", {3 * ds, ds});
      L.in_proj.w = cpu::PackedMatrix(w.data(), 3 * ds, ds);
      L.in_proj.b = t.f32(p + "self_attn.in_proj_bias", {3 * ds});
    }
    L.out_proj = t.linear(p + "self_attn.out_proj", ds, ds);
    L.linear1 = t.linear(p + "linear1", d.seq_ffn_dim, ds);
    L.linear2 = t.linear(p + "linear2", ds, d.seq_ffn_dim);
    L.norm1_w = t.f32(p + "norm1.weight", {ds});
    L.norm1_b = t.f32(p + "norm1.bias", {ds});
    L.norm2_w = t.f32(p + "norm2.weight", {ds});
    L.norm2_b = t.f32(p + "norm2.bias", {ds});
    seq_layers.push_back(std::move(L));
  }
  seq_norm_w = t.f32("sequence.norm.weight", {ds});
  seq_norm_b = t.f32("sequence.norm.bias", {ds});
  ta_query_ = t.linear("target_attention.query", ds, d.ad_embedding_dim);

  input_norm_w = t.f32("masknet.input_norm.weight", {din});
  input_norm_b = t.f32("masknet.input_norm.bias", {din});
  const int B = d.masknet_blocks, h = d.masknet_hidden, o = d.masknet_output, dat = da + ds;
  {
    std::vector<float> wu(size_t(B) * h * du), wa(size_t(B) * h * dat);
    for (int i = 0; i < B; i++) {
      const std::string p = "masknet.blocks." + std::to_string(i) + ".";
      const std::vector<float> w1 = t.f32(p + "mask.0.weight", {h, din});
      const std::vector<float> b1 = t.f32(p + "mask.0.bias", {h});
      for (int r = 0; r < h; r++) {
        const float* src = w1.data() + size_t(r) * din;
        std::memcpy(wu.data() + (size_t(i) * h + r) * du, src, sizeof(float) * du);
        std::memcpy(wa.data() + (size_t(i) * h + r) * dat, src + du, sizeof(float) * dat);
      }
      mask1_user.b.insert(mask1_user.b.end(), b1.begin(), b1.end());
      MaskBlock blk;
      blk.mask2 = t.linear(p + "mask.2", din, h);
      blk.proj = t.linear(p + "proj", o, din, false).w;
      blk.norm_w = t.f32(p + "norm.weight", {o});
      blk.norm_b = t.f32(p + "norm.bias", {o});
      blocks.push_back(std::move(blk));
    }
    mask1_user.w = cpu::PackedMatrix(wu.data(), B * h, du);
    mask1_ad = cpu::PackedMatrix(wa.data(), B * h, dat);
  }
  for (int l = 0; l < d.dcn_layers; l++) {
    const std::string p = "dcn.layers." + std::to_string(l) + ".";
    CrossLayer c;
    if (d.dcn_rank > 0) {
      const std::vector<float> u = t.f32(p + "u", {D, d.dcn_rank});
      const std::vector<float> v = t.f32(p + "v", {d.dcn_rank, D});
      c.u = cpu::PackedMatrix(u.data(), D, d.dcn_rank);
      c.v = cpu::PackedMatrix(v.data(), d.dcn_rank, D);
    } else {
      const std::vector<float> w = t.f32(p + "weight", {D, D});
      c.w = cpu::PackedMatrix(w.data(), D, D);
    }
    c.b = t.f32(p + "bias", {D});
    cross.push_back(std::move(c));
  }
  int width = D;
  for (size_t k = 0; k < d.mlp.size(); k++) {
    mlp.push_back(t.linear("mlp." + std::to_string(k), d.mlp[k], width));
    width = d.mlp[k];
  }
  heads = t.linear("heads", d.tasks, width);
  calib_scale = t.f32("calibration.scale", {d.surfaces, d.tasks});
  calib_bias = t.f32("calibration.bias", {d.surfaces, d.tasks});
  task_weights = t.f32("utility.task_weights", {d.surfaces, d.tasks});
  width = du;
  std::vector<int> tower = d.retrieval_hidden;
  tower.push_back(d.retrieval_dim);
  for (size_t k = 0; k < tower.size(); k++) {
    user_tower.push_back(t.linear("user_tower." + std::to_string(k), tower[k], width));
    width = tower[k];
  }

  // Ad tables.
  load_ad_tables(*this, d, t, init, pool);
  // The inputs of a_c and q_c, read in place (checked, not copied) from a mapped bundle.
  const float* dense = static_cast<const float*>(t.get("ads.dense", {N, d.ad_dense}, {DType::F32}));
  check_finite("ads.dense", dense, size_t(N) * d.ad_dense);
  keep_table(ad_dense, dense, size_t(N) * d.ad_dense, mapping.get());
  const int nsf = int(d.ad_sparse.size());
  const int64_t* sparse = static_cast<const int64_t*>(t.get("ads.sparse", {N, nsf}, {DType::I64}));
  keep_table(ad_sparse_ids, sparse, size_t(N) * nsf, mapping.get());
  const float* emb = static_cast<const float*>(t.get("ads.embedding", {N, d.ad_embedding_dim}, {DType::F32}));
  check_finite("ads.embedding", emb, size_t(N) * d.ad_embedding_dim);
  keep_table(ad_embedding, emb, size_t(N) * d.ad_embedding_dim, mapping.get());
  {
    DType rd;
    const void* r = t.get("ads.retrieval", {N, d.retrieval_dim}, {DType::F32, DType::BF16}, &rd);
    if ((rd == DType::BF16) != d.retrieval_bf16)
      throw std::runtime_error(std::string("tensor ads.retrieval: expected dtype ") + (d.retrieval_bf16 ? "BF16" : "F32") +
                               " (dims.retrievalBf16), got " + dtype_name(rd));
    const size_t n = size_t(N) * d.retrieval_dim;
    if (rd == DType::F32) {
      check_finite("ads.retrieval", static_cast<const float*>(r), n);
      keep_table(ad_retrieval, static_cast<const float*>(r), n, mapping.get());
    } else {
      const uint16_t* b = static_cast<const uint16_t*>(r);
      std::vector<float> wide(n);
      for (size_t i = 0; i < n; i++) wide[i] = bf16_to_f32(b[i]);
      check_finite("ads.retrieval", wide.data(), n);
      ad_retrieval.own(std::move(wide));
    }
  }

  if (init.retrieval_bf16_scan) {
    // round to nearest even; the bound needs the largest row norm of the fp32 table
    const int Dr = d.retrieval_dim;
    ad_retrieval_bf16.resize(size_t(N) * Dr);
    std::vector<float> norms(size_t(std::max<int64_t>(N, 0)));
    auto convert = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const float* x = ad_retrieval.data() + size_t(r) * Dr;
        uint16_t* y = ad_retrieval_bf16.data() + size_t(r) * Dr;
        for (int j = 0; j < Dr; j++) {
          uint32_t b;
          std::memcpy(&b, &x[j], 4);
          y[j] = uint16_t((b + 0x7fff + ((b >> 16) & 1)) >> 16);
        }
        norms[size_t(r)] = std::sqrt(cpu::dot(x, x, Dr));
      }
    };
    if (pool) pool->parallel_for(N, convert, 4096); else convert(0, N);
    for (float v : norms) retrieval_max_norm = std::max(retrieval_max_norm, v);
    // the scan reads the bf16 copy; the fp32 rows are read back (from the page cache) only to rescore
    if (ad_retrieval.borrowed() && mapping) mapping->release(ad_retrieval.data(), sizeof(float) * ad_retrieval.size());
  }
  release_unborrowed(init);
}

void Model::ad_side(const int32_t* rows, int m, float* a, int64_t lda, float* q) const {
  const ModelDims& d = dims_;
  const int nsf = int(d.ad_sparse.size()), dae = d.ad_embedding_dim, da = d.ad();
  for (int i = 0; i < m; i++) {
    const int64_t r = rows[i];
    float* x = a + i * lda;
    const float* dense = ad_dense.data() + r * d.ad_dense;
    for (int j = 0; j < d.ad_dense; j++) {
      const float z = (dense[j] - ad_mean_[j]) / ad_std_[j];
      x[j] = std::fmin(std::fmax(z, -d.dense_clip), d.dense_clip);
    }
    int off = d.ad_dense;
    for (int f = 0; f < nsf; f++) {
      const auto& fd = d.ad_sparse[f];
      const int64_t b = bucket_of(ad_sparse_ids[size_t(r * nsf + f)], fd.cardinality);
      std::memcpy(x + off, ad_sparse_[f].data() + b * fd.dim, sizeof(float) * fd.dim);
      cpu::l2_normalize(x + off, fd.dim);
      off += fd.dim;
    }
    std::memcpy(x + off, ad_embedding.data() + r * dae, sizeof(float) * dae);
    cpu::l2_normalize(x + off, dae);
  }
  if (q && m > 0) {
    cpu::Epilogue ep;
    ep.bias = ta_query_.b.data();
    cpu::gemm(a + (da - dae), m, lda, ta_query_.w, q, d.seq_dim, ep, nullptr);  // the L2n(emb) columns of a_c
  }
}

// Pages of the mapped bundle that were read once at load (weights, now packed; the ad inputs of a_c
// and q_c) leave this process's resident set; they stay in the page cache. Borrowed tables stay.
void Model::release_unborrowed(const ModelInit& init) const {
  if (!mapping) return;
  const void* kept[] = {ad_id.data(), ad_advertiser.data(), ad_bid.data(), ad_targeting.data(), ad_dense.data(),
                        ad_sparse_ids.data(), ad_embedding.data(), ad_retrieval.borrowed() ? ad_retrieval.data() : nullptr};
  for (const auto& [name, ref] : init.tensors) {
    if (std::find(std::begin(kept), std::end(kept), ref.data) != std::end(kept)) continue;
    const size_t size = ref.dtype == DType::BF16 ? 2 : ref.dtype == DType::F32 ? 4 : 8;
    mapping->release(ref.data, ref.count * size);
  }
}

void Model::use_bf16_weights() {
  auto pack = [](cpu::PackedMatrix& w) {
    if (w.n() > 0 && w.k() > 0) w.pack_bf16();
  };
  // MaskNet in bf16 only where its blocks' LayerNorm is wide enough: LN over o values divides by
  // their spread, so for a narrow block (a few values close together) the 2^-8 relative rounding
  // of the GEMM outputs comes out amplified many times (a random config with o = 3 moved single
  // probabilities by 0.1). Such blocks are cheap, so they lose nothing by staying fp32.
  if (dims_.masknet_output >= kMinBf16NormWidth) {
    pack(mask1_ad);
    for (MaskBlock& b : blocks) {
      pack(b.mask2.w);
      pack(b.proj);
    }
  }
  for (CrossLayer& c : cross) {
    pack(c.w);
    pack(c.v);
    pack(c.u);
  }
  for (Linear& l : mlp) pack(l.w);
  bf16_weights_ = true;
}

}  // namespace adrank
