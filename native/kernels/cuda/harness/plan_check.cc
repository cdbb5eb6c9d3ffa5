// Host-only checks of the CUDA path's host logic and of the single-CTA epilogue's selection
// (select_logic.h epilogue_select, the same steps the device block runs) against the CPU funnel
// (engine/funnel.cc select_global, gsp_prices); of the one-pass retrieval's blocks and merge
// (select_logic.h topl_*) against the uncapped CPU selection; and of the fp8 retrieval's arithmetic
// (fp8_logic.h) and selection against the bf16 scan's top L. No GPU and no CUDA toolkit needed;
// test/23 builds and runs it:
//   g++ -std=c++17 -O2 -I native native/kernels/cuda/harness/plan_check.cc native/engine/funnel.cc -o plan_check
//   ./plan_check [cases]      prints one line per group and "plan_check: N failures"; exit 1 on any
//   FP8_BIG=2000000 ./plan_check 1   also: how many of that many random ads the fp8 retrieval rescores
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/funnel.h"
#include "kernels/cuda/fp8_logic.h"
#include "kernels/cuda/plan_logic.h"
#include "kernels/cuda/select_logic.h"

using namespace adrank;
using namespace adrank::cuda;

namespace {

int g_fail = 0;
#define EXPECT(cond, ...)                   \
  do {                                      \
    if (!(cond)) {                          \
      ++g_fail;                             \
      std::printf("  FAIL %s: ", #cond);    \
      std::printf(__VA_ARGS__);             \
      std::printf("\n");                    \
    }                                       \
  } while (0)

struct HostExec {
  template <class F>
  void for_each(int n, F f) {
    for (int i = 0; i < n; ++i) f(i);
  }
  template <class F>
  void single(F f) {
    f();
  }
};

void tile_cases() {
  // 1,024 rows × 1536 (a cross layer): 8 × 12 = 96 big tiles on 132 SMs
  EXPECT(!tile_is_big(TilePolicy::kFill, 1024, 1536, 1, 132), "fill keeps the small tile below one full wave");
  EXPECT(tile_is_big(TilePolicy::kShape, 1024, 1536, 1, 132), "shape takes the big tile at 96 of 132 SMs");
  EXPECT(tile_is_big(TilePolicy::kFill, 10000, 1536, 1, 132), "fill: 10,000 rows fill the GPU");
  EXPECT(tile_is_big(TilePolicy::kShape, 10000, 1536, 1, 132), "shape: 10,000 rows");
  EXPECT(!tile_is_big(TilePolicy::kShape, 128, 256, 1, 132), "shape: 2 big tiles stay small");
  EXPECT(!tile_is_big(TilePolicy::kShape, 1024, 256, 1, 132), "shape: 16 big tiles stay small");
  EXPECT(tile_is_big(TilePolicy::kShape, 1024, 384, 3, 132), "shape: batch counts (72 big tiles)");
  EXPECT(!tile_is_big(TilePolicy::kShape, 1024, 1536, 1, 200), "shape: the SM count comes from the device (96 of 200)");
  EXPECT(tile_is_big(TilePolicy::kBig, 1, 8, 1, 132) && !tile_is_big(TilePolicy::kSmall, 1 << 20, 4096, 1, 132), "forced tiles");
  EXPECT(wgmma_takes(1024, 1536, 1, 132) && wgmma_takes(10000, 256, 1, 132) && wgmma_takes(1024, 384, 3, 132),
         "wgmma: the cross layers at 1,024 rows (96 tiles), narrow layers at 10,000, batched MaskNet layers");
  EXPECT(!wgmma_takes(1024, 256, 1, 132) && !wgmma_takes(128, 1536, 1, 132), "wgmma: 16 or 12 tiles keep mma.sync");
  EXPECT(!wgmma_takes(64, 4096, 8, 132) && !wgmma_takes(64, 4096, 8, 132, true), "wgmma: never at 64 rows or fewer");
  EXPECT(wgmma_takes(128, 256, 1, 132, true) && wgmma_takes(65, 8, 1, 132, true), "wgmma forced: any product over 64 rows");
  EXPECT(parse_tile_policy("shape") == TilePolicy::kShape && parse_tile_policy(nullptr) == TilePolicy::kFill &&
             parse_tile_policy("nonsense") == TilePolicy::kFill && parse_tile_policy("small") == TilePolicy::kSmall,
         "tile policy names");
  std::printf("tile choice: %s\n", g_fail ? "FAIL" : "ok");
}

void key_cases() {
  const int before = g_fail;
  EXPECT(io_bucket(100, 1 << 20) == 4096, "small requests share the 4 KiB graph");
  EXPECT(io_bucket(4097, 1 << 20) == 8192, "next power of two");
  EXPECT(io_bucket(1 << 20, 1 << 20) == (1 << 20), "exactly the staging size");
  EXPECT(io_bucket((1 << 20) - 5, 1 << 20) == (1 << 20), "never past the staging");
  EXPECT(io_bucket(3000, 2048) == 2048, "capped by the staging size");
  EXPECT(!fallback_round_can_act(false, false), "uncapped: no fallback round");
  EXPECT(fallback_round_can_act(true, false), "capped: the fallback round stays");
  EXPECT(!fallback_round_can_act(true, true), "local: one full round, no fallback");
  // the claim behind it, over the round-0 rule of select.cu: uncapped, L = min(K+1, E) keys all
  // qualify; the fallback runs iff qualifiers < K (+1 priced) and L < E
  for (int E = 0; E <= 70; ++E)
    for (int K = 1; K <= 70; ++K)
      for (int runner = 0; runner < 2; ++runner) {
        const int L = std::min(K + 1, E), q = L, need = K + runner;
        EXPECT(!(q < need && L < E), "uncapped round 0 asked for a fallback at E=%d K=%d", E, K);
      }
  std::printf("graph keys and plans: %s\n", g_fail > before ? "FAIL" : "ok");
}

struct Case {
  std::vector<float> score;
  std::vector<int64_t> id, adv;
  std::vector<int> id_rank;
  std::vector<float> bid, value;
};

struct HostSource {
  const Case* c;
  unsigned long long key(int i) const { return order_key(c->score[i], c->id_rank[i]); }
  unsigned group(int i) const { return unsigned(c->adv[i]); }
};

Case make_case(std::mt19937_64& rng, int n, int advertisers, int levels) {
  Case c;
  std::uniform_int_distribution<int64_t> idd(-(int64_t(1) << 40), int64_t(1) << 40);
  std::vector<int64_t> ids;
  while (int(ids.size()) < n) {
    ids.push_back(idd(rng));
    if (ids.size() == size_t(n)) {
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    }
  }
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int64_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  std::uniform_int_distribution<int> lv(0, std::max(levels - 1, 0)), ad(0, std::max(advertisers - 1, 0));
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (int i = 0; i < n; ++i) {
    c.id.push_back(ids[i]);
    c.id_rank.push_back(int(std::lower_bound(sorted.begin(), sorted.end(), ids[i]) - sorted.begin()));
    // few score levels → many ties broken by id; a few NaN, −0 and +0
    float s = levels > 0 ? float(lv(rng)) / float(levels) : u(rng);
    const float r = u(rng);
    if (r < 0.01f) s = std::nanf("");
    else if (r < 0.02f) s = -0.f;
    else if (r < 0.03f) s = 0.f;
    c.score.push_back(s);
    // a skewed advertiser: a third of the ads belong to advertiser 0
    c.adv.push_back(u(rng) < 0.33f ? 0 : ad(rng));
    c.bid.push_back(0.5f + u(rng));
    c.value.push_back(0.01f + u(rng));
  }
  return c;
}

void epilogue_case(std::mt19937_64& rng, int n, int k, int cap, bool runner, int advertisers, int levels, int& checked) {
  const Case c = make_case(rng, n, advertisers, levels);
  int p = 256;
  while (p < n) p <<= 1;
  std::vector<unsigned long long> keys(p);
  std::vector<int> aux(p), chunk(2 * kEpiChunks), sorted_pos(p), win(std::max(k, 1));
  EpiParams P;
  P.n = n;
  P.p = p;
  P.k = k;
  P.cap = cap;
  P.runner = runner;
  EpiOut out;
  out.sorted_pos = sorted_pos.data();
  out.win = win.data();
  HostExec x;
  epilogue_select(x, P, HostSource{&c}, EpiShared{keys.data(), aux.data(), chunk.data()}, out);

  std::vector<Candidate> cands;
  for (int i = 0; i < n; ++i) cands.push_back(make_candidate(c.score[i], c.id[i], c.adv[i], i));
  const Selection want = select_global(cands, uint32_t(k), uint32_t(cap), runner);
  char what[160];
  std::snprintf(what, sizeof what, "n=%d k=%d cap=%d runner=%d advertisers=%d levels=%d", n, k, cap, int(runner), advertisers, levels);
  EXPECT(out.n_win == int(want.winners.size()), "%s: %d winners, CPU funnel %zu", what, out.n_win, want.winners.size());
  const int nw = std::min(out.n_win, int(want.winners.size()));
  int bad = 0;
  for (int w = 0; w < nw; ++w) bad += c.id[sorted_pos[win[w]]] != want.winners[w].id;
  EXPECT(bad == 0, "%s: %d winners differ from the CPU funnel's", what, bad);
  EXPECT(out.capped == want.capped, "%s: capped %lld, CPU funnel %lld", what, out.capped, (long long)want.capped);
  EXPECT((out.runner >= 0) == want.has_runner_up, "%s: runner-up %d, CPU funnel has one: %d", what, out.runner, int(want.has_runner_up));
  if (out.runner >= 0 && want.has_runner_up)
    EXPECT(c.id[sorted_pos[out.runner]] == want.runner_up.id, "%s: runner-up id differs", what);
  // GSP prices from the epilogue's winners and runner-up (what the results kernel reads) against the CPU's
  if (runner && bad == 0 && out.n_win == int(want.winners.size())) {
    Selection got;
    for (int w = 0; w < out.n_win; ++w) {
      const int i = sorted_pos[win[w]];
      got.winners.push_back(make_candidate(c.score[i], c.id[i], c.adv[i], i));
    }
    got.has_runner_up = out.runner >= 0;
    if (got.has_runner_up) {
      const int i = sorted_pos[out.runner];
      got.runner_up = make_candidate(c.score[i], c.id[i], c.adv[i], i);
    }
    auto bid = [&](int32_t i) { return c.bid[i]; };
    auto value = [&](int32_t i) { return c.value[i]; };
    const auto a = gsp_prices(got, 0.05f, bid, value), b = gsp_prices(want, 0.05f, bid, value);
    int diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff += !(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])));
    EXPECT(diff == 0, "%s: %d GSP prices differ", what, diff);
  }
  ++checked;
}

// The one-pass retrieval's top-L (retrieve.cu retrieve_onepass_kernel) run on the host with the
// same buffer steps (select_logic.h topl_compact, topl_must_compact, topl_buffer_cap) and the same
// schedule of bounds: `blocks` blocks take steps of kTopLStep ads in turn (a block's step i covers
// ads (b + i·blocks)·kTopLStep …), each appends an eligible ad whose key is not above min(own, G),
// compacts when the next step could overflow, lowers G; a block that has run out of steps writes its
// best not above G to the list; the last one merges the list. The winners must be the CPU funnel's
// (select_global without a cap) for every order of scores: random, best first, worst first (every
// step beats the threshold), all tied, and fewer eligible than L.
enum class Order { kRandom, kAscending, kDescending, kTied };

void onepass_case(std::mt19937_64& rng, int n, int k, int blocks, Order order, float eligible, int& checked) {
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<int64_t> id(n);
  for (int i = 0; i < n; ++i) id[i] = int64_t(rng() % 1000000007ull) * 64 + i;  // distinct, random order
  std::vector<int> by_id(n), id_rank(n);
  std::iota(by_id.begin(), by_id.end(), 0);
  std::sort(by_id.begin(), by_id.end(), [&](int a, int b) { return id[a] < id[b]; });
  for (int r = 0; r < n; ++r) id_rank[by_id[r]] = r;
  std::vector<float> score(n);
  for (int i = 0; i < n; ++i)
    score[i] = order == Order::kTied ? 0.5f : order == Order::kAscending ? float(n - i) : order == Order::kDescending ? float(i) : u(rng) - 0.5f;
  std::vector<char> elig(n);
  for (int i = 0; i < n; ++i) elig[i] = u(rng) < eligible;

  const int L = k;
  int lcap = 64;
  while (lcap < L + 1) lcap <<= 1;
  const int bcap = topl_buffer_cap(lcap);
  struct Block {
    std::vector<unsigned long long> keys;
    std::vector<int> rows;
    int n = 0;
    unsigned long long own = kEpiMaxKey;
    int64_t next = 0;
    bool done = false;
  };
  HostExec x;
  unsigned long long G = kEpiMaxKey;
  std::vector<unsigned long long> list_keys;
  std::vector<int> list_rows;
  // one step of a buffer: offer `items` (row, eligible) below the bound, then settle as the kernel does
  auto step = [&](Block& b, const std::vector<std::pair<int, unsigned long long>>& items) {
    const unsigned long long bound = std::min(b.own, G);
    for (const auto& it : items)
      if (it.second <= bound) {
        b.keys[b.n] = it.second;
        b.rows[b.n] = it.first;
        ++b.n;
      }
    TopLBuffer buf{b.keys.data(), b.rows.data(), bcap};
    if (topl_must_compact(buf, b.n)) {
      b.n = topl_compact(x, buf, b.n, L);
      b.own = b.keys[L - 1];
      G = std::min(G, b.own);
    }
  };
  auto fresh = [&] {
    Block b;
    b.keys.assign(bcap, 0);
    b.rows.assign(bcap, 0);
    return b;
  };
  std::vector<Block> bl;
  for (int b = 0; b < blocks; ++b) bl.push_back(fresh());
  const int64_t tiles = (int64_t(n) + kTopLStep - 1) / kTopLStep;
  int finished = 0;
  while (finished < blocks) {
    for (int b = 0; b < blocks; ++b) {
      Block& B = bl[b];
      if (B.done) continue;
      const int64_t tile = b + B.next * blocks;
      if (tile < tiles) {
        std::vector<std::pair<int, unsigned long long>> items;
        for (int64_t i = tile * kTopLStep; i < std::min<int64_t>(n, (tile + 1) * kTopLStep); ++i)
          if (elig[i]) items.emplace_back(int(i), order_key(score[i], id_rank[i]));
        step(B, items);
        ++B.next;
        continue;
      }
      TopLBuffer buf{B.keys.data(), B.rows.data(), bcap};
      const int kept = topl_compact(x, buf, B.n, L);
      for (int i = 0; i < kept && B.keys[i] <= G; ++i) {
        list_keys.push_back(B.keys[i]);
        list_rows.push_back(B.rows[i]);
      }
      EXPECT(kept <= L, "a block keeps at most L");
      B.done = true;
      ++finished;
    }
  }
  Block M = fresh();
  M.own = kEpiMaxKey;
  for (size_t j0 = 0; j0 < list_keys.size(); j0 += kTopLStep) {
    std::vector<std::pair<int, unsigned long long>> items;
    for (size_t j = j0; j < std::min(list_keys.size(), j0 + kTopLStep); ++j) items.emplace_back(list_rows[j], list_keys[j]);
    step(M, items);
  }
  TopLBuffer mb{M.keys.data(), M.rows.data(), bcap};
  const int n_top = topl_compact(x, mb, M.n, L);

  std::vector<Candidate> cands;
  for (int i = 0; i < n; ++i)
    if (elig[i]) cands.push_back(make_candidate(score[i], id[i], 0, i));
  const Selection want = select_global(cands, uint32_t(k), 0, false);
  char what[160];
  std::snprintf(what, sizeof what, "one-pass n=%d k=%d blocks=%d order=%d eligible=%.2f", n, k, blocks, int(order), eligible);
  EXPECT(n_top == int(want.winners.size()), "%s: %d winners, CPU funnel %zu", what, n_top, want.winners.size());
  int bad = 0;
  for (int w = 0; w < std::min(n_top, int(want.winners.size())); ++w)
    bad += id[M.rows[w]] != want.winners[w].id || key_score(M.keys[w]) != score[M.rows[w]];
  EXPECT(bad == 0, "%s: %d winners differ from the CPU funnel's", what, bad);
  EXPECT(list_keys.size() <= size_t(blocks) * size_t(L), "%s: the list holds %zu items, more than blocks × L", what, list_keys.size());
  ++checked;
}

// ---- the fp8 retrieval (fp8_logic.h) ---------------------------------------------------------------

float to_bf16(float x) {  // round to nearest even, as __float2bfloat16 (finite x)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

// The bf16 scan's score with the device's arithmetic (retrieve.cu score_group): lane `sub` of a
// half warp sums chunks sub, sub + 16, … of 8 values each in order with fused multiply-adds, then
// the butterfly over the 16 lanes (xor 8, 4, 2, 1); lane 0's sum.
float device_bf16_score(const float* e, const float* q, int d_pad) {
  float part[16] = {};
  for (int sub = 0; sub < 16; ++sub)
    for (int c = sub; c < d_pad / 8; c += 16)
      for (int i = 0; i < 8; ++i) part[sub] = std::fma(e[c * 8 + i], q[c * 8 + i], part[sub]);
  for (int o = 8; o > 0; o >>= 1) {
    float next[16];
    for (int l = 0; l < 16; ++l) next[l] = part[l] + part[l ^ o];
    std::copy(next, next + 16, part);
  }
  return part[0];
}
// The fp8 scan's q · d with the device's arithmetic (retrieve.cu fp8_score_group): 8 lanes, chunks
// of 16, then the butterfly over 8 lanes.
float device_fp8_dot(const uint8_t* d8, const float* q, int d8_pad) {
  float part[8] = {};
  for (int sub = 0; sub < 8; ++sub)
    for (int c = sub; c < d8_pad / 16; c += 8)
      for (int i = 0; i < 16; ++i) part[sub] = std::fma(fp8_e4m3_value(d8[c * 16 + i]), q[c * 16 + i], part[sub]);
  for (int o = 4; o > 0; o >>= 1) {
    float next[8];
    for (int l = 0; l < 8; ++l) next[l] = part[l] + part[l ^ o];
    std::copy(next, next + 8, part);
  }
  return part[0];
}

void fp8_codec_cases() {
  const int before = g_fail;
  EXPECT(fp8_e4m3_value(0x7e) == 448.f && fp8_e4m3_value(0x38) == 1.f && fp8_e4m3_value(0x08) == 0.015625f &&
             fp8_e4m3_value(0x01) == 0.001953125f && fp8_e4m3_value(0x07) == 7 * 0.001953125f && fp8_e4m3_value(0xb8) == -1.f &&
             fp8_e4m3_value(0x39) == 1.125f && fp8_e4m3_value(0x30) == 0.5f,
         "e4m3 values");
  int bad = 0;
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f || b == 0x80) continue;  // NaN, -0
    bad += fp8_e4m3_from(fp8_e4m3_value(uint8_t(b))) != b;
  }
  EXPECT(bad == 0, "%d e4m3 codes do not round-trip", bad);
  EXPECT(fp8_e4m3_from(1.0625f) == 0x38 && fp8_e4m3_from(1.1875f) == 0x3a && fp8_e4m3_from(1e6f) == 0x7e &&
             fp8_e4m3_from(-1e6f) == 0xfe && fp8_e4m3_from(1.07f) == 0x39 && fp8_e4m3_from(0.0009765625f) == 0x00 &&
             fp8_e4m3_from(0.0029296875f) == 0x02,
         "e4m3 rounding: ties to even, saturation, subnormals");
  // against the nearest code by search (ties to the even code), over random magnitudes
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> expo(-14.f, 10.f), u01(0.f, 1.f);
  int wrong = 0;
  for (int i = 0; i < 200000; ++i) {
    const float a = std::ldexp(1.f + u01(rng), int(expo(rng))) * (i & 1 ? -1.f : 1.f);
    const float m = std::fabs(a);
    int best = 0;
    for (int c = 1; c <= 0x7e; ++c) {
      const float dc = std::fabs(fp8_e4m3_value(uint8_t(c)) - m), db = std::fabs(fp8_e4m3_value(uint8_t(best)) - m);
      if (dc < db || (dc == db && (c & 1) == 0)) best = c;
    }
    wrong += fp8_e4m3_from(a) != uint8_t((a < 0 ? 0x80 : 0) | best);
  }
  EXPECT(wrong == 0, "%d of 200,000 values rounded to a code that is not the nearest (ties to even)", wrong);
  std::printf("fp8 e4m3 codec: %s\n", g_fail > before ? "FAIL" : "ok");
}

// A retrieval table of n rows × d (d a multiple of 16), bf16 values; `kind` picks adversarial rows.
std::vector<float> fp8_table(std::mt19937_64& rng, int n, int d, int kind) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> e(size_t(n) * d);
  std::vector<float> base(d);
  for (auto& x : base) x = to_bf16(g(rng));
  for (int r = 0; r < n; ++r) {
    float* row = e.data() + size_t(r) * d;
    for (int i = 0; i < d; ++i) {
      float x = g(rng);
      switch (kind) {
        case 1: x = i == r % d ? 1000.f * x : 1e-3f * x; break;  // one huge value: the rest quantize to 0
        case 2: x = base[i] * (1.f + 0.0078125f * float(int(rng() % 5) - 2)); break;  // near ties: base ± bf16 ulps
        case 3: x = (i & 1 ? -1.f : 1.f) * (1.f + 0.00390625f * float(rng() % 200)); break;  // cancellation
        case 4: x = 1e-30f * x; break;  // tiny
        case 5: x = r % 7 == 0 ? 0.f : x; break;  // some all-zero rows
        default: break;
      }
      row[i] = to_bf16(x);
    }
  }
  return e;
}

// Every ad's bf16 score (device order, and plain order) lies in the interval around its fp8 score.
void fp8_interval_cases(std::mt19937_64& rng, int& checked) {
  const int before = g_fail;
  std::normal_distribution<float> g(0.f, 1.f);
  for (int kind = 0; kind <= 5; ++kind)
    for (int d : {16, 128, 272}) {
      const int n = 400;
      const auto e = fp8_table(rng, n, d, kind);
      std::vector<uint8_t> d8(size_t(n) * d);
      std::vector<float> scale(n), B(n);
      for (int r = 0; r < n; ++r) scale[r] = fp8_quantize_row(e.data() + size_t(r) * d, d, d8.data() + size_t(r) * d, &B[r]);
      {  // the rows as the engine quantizes them at load: bf16 bit patterns, padded to 16
        const int dp = (d + 15) / 16 * 16;
        std::vector<uint16_t> bits(size_t(n) * d);
        for (size_t i = 0; i < bits.size(); ++i) {
          uint32_t u;
          std::memcpy(&u, &e[i], 4);
          bits[i] = uint16_t(u >> 16);  // e is bf16-valued: the low half is 0
        }
        std::vector<uint8_t> p8(size_t(n) * dp);
        std::vector<float> ps(n), pb(n);
        fp8_quantize_bf16_rows(bits.data(), d, d, 0, n, dp, p8.data(), ps.data(), pb.data());
        int differ = 0;
        for (int r = 0; r < n; ++r)
          differ += ps[r] != scale[r] || pb[r] < B[r] || std::memcmp(p8.data() + size_t(r) * dp, d8.data() + size_t(r) * d, d) != 0 ||
                    std::any_of(p8.begin() + size_t(r) * dp + d, p8.begin() + size_t(r + 1) * dp, [](uint8_t b) { return b != 0; });
        EXPECT(differ == 0, "fp8_quantize_bf16_rows kind %d d %d: %d rows differ from fp8_quantize_row's", kind, d, differ);
      }
      for (int qi = 0; qi < 5; ++qi) {
        std::vector<float> q(d);
        for (auto& x : q) x = qi == 4 ? 1e4f * g(rng) : g(rng);
        float s2 = 0.f;
        for (float x : q) s2 = std::fma(x, x, s2);
        const float qn = std::sqrt(s2) * (1.f + 1e-5f);
        int outside = 0;
        double widest = 0;
        for (int r = 0; r < n; ++r) {
          const float* row = e.data() + size_t(r) * d;
          const float T = device_fp8_dot(d8.data() + size_t(r) * d, q.data(), d) * scale[r];
          float lb, ub;
          fp8_interval(T, qn, B[r], &lb, &ub);
          float plain = 0.f, reverse = 0.f;
          for (int i = 0; i < d; ++i) plain = std::fma(row[i], q[i], plain);
          for (int i = d - 1; i >= 0; --i) reverse = std::fma(row[i], q[i], reverse);
          for (float S : {device_bf16_score(row, q.data(), d), plain, reverse}) outside += !(lb <= S && S <= ub);
          widest = std::max(widest, double(ub) - double(lb));
        }
        EXPECT(outside == 0, "fp8 interval kind %d d %d query %d: %d bf16 scores outside", kind, d, qi, outside);
        ++checked;
      }
    }
  std::printf("fp8 interval holds the bf16 score: %d tables × queries, %s\n", checked, g_fail > before ? "FAIL" : "ok");
}

// The fp8 retrieval end to end on the host, as the device runs it (retrieve.cu): the e4m3 scan
// finds τ, the L-th best lower end, exactly (the one-pass top L over the lower ends' keys: its
// schedule is checked by onepass_case), the filter lists every eligible ad whose upper end reaches
// τ (all of them when fewer than L are eligible), and the list's ads are rescored with the bf16
// scan's arithmetic and the best L taken. The answer must be the bf16 scan's exact top L (ids and
// scores) over every eligible ad.
// `eligible`: the fraction of ads that pass eligibility (below L / n, τ is the max key and every
// eligible ad is rescored).
void fp8_selection_case(std::mt19937_64& rng, int n, int d, int k, float eligible, int kind, int& checked, size_t& listed) {
  const auto e = fp8_table(rng, n, d, kind);
  std::vector<uint8_t> d8(size_t(n) * d);
  std::vector<float> scale(n), B(n);
  for (int r = 0; r < n; ++r) scale[r] = fp8_quantize_row(e.data() + size_t(r) * d, d, d8.data() + size_t(r) * d, &B[r]);
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> q(d);
  for (auto& x : q) x = g(rng);
  float s2 = 0.f;
  for (float x : q) s2 = std::fma(x, x, s2);
  const float qn = std::sqrt(s2) * (1.f + 1e-5f);
  std::vector<char> elig(n);
  for (int i = 0; i < n; ++i) elig[i] = u(rng) < eligible;
  std::vector<int> id_rank(n);
  std::iota(id_rank.begin(), id_rank.end(), 0);
  std::shuffle(id_rank.begin(), id_rank.end(), rng);
  const int L = k;
  // the scan: each eligible ad's lower end's key and its upper end (-inf: not eligible)
  std::vector<unsigned long long> lb_keys;
  std::vector<float> ub(n, -INFINITY);
  for (int i = 0; i < n; ++i) {
    if (!elig[i]) continue;
    const float T = device_fp8_dot(d8.data() + size_t(i) * d, q.data(), d) * scale[i];
    float lo, hi;
    fp8_interval(T, qn, B[i], &lo, &hi);
    lb_keys.push_back(order_key(lo, id_rank[i]));
    ub[i] = std::isnan(hi) ? INFINITY : std::max(hi, -FLT_MAX);
  }
  std::sort(lb_keys.begin(), lb_keys.end());
  const unsigned long long tau = lb_keys.size() >= size_t(L) ? lb_keys[L - 1] : kEpiMaxKey;
  // the filter (retrieve.cu fp8_filter_kernel)
  std::vector<int> list;
  for (int i = 0; i < n; ++i)
    if (ub[i] != -INFINITY && (tau == kEpiMaxKey || !(ub[i] < key_score(tau)))) list.push_back(i);
  // rescoring and the exact top L of the list, against the bf16 scan over every eligible ad
  auto exact_top = [&](const std::vector<int>& rows) {
    std::vector<unsigned long long> keys;
    for (int i : rows) keys.push_back(order_key(device_bf16_score(e.data() + size_t(i) * d, q.data(), d), id_rank[i]));
    std::sort(keys.begin(), keys.end());
    keys.resize(std::min<size_t>(keys.size(), size_t(L)));
    return keys;
  };
  std::vector<int> all;
  for (int i = 0; i < n; ++i)
    if (elig[i]) all.push_back(i);
  const auto got = exact_top(list), want = exact_top(all);
  EXPECT(got == want, "fp8 selection n=%d d=%d k=%d eligible=%.2f kind=%d: the top %d differs from the bf16 scan's (%zu listed)", n, d,
         k, double(eligible), kind, L, list.size());
  listed += list.size();
  ++checked;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2;
  tile_cases();
  key_cases();
  // order key: score descending, id rank ascending, NaN as −inf, −0 == +0
  EXPECT(order_key(1.f, 9) < order_key(0.5f, 1) && order_key(0.f, 1) < order_key(-0.f, 2) && order_key(-0.f, 1) < order_key(0.f, 2) &&
             order_key(-1.f, 0) < order_key(std::nanf(""), 0) && key_score(order_key(0.25f, 3)) == 0.25f,
         "order keys");
  std::mt19937_64 rng(20261207);
  const int before = g_fail;
  int checked = 0;
  for (int r = 0; r < rounds; ++r) {
    for (int n : {0, 1, 7, 255, 256, 1000, 4097})
      for (int k : {1, 10, 100, 1000})
        for (int cap : {0, 1, 2})
          for (bool runner : {false, true})
            epilogue_case(rng, n, k, cap, runner, n < 100 ? 3 : 40, (k + n + cap) % 3 == 0 ? 50 : 0, checked);
    epilogue_case(rng, 16384, 1000, 0, true, 800, 0, checked);
    epilogue_case(rng, 16384, 1000, 1, true, 300, 200, checked);   // the cap passes over many: the old path's fallback round
    epilogue_case(rng, 16384, 10000, 2, true, 2000, 0, checked);
    epilogue_case(rng, 9000, 100, 3, false, 5, 20, checked);       // five advertisers: the walk runs out
  }
  std::printf("epilogue selection vs CPU funnel: %d cases, %s\n", checked, g_fail > before ? "FAIL" : "ok");
  const int before_onepass = g_fail;
  int onepass = 0;
  for (int r = 0; r < rounds; ++r) {
    for (Order o : {Order::kRandom, Order::kAscending, Order::kDescending, Order::kTied})
      for (int n : {0, 1, 255, 257, 5000, 40000})
        for (int k : {1, 100, 1000})
          for (int blocks : {1, 3, 64})
            onepass_case(rng, n, k, blocks, o, n > 1000 ? 0.7f : 1.f, onepass);
    onepass_case(rng, 100000, 2047, 264, Order::kRandom, 0.9f, onepass);    // the largest L, an H100's grid
    onepass_case(rng, 100000, 2047, 7, Order::kDescending, 0.9f, onepass);  // every step compacts
    onepass_case(rng, 30000, 1000, 16, Order::kRandom, 0.02f, onepass);     // fewer eligible than L
  }
  std::printf("one-pass retrieval top-L vs CPU funnel: %d cases, %s\n", onepass, g_fail > before_onepass ? "FAIL" : "ok");
  fp8_codec_cases();
  int intervals = 0;
  fp8_interval_cases(rng, intervals);
  const int before_fp8 = g_fail;
  int fp8 = 0;
  size_t listed = 0, ads = 0;
  for (int r = 0; r < rounds; ++r)
    for (int kind = 0; kind <= 5; ++kind)
      for (int k : {1, 100, 1000})
        for (float eligible : {0.8f, 0.05f}) {  // 0.05: fewer eligible ads than L = 1,000
          const int n = kind == 2 ? 6000 : 12000;
          fp8_selection_case(rng, n, 128, k, eligible, kind, fp8, listed);
          ads += size_t(n);
        }
  if (const char* big = std::getenv("FP8_BIG")) {  // one corpus of FP8_BIG random ads, 80% eligible, K = 100 and 1,000: how many are rescored
    for (int k : {100, 1000}) {
      size_t l = 0;
      fp8_selection_case(rng, std::atoi(big), 128, k, 0.8f, 0, fp8, l);
      std::printf("  fp8 %s ads, K = %d: %zu rescored (%.2f%%)\n", big, k, l, 100.0 * double(l) / std::atof(big));
    }
  }
  std::printf("fp8 retrieval with exact rescoring vs the bf16 scan: %d cases, %s (%.1f%% of the ads rescored)\n", fp8,
              g_fail > before_fp8 ? "FAIL" : "ok", 100.0 * double(listed) / double(ads ? ads : 1));
  std::printf("plan_check: %d failures\n", g_fail);
  return g_fail ? 1 : 0;
}
