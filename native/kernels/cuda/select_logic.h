// The selection's arithmetic that the device and the host share, in plain C++ (no CUDA headers):
// the order key, and the single-CTA epilogue's selection (ADRANK_CUDA_EPILOGUE) written once over
// an executor. On the device the executor is one thread block (each step a block-strided loop
// followed by a barrier: epilogue.cu); on the host it is a plain loop, which is how the CPU tests
// run the same steps against the CPU funnel (native/kernels/cuda/harness/plan_check.cc, test/23).
#pragma once
#include <cstdint>
#include <cstring>

#include "engine/host_device.h"

namespace adrank::cuda {

ADRANK_HOST_DEVICE unsigned float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
ADRANK_HOST_DEVICE float bits_float(unsigned u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Order key: (~orderable(score) << 32) | id_rank; ascending = score descending, then ad id ascending.
ADRANK_HOST_DEVICE unsigned long long order_key(float score, int id_rank) {
  unsigned bits = float_bits(score);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu)) bits = 0xff800000u;  // NaN → −inf
  if (bits == 0x80000000u) bits = 0;  // −0 orders as +0 (ties by ad id, as on the CPU)
  const unsigned o = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<unsigned long long>(~o) << 32) | static_cast<unsigned>(id_rank);
}
ADRANK_HOST_DEVICE float key_score(unsigned long long key) {
  const unsigned o = ~static_cast<unsigned>(key >> 32);
  const unsigned bits = (o & 0x80000000u) ? (o ^ 0x80000000u) : ~o;
  return bits_float(bits);
}

// ---- the single-CTA epilogue's selection ---------------------------------------------------------

constexpr unsigned long long kEpiMaxKey = ~0ull;
constexpr int kEpiMaxItems = 16384;  // candidates one block selects from (a power of two)
constexpr int kEpiChunks = 1024;     // scan chunks (the device block's thread count)

// Shared-memory bytes the epilogue needs for a bucket of p (a power of two) items: keys (8 B), then
// positions / qualifier flags (4 B), then the chunk sums of the scan (2 × kEpiChunks ints).
constexpr int epilogue_smem_bytes(int p) { return p * 12 + 2 * kEpiChunks * 4; }

struct EpiParams {
  int n = 0;            // eligible candidates, positions [0, n)
  int p = 0;            // the bucket: a power of two >= n, <= kEpiMaxItems
  int k = 0;            // winners wanted
  int cap = 0;          // per-advertiser cap, 0 = none
  bool runner = false;  // find the runner-up (priced)
};
struct EpiShared {  // working arrays (shared memory on the device), p items each, chunk sums 2 × kEpiChunks
  unsigned long long* keys;
  int* aux;
  int* chunk;
};
struct EpiOut {  // what the result block is written from
  int* sorted_pos;  // [p] position of the t-th item in the order
  int* win;         // [k] winner w → sorted index t
  int n_win = 0;
  int runner = -1;  // sorted index of the runner-up, or -1
  long long capped = 0;
};

// Bitonic sort of keys[0, p) ascending (p a power of two), carrying vals[] along when not null.
template <class X>
ADRANK_HOST_DEVICE void bitonic_sort(X& x, unsigned long long* keys, int* vals, int p) {
  for (int k = 2; k <= p; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1)
      x.for_each(p, [&](int i) {
        const int l = i ^ j;
        if (l <= i) return;
        const bool up = (i & k) == 0;
        const unsigned long long a = keys[i], b = keys[l];
        if (up ? a > b : a < b) {
          keys[i] = b;
          keys[l] = a;
          if (vals) {
            const int t = vals[i];
            vals[i] = vals[l];
            vals[l] = t;
          }
        }
      });
}

// Exact selection over the n eligible candidates: score descending, ad id ascending, the greedy
// per-advertiser cap (funnel.cuh: an item is taken iff its rank within its advertiser is < cap and
// fewer than K were taken before it), the runner-up, and `capped` (items the walk passed over before
// it stopped). `src.key(i)` is candidate i's order key and `src.group(i)` its advertiser (< 2^32).
// X: x.for_each(n, f) runs f(i) for i in [0, n), all done before it returns; x.single(f) runs f once.
// out.n_win, runner and capped are written inside x.single (by one thread on the device).
template <class X, class Src>
ADRANK_HOST_DEVICE void epilogue_select(X& x, const EpiParams& P, const Src& src, EpiShared sh, EpiOut& out) {
  const int p = P.p, n = P.n;
  unsigned long long* keys = sh.keys;
  int* aux = sh.aux;
  x.for_each(p, [&](int i) {
    keys[i] = i < n ? src.key(i) : kEpiMaxKey;
    aux[i] = i;
  });
  bitonic_sort(x, keys, aux, p);  // the keys are unique (id rank in the low bits) below n
  x.for_each(p, [&](int t) { out.sorted_pos[t] = aux[t]; });
  // qualifiers: with a cap, sort (advertiser, sorted index) and take rank-in-group < cap
  if (P.cap > 0) {
    x.for_each(p, [&](int t) { keys[t] = t < n ? (static_cast<unsigned long long>(src.group(out.sorted_pos[t])) << 32) | unsigned(t) : kEpiMaxKey; });
    bitonic_sort(x, keys, static_cast<int*>(nullptr), p);
    x.for_each(p, [&](int u) {
      if (u >= n) return;
      const bool q = u < P.cap || (keys[u - P.cap] >> 32) != (keys[u] >> 32);
      aux[unsigned(keys[u])] = q ? 1 : 0;
    });
    x.for_each(p - n, [&](int i) { aux[n + i] = 0; });
  } else {
    x.for_each(p, [&](int t) { aux[t] = t < n ? 1 : 0; });
  }
  // exclusive scan of the flags in aux: chunk sums, a Hillis-Steele scan of the sums, then each chunk
  const int per = (p + kEpiChunks - 1) / kEpiChunks;
  int* sums = sh.chunk;
  int* tmp = sh.chunk + kEpiChunks;
  x.for_each(kEpiChunks, [&](int c) {
    int s = 0;
    for (int i = c * per; i < (c + 1) * per && i < p; ++i) s += aux[i];
    sums[c] = s;
  });
  for (int d = 1; d < kEpiChunks; d <<= 1) {
    x.for_each(kEpiChunks, [&](int c) { tmp[c] = sums[c] + (c >= d ? sums[c - d] : 0); });
    x.for_each(kEpiChunks, [&](int c) { sums[c] = tmp[c]; });
  }
  // sums[c] is now inclusive; walk each chunk: a qualifier with rank r < K wins slot r, rank K is the runner-up
  x.for_each(kEpiChunks, [&](int c) {
    int r = c ? sums[c - 1] : 0;
    for (int t = c * per; t < (c + 1) * per && t < p; ++t) {
      if (!aux[t]) continue;
      if (r < P.k) out.win[r] = t;
      if (r == P.k) tmp[0] = t;  // at most one item has rank K
      ++r;
    }
  });
  x.single([&] {
    const int total = sums[kEpiChunks - 1];
    const int nw = total < P.k ? total : P.k;
    out.n_win = nw;
    out.runner = P.runner && total > P.k ? tmp[0] : -1;
    // the walk stops after the K-th winner, or at the end: everything before that which did not
    // qualify was capped
    const int stop = P.k == 0 ? 0 : total >= P.k ? out.win[P.k - 1] + 1 : n;
    out.capped = (long long)(stop - nw);
  });
}


// ---- the one-pass retrieval's top-L buffer (ADRANK_CUDA_RETRIEVE_ONEPASS, retrieve.cu) -------------
//
// An uncapped Retrieve, and RetrieveAndRank's retrieval stage, want the L best order keys of all
// eligible ads (ascending keys: best first). Each block of the scan keeps a buffer of (key, row)
// items in shared memory. Per step of kTopLStep ads it appends every eligible ad whose key is not
// above its bound, the smaller of
//   - its own threshold: the L-th best key it has kept, once it has kept L (an ad behind L kept ads
//     is behind L ads of the corpus, so it is not among the L best), and
//   - the global threshold G: the smallest of the blocks' thresholds (atomicMin), for the same
//     reason.
// The L-th kept item itself may be among the L best, so "not above". When the buffer could
// overflow in the next step it is compacted: sorted, cut to its L best, the threshold set to the
// L-th. At the end each block writes its items not above G (at most L) to global memory, and the
// last block to finish merges them with the same buffer. The merged top L is exact: no ad among the
// L best is ever above either bound, and keys are unique (the id rank is in the low bits), so no
// tie is cut.

constexpr int kTopLStep = 256;        // ads a block scores per step (its thread count)
constexpr int kTopLMaxL = 2048;       // largest L (a power of two >= K + 1) the one-pass scan takes

// The buffer's capacity for a bound of `lcap` (a power of two >= L): room for the L kept items and
// one more step, rounded up to a power of two (the bitonic sort's size).
ADRANK_HOST_DEVICE int topl_buffer_cap(int lcap) {
  int c = 1;
  while (c < lcap + kTopLStep) c <<= 1;
  return c;
}
// Shared-memory bytes of the buffer (keys 8 B, rows 4 B).
ADRANK_HOST_DEVICE int topl_buffer_bytes(int lcap) { return topl_buffer_cap(lcap) * 12; }

struct TopLBuffer {
  unsigned long long* keys;  // [cap]
  int* rows;                 // [cap]
  int cap;                   // a power of two
};

// Sorts the n buffered items ascending (pads the rest with the max key), keeps the best `keep`:
// returns how many remain, min(n, keep). When n >= keep, keys[keep - 1] is the new threshold.
template <class X>
ADRANK_HOST_DEVICE int topl_compact(X& x, TopLBuffer b, int n, int keep) {
  x.for_each(b.cap - n, [&](int i) {
    b.keys[n + i] = kEpiMaxKey;
    b.rows[n + i] = -1;
  });
  bitonic_sort(x, b.keys, b.rows, b.cap);
  return n < keep ? n : keep;
}

// Whether a buffer holding n items must be compacted before the next step can append.
ADRANK_HOST_DEVICE bool topl_must_compact(const TopLBuffer& b, int n) { return n > b.cap - kTopLStep; }

}  // namespace adrank::cuda
