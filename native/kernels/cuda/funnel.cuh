// The funnel on the device (docs/funnel.md): candidate intake (id → row through a device hash
// table, unknown / duplicate counts), eligibility with the documented reasons and pacing hash, the
// one-pass retrieval scan, and selection: radix select of the best L keys (no full sort), a sort of
// those L, the exact greedy per-advertiser cap, local(P), GSP prices, and a compact result block
// that is the only thing copied back.
//
// Order key: uint64 (~orderable(score) << 32) | id_rank(row), ascending = score descending then ad
// id ascending (id_rank = the row's position in ascending ad-id order, computed at load; NaN
// scores are ordered as −inf, like the CPU engine).
//
// Exact greedy cap without a sequential walk: in the walk "take while the advertiser has < m
// taken", an ad is taken iff it is among its advertiser's first m ads in the order (by induction
// over the walk) and fewer than K ads were taken before it. Within any order-closed prefix of the
// sorted list the per-advertiser rank is exact, so on the sorted prefix of length L:
//   q1[s] = advertiser-rank(s) < m     (a stable sort of (advertiser, s); item at sorted position t
//                                       qualifies iff t < m or group[t − m] != group[t])
//   winners = the first K items with q1, runner-up the (K+1)-th; capped = non-q1 items before the
//   K-th winner. The prefix suffices when it holds K (+1 for the runner-up) qualifiers or L = E
//   (all eligible). Round 0 takes L = K+1 (no cap) or 4(K+1) (cap); when that is not enough a
//   fallback round repeats with L = E (sorted as one device-bounded segment: slow for huge E, but
//   only reached when the cap removes more than 3/4 of the 4(K+1) best ads).
// local(P): always L = E; q1 uses the group (partition, advertiser); a second stable sort by
// partition of the q1 items gives each item's rank inside its partition (< ⌈K/P⌉ → partition
// winner) and each partition's stop position for `capped`; partition winners merged in the global
// order give the K winners and the runner-up.
//
// What has run on a GPU and what is only compiled: docs/cuda.md "What is verified".
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "kernels/cuda/device_model.cuh"
#include "kernels/cuda/select_logic.h"

namespace adrank::cuda {

// Order of the counters matches adrank::Counts.
enum CountIndex : int {
  kCntReceived = 0, kCntUnknown, kCntDuplicate, kCntInactive, kCntOutOfBudget, kCntPaced, kCntTargeting,
  kCntExcludedAd, kCntExcludedAdvertiser, kCntCapped, kCntEligible, kNumCounts
};

// Device → host result block: this header, then the arrays at the offsets of ResultLayout.
struct ResultHeader {
  int n_win = 0;
  int has_runner = 0;
  int retrieved = 0;
  int pad = 0;
  unsigned long long counts[kNumCounts] = {};
};

struct ResultLayout {
  int k_cap = 0, tasks = 0;
  size_t off_ids = 0, off_adv = 0, off_rows = 0, off_scores = 0, off_prices = 0, off_values = 0, off_probs = 0, bytes = 0;
  static ResultLayout make(int k_cap, int tasks);
};

// Which selection a request stage runs. K, cap, partitions, reserve come from the RequestDesc.
enum class SelectStage : int {
  kRetrieve = 0,     // K = desc.k, cap = desc.cap, global, no runner-up, no prices
  kRetrieveTop = 1,  // RetrieveAndRank stage 1: K = desc.retrieve_count, no cap, global
  kRank = 2,         // K = desc.k, cap, mode and partitions of the request; runner-up when priced
  kRankPriced = 3,   // RetrieveAndRank stage 2: like kRank, always priced
};

struct SelectState {
  int active, E, L, need, bin, take_all, done, fallback;
  int n_out, n_cand[8];
  int stop, total_q1, n_win, runner;
  unsigned long long capped;
};

// Per-stream selection scratch. n_cap: keys capacity; l0_cap: round-0 capacity (>= 4(K+1)).
struct SelectWorkspace {
  int n_cap = 0, l0_cap = 0, max_partitions = 0;
  SelectState* state = nullptr;
  unsigned* hist = nullptr;             // [2048]
  int *cand_a = nullptr, *cand_b = nullptr, *out = nullptr;  // [n_cap]
  unsigned long long *sel_keys = nullptr, *sorted_keys = nullptr, *grp_keys = nullptr, *grp_sorted = nullptr;  // [n_cap]
  int *sel_vals = nullptr, *sorted_pos = nullptr, *grp_vals = nullptr, *grp_vals_sorted = nullptr;             // [n_cap]
  int *q1 = nullptr, *q2 = nullptr, *scan = nullptr;                                                           // [n_cap]
  int* win = nullptr;                   // [n_cap] winner slot → sorted index s
  int* stop = nullptr;                  // [max_partitions]
  int* seg_offsets = nullptr;           // [2] {0, L} for the device-bounded segmented sorts
  void* cub_temp = nullptr;
  size_t cub_temp_bytes = 0;
};

size_t select_workspace_bytes(int n_cap, int l0_cap, int max_partitions);
SelectWorkspace select_workspace_carve(int n_cap, int l0_cap, int max_partitions, void* base);

// Per-stream funnel scratch independent of the bucket.
struct FunnelWorkspace {
  int* first_seen = nullptr;       // [N] INT_MAX between requests (restored by the intake reset)
  uint8_t* excl_ad = nullptr;      // [N] 0 between requests
  uint8_t* excl_adv = nullptr;     // [num_advertisers] 0 between requests
  unsigned long long* counts = nullptr;  // [kNumCounts]
  int* cand_rows = nullptr;        // [m_cap] row of each received id (-1 unknown)
  int* elig_rows = nullptr;        // [m_cap] eligible rows (Rank) / retrieved rows (RetrieveAndRank)
  int* n_elig = nullptr;           // E
  unsigned long long* keys = nullptr;  // [max(N, m_cap)] order keys
  // The one-pass retrieval (enqueue_retrieve_onepass): each block's items below the global threshold,
  // [retrieve_onepass_grid() × kTopLMaxL]; their count, the global threshold and the blocks' finish
  // ticket. Between requests: count 0, threshold the max key, ticket 0 (the last block puts them back).
  unsigned long long* topl_keys = nullptr;
  int* topl_rows = nullptr;
  int* topl_count = nullptr;
  unsigned long long* topl_g = nullptr;
  unsigned* topl_ticket = nullptr;
  // The fp8 retrieval (enqueue_retrieve_fp8): each ad's upper end [N] (-inf: not eligible), τ (the
  // L-th best lower end's key), the rows to rescore [N] and their count (0 between requests: the
  // rescoring's last block empties it).
  float* fp8_ub = nullptr;
  unsigned long long* fp8_tau = nullptr;
  int* cand_list = nullptr;
  int* cand_n = nullptr;
};

// Marks (set = true) or clears the request's excluded ads and advertisers in the per-ad flags.
void enqueue_exclusions(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle, FunnelWorkspace& fw,
                        bool set, cudaStream_t st);
// Rank intake + eligibility: fw.elig_rows[0, *fw.n_elig) = eligible known unique rows; counts.
void enqueue_rank_intake(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle, FunnelWorkspace& fw,
                         int m_cap, cudaStream_t st);
// One pass over ads.retrieval: eligibility, score q · r_c for eligible ads, keys[N] (ineligible = max).
void enqueue_retrieve_scan(const DeviceModel& m, const RequestDesc* desc, const unsigned char* bundle, const float* query,
                           FunnelWorkspace& fw, cudaStream_t st);
// keys[i] = key(utility[i], id_rank(rows[i])) for i < *n, max for n <= i < m_cap.
void enqueue_rank_keys(const DeviceModel& m, const float* utility, const int* rows, const int* n, int m_cap,
                       unsigned long long* keys, cudaStream_t st);

// Selection over keys[0, n_static) of which *e_dev are eligible (all others are max keys).
// pos → row through rows (null = identity). local and capped are host-known (graph key);
// l0 = round-0 capacity. Writes ws.win / ws.state (n_win, runner) and adds `capped` to counts.
struct SelectPlan {
  SelectStage stage = SelectStage::kRank;
  bool local = false;       // request mode local (Rank stages only)
  bool capped = false;      // cap > 0 for this stage
  int n_static = 0;         // keys to scan
  int l0 = 0;               // round-0 sort size: >= K+1 (uncapped) or 4(K+1) (capped), <= ws.l0_cap
  const int* e_dev = nullptr;
  const unsigned long long* keys = nullptr;
  const int* rows = nullptr;
  // Enqueue the fallback round (after round 0, non-local). It can act only when a cap removes
  // qualifiers (plan_logic.h fallback_round_can_act); false leaves its kernels out of the stream and
  // the graph.
  bool fallback_round = true;
};
void enqueue_select(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, SelectWorkspace& ws,
                    FunnelWorkspace& fw, cudaStream_t st);

// The one-pass retrieval (ADRANK_CUDA_RETRIEVE_ONEPASS; select_logic.h "the one-pass retrieval's
// top-L buffer"): for an uncapped stage (kRetrieve without a cap, kRetrieveTop) whose plan.l0 is at
// most kTopLMaxL, one launch does what enqueue_retrieve_scan, enqueue_select and enqueue_results do:
// eligibility and counts, q · r_c, each block's exact top L under its own and the global threshold,
// the merge by the last block, the selection state and the result block (or, for kRetrieveTop, the
// retrieved rows in out_rows / *out_n). No key array is written and there are no radix passes.
bool retrieve_onepass_fits(const DeviceModel& m, const SelectPlan& plan);
int retrieve_onepass_grid();  // blocks of the scan: two per SM
void enqueue_retrieve_onepass(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, const unsigned char* bundle,
                              const float* query, SelectWorkspace& ws, FunnelWorkspace& fw, unsigned char* result,
                              const ResultLayout& layout, int* out_rows, int* out_n, cudaStream_t st);
// The fp8 retrieval (ADRANK_CUDA_RETRIEVE_FP8; fp8_logic.h): where the model has the e4m3 copy and
// the one-pass retrieval fits, three launches: the one-pass scan over the e4m3 table (eligibility
// and counts, the interval around each ad's bf16 score, τ = the L-th best lower end, exactly), a
// filter that lists the ads whose upper end reaches τ, and the one-pass kernel over the list (bf16
// rescoring with the scan's arithmetic, the exact top L, the result block). The same answers as
// the bf16 scan.
bool retrieve_fp8_fits(const DeviceModel& m, const SelectPlan& plan);
void enqueue_retrieve_fp8(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, const unsigned char* bundle,
                          const float* query, SelectWorkspace& ws, FunnelWorkspace& fw, unsigned char* result,
                          const ResultLayout& layout, int* out_rows, int* out_n, cudaStream_t st);
// Puts the one-pass and fp8 state (counts, thresholds, ticket) back to their between-request values.
void reset_retrieve_onepass(FunnelWorkspace& fw, cudaStream_t st);

// The single-CTA epilogue (ADRANK_CUDA_EPILOGUE, select_logic.h epilogue_select): for a global
// (non-local) rank stage whose bucket (plan.n_static, a power of two) is at most kEpiMaxItems, one
// block of 1,024 threads computes the order keys from `utility` (no enqueue_rank_keys), sorts them,
// walks the cap, finds the runner-up and `capped`, and writes the result block as enqueue_results
// does (it replaces enqueue_select and enqueue_results: one launch instead of about 40).
// `retrieved`: RetrieveAndRank's retrieved count for the header, else null. epilogue_fits: the
// bucket and this device's shared memory allow it (16,384 items on sm_90, 8,192 on sm_80, 4,096 on
// sm_89).
bool epilogue_fits(const SelectPlan& plan);
void enqueue_epilogue(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, SelectWorkspace& ws,
                      FunnelWorkspace& fw, const float* utility, const float* value, const float* probs, unsigned char* result,
                      const ResultLayout& layout, const int* retrieved, cudaStream_t st);

// Writes the result block from the selection: ids, advertisers, rows, scores (utility or decoded
// retrieval score), probs and prices (rank stages). rank_* may be null for kRetrieve.
// For kRetrieveTop it instead writes the retrieved rows to out_rows / *out_n (input of stage 2).
void enqueue_results(const DeviceModel& m, const RequestDesc* desc, const SelectPlan& plan, const SelectWorkspace& ws,
                     const FunnelWorkspace& fw, const float* utility, const float* value, const float* probs,
                     unsigned char* result, const ResultLayout& layout, int* out_rows, int* out_n, cudaStream_t st);

// Puts first_seen back to INT_MAX for this request's candidates (end of a Rank request).
void enqueue_rank_intake_reset(const RequestDesc* desc, FunnelWorkspace& fw, int m_cap, cudaStream_t st);

// CPU reference of the exact greedy cap selection on already-ordered items (harness).
void greedy_reference(const std::vector<int>& advertiser_in_order, int k, int cap, bool runner, std::vector<int>& winners,
                      int* runner_out, long long* capped);

// float_bits, bits_float, order_key, key_score: select_logic.h (shared with the host tests)

}  // namespace adrank::cuda
