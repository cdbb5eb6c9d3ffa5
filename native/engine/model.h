// The model of docs/design.md §3–§4 held in host memory, built from the flattened dims and tensors the
// addon hands over (src/engine/binding.ts NativeModelInit). Weights are packed for cpu::gemm at load.
// The ad tables (ids, advertisers, bids, targeting, dense, sparse, embedding, an F32 retrieval table)
// are read in place when the tensors lie in a mapped bundle file (ModelInit::mapping;
// engine/mapped_file.h), copied otherwise; the static ad side of a candidate (a_c and the
// target-attention query q_c) is computed from them when the candidate is ranked (ad_side), which
// costs little next to the MaskNet and keeps the resident size at about the bundle's.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/id_map.h"
#include "engine/mapped_file.h"
#include "kernels/cpu/gemm.h"

namespace adrank::cpu {
class ThreadPool;
}

namespace adrank {

struct SparseFieldDims {
  std::string name;
  int64_t cardinality = 0;
  int dim = 0;
};

// The config's numbers (NativeDims), plus the widths they imply (src/model/config.ts modelDims).
struct ModelDims {
  int user_dense = 0, ad_dense = 0;
  float dense_clip = 5;
  std::vector<SparseFieldDims> user_sparse, ad_sparse;
  int user_embedding_dim = 0, ad_embedding_dim = 0, surface_dim = 0;
  int surfaces = 0, tasks = 0, targeting_dims = 0;
  int seq_max_len = 0;
  int64_t seq_item_buckets = 0;
  int seq_actions = 0, seq_dim = 0, seq_heads = 0, seq_ffn_dim = 0, seq_layers = 0;
  int masknet_blocks = 0, masknet_hidden = 0, masknet_output = 0;
  int dcn_layers = 0, dcn_rank = 0;  // rank 0 = full
  std::vector<int> mlp;
  int retrieval_dim = 0;
  std::vector<int> retrieval_hidden;
  bool retrieval_bf16 = false;
  int64_t num_ads = 0;

  int user() const;    // du = n_ud + Σ user sparse dims + d_ue + d_s + d_surf
  int ad() const;      // da = n_ad + Σ ad sparse dims + d_ae
  int input() const;   // d = du + da + d_s
  int cross() const;   // D = blocks · output
  int last() const;    // heads' input width
  // Throws std::runtime_error "expected <what> for dims.<field>, got <value>".
  void validate() const;
};

enum class DType { F32, I64, U64, BF16 };
const char* dtype_name(DType t);

// A borrowed tensor: `count` elements of `dtype` at `data`. Only valid during Model construction.
struct TensorRef {
  DType dtype = DType::F32;
  const void* data = nullptr;
  size_t count = 0;
};

// One ad table: a view of a mapped bundle file (kept alive by Model::mapping) or an owned copy.
template <class T>
class Table {
 public:
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const T& operator[](size_t i) const { return data_[i]; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  bool borrowed() const { return size_ > 0 && own_.empty(); }
  void borrow(const T* p, size_t n) {
    own_.clear();
    own_.shrink_to_fit();
    data_ = p;
    size_ = n;
  }
  void own(std::vector<T> v) {
    own_ = std::move(v);
    data_ = own_.data();
    size_ = own_.size();
  }

 private:
  std::vector<T> own_;
  const T* data_ = nullptr;
  size_t size_ = 0;
};

struct ModelInit {
  ModelDims dims;
  std::map<std::string, TensorRef> tensors;
  // The bundle file the tensors view, when they view one: the ad tables inside it are read in place
  // and the Model keeps it mapped.
  std::shared_ptr<const MappedFile> mapping;
  // The id → row map of ads.id, when already built (the bundle loader builds it; it is shared).
  const IdMap* id_map = nullptr;
  // Also keep a bf16 copy of the retrieval table for the CPU scan (engine/retrieval_scan.h).
  bool retrieval_bf16_scan = false;
  // Only the ad tables a fallback answer needs (ads.id, ads.advertiser, ads.bid, ads.targeting): the
  // server's --fallback-only stand-in when no model version loads (docs/funnel.md "Fallback").
  bool ads_only = false;
};

// y = act(W x + b) for one nn.Linear, packed.
struct Linear {
  cpu::PackedMatrix w;
  std::vector<float> b;  // empty = no bias
};

struct SequenceLayer {
  Linear in_proj;   // [3 d_s, d_s]
  Linear out_proj;  // [d_s, d_s]
  Linear linear1;   // [ffn, d_s]
  Linear linear2;   // [d_s, ffn]
  std::vector<float> norm1_w, norm1_b, norm2_w, norm2_b;
};

struct MaskBlock {
  Linear mask2;                 // [d, h] + b [d]
  cpu::PackedMatrix proj;       // [o, d], no bias
  std::vector<float> norm_w, norm_b;  // [o]
};

struct CrossLayer {
  cpu::PackedMatrix w;     // full rank [D, D]
  cpu::PackedMatrix v, u;  // low rank: v [r, D], u [D, r]
  std::vector<float> b;    // [D]
};

class Model {
 public:
  // Validates every tensor against dims (presence, dtype, element count, finite weights, unique ad
  // ids) and throws std::runtime_error naming the tensor. pool may be null.
  Model(const ModelInit& init, cpu::ThreadPool* pool);

  const ModelDims& dims() const { return dims_; }
  // Built from the ad tables alone (ModelInit::ads_only): no weights, no model path.
  bool ads_only() const { return ads_only_; }
  int64_t num_ads() const { return dims_.num_ads; }

  // Adds bf16 copies of the candidate-side GEMM weights (DCNv2, MLP, and MaskNet when
  // masknet_output >= kMinBf16NormWidth) so cpu::gemm runs them on the bf16 path; the request side
  // (sequence encoder, user tower, the user half of MaskNet's first layer), the heads, norms and
  // calibration stay fp32. Call before sharing.
  void use_bf16_weights();
  static constexpr int kMinBf16NormWidth = 64;
  bool bf16_weights() const { return bf16_weights_; }

  // Request-side parameters
  std::vector<float> ud_mean, ud_std;                // [n_ud]
  std::vector<std::vector<float>> user_sparse;       // per field [cardinality, dim]
  std::vector<float> surface;                        // [S, d_surf]
  std::vector<float> seq_item, seq_action, seq_position;  // [buckets|actions|max_len, d_s]
  std::vector<SequenceLayer> seq_layers;
  std::vector<float> seq_norm_w, seq_norm_b;

  // MaskNet: the first layer of every block split into its user columns and its [a_c ; ta_c] columns,
  // the blocks stacked: rows i·h .. (i+1)·h − 1 belong to block i.
  std::vector<float> input_norm_w, input_norm_b;     // [d]
  Linear mask1_user;                                 // [B·h, du] with the stacked bias [B·h]
  cpu::PackedMatrix mask1_ad;                        // [B·h, da + d_s]
  std::vector<MaskBlock> blocks;
  std::vector<CrossLayer> cross;
  std::vector<Linear> mlp;
  Linear heads;                                      // [T, last]
  std::vector<float> calib_scale, calib_bias, task_weights;  // [S, T]
  std::vector<Linear> user_tower;

  // Ad tables, row-major by ad row.
  Table<int64_t> ad_id, ad_advertiser;               // [N]
  Table<float> ad_bid;                               // [N]
  Table<uint64_t> ad_targeting;                      // [N, targeting_dims]
  Table<float> ad_dense, ad_embedding;               // raw [N, n_ad], [N, d_ae]
  Table<int64_t> ad_sparse_ids;                      // raw [N, len(ad_sparse)]
  // a_c = [z(dense) ; L2n(sparse rows) ; L2n(emb)] of `rows` into a (row stride lda, da values a
  // row) and, when q is not null, q_c = W_ta L2n(emb_c) + b_ta into q ([m, d_s]). Single-threaded.
  void ad_side(const int32_t* rows, int m, float* a, int64_t lda, float* q) const;
  Table<float> ad_retrieval;                         // [N, D_r] (BF16 converted)
  std::vector<uint16_t> ad_retrieval_bf16;           // [N, D_r], empty unless the bf16 scan is on
  float retrieval_max_norm = 0;                      // max_c ‖ad_retrieval[c]‖ (the bf16 scan's bound)
  IdMap id_to_row;
  // The mapped bundle the borrowed tables live in (null when everything was copied).
  std::shared_ptr<const MappedFile> mapping;
  // Non-empty when the mapped file changed since load (MappedFile::changed): answers are refused.
  std::string mapping_changed(bool stat_file = true) const { return mapping ? mapping->changed(stat_file) : std::string(); }

 private:
  void release_unborrowed(const ModelInit& init) const;
  std::vector<float> ad_mean_, ad_std_;              // [n_ad]
  std::vector<std::vector<float>> ad_sparse_;        // per field [cardinality, dim]
  Linear ta_query_;                                  // [d_s, d_ae]
  ModelDims dims_;
  bool bf16_weights_ = false;
  bool ads_only_ = false;
};

// Mathematical modulo: 0 <= result < m for m > 0, also for negative ids.
inline int64_t bucket_of(int64_t id, int64_t m) {
  const int64_t r = id % m;
  return r < 0 ? r + m : r;
}

}  // namespace adrank
