// Standalone validation and timing harness for the CPU kernels (gemm.cc, parallel.cc).
// Built and run by scripts/kernel-check.sh (g++ -O3, no -march: the kernels pick their own ISA).
//
//   kernel_check [--quick] [--bench] [--all] [--stream] [--cputime] [--threads N]
//     (default)  validate every ISA path against a float64 reference, check the thread pool,
//                then time the demo model's shapes at m = 1000 (1 and N threads), then --stream
//     --quick    validation only
//     --bench    timing only (with --stream: both timings)
//     --all      time every demo shape at every m in {1, 64, 256, 1000, 10000}
//     --stream   time only the small-m weight stream: a STREAM-style read of 512 MiB (1 and N
//                threads), then the DCN shape at m = 1, 4, 10, 16 on the fp32 path and every bf16
//                kernel, W from DRAM, as GB/s of weights and % of that read bandwidth (also run by
//                default)
//     --cputime  one-thread timings in thread CPU time (for a loaded machine; wall time otherwise)
//
// Every bf16 kernel the CPU runs (avx512bf16, avx512, avx2) is validated too: against the float64
// reference of the bf16-rounded operands at the fp32 tolerance (the arithmetic), and against the
// float64 reference of the fp32 operands within 2^-7 (the widening avx512 and avx2: 2^-8) · Σ|a·w|
// per element (the rounding, bounded); a widening kernel bitwise against its fp32 path on the
// rounded W. Then every m from 1 to 64 on odd n and k, every path. The timing table has a column
// for the bf16 kernel in use.
//
// Exit status 0 when every check passes.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

using adrank::cpu::Epilogue;
using adrank::cpu::PackedMatrix;
using adrank::cpu::ThreadPool;

namespace {

int failures = 0;
int64_t clamped = 0;  // ReLU outputs checked to be exactly 0

void check(bool ok, const std::string& what) {
  if (!ok) {
    failures++;
    std::printf("FAIL  %s\n", what.c_str());
  }
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// --cputime: one-thread timings in this thread's CPU time (CLOCK_THREAD_CPUTIME_ID) instead of wall
// time, so a loaded machine's waits for a core do not count (caches are still shared). Multi-thread
// timings stay wall time.
bool g_cputime = false;
double timer_s(bool one_thread) {
  if (!(g_cputime && one_thread)) return now_s();
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

std::vector<float> random_vec(std::mt19937& rng, size_t n, float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// ---- GEMM validation ---------------------------------------------------------------------------

struct Case {
  int m, n, k;
  int lda_pad, ldc_pad;  // lda = k + lda_pad, ldc = n + ldc_pad (ld_mul/ld_add = n + ldc_pad + 3)
  bool bias, relu, mul, add;
};

std::string describe(const Case& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "m=%d n=%d k=%d lda+%d ldc+%d%s%s%s%s", c.m, c.n, c.k, c.lda_pad, c.ldc_pad,
                c.bias ? " bias" : "", c.relu ? " relu" : "", c.mul ? " mul" : "", c.add ? " add" : "");
  return buf;
}

// The CPU reference: c = act(Σ_p a[i,p] w[j,p] + bias[j]) · mul[i,j] + add[i,j] in float64.
std::vector<double> reference(const Case& c, const std::vector<float>& a, int64_t lda, const std::vector<float>& w,
                              const std::vector<float>& bias, const std::vector<float>& mul,
                              const std::vector<float>& add, int64_t ldx) {
  std::vector<double> out(size_t(c.m) * c.n);
  for (int i = 0; i < c.m; i++)
    for (int j = 0; j < c.n; j++) {
      double acc = 0;
      for (int p = 0; p < c.k; p++) acc += double(a[i * lda + p]) * w[int64_t(j) * c.k + p];
      if (c.bias) acc += bias[j];
      if (c.relu) acc = std::max(acc, 0.0);
      if (c.mul) acc *= mul[i * ldx + j];
      if (c.add) acc += add[i * ldx + j];
      out[size_t(i) * c.n + j] = acc;
    }
  return out;
}

// Runs one case on one ISA path with 1 and `threads` threads; checks the result against the
// float64 reference (|err| <= atol + rtol |ref|), that padding in C is untouched, and that the
// threaded result is bitwise equal to the serial one. Returns the max abs error.
double run_case(const char* isa, const Case& c, ThreadPool& pool, std::mt19937& rng) {
  const int64_t lda = c.k + c.lda_pad, ldc = c.n + c.ldc_pad, ldx = c.n + c.ldc_pad + 3;
  const float wscale = 1.f / std::sqrt(float(std::max(c.k, 1)));
  auto a = random_vec(rng, size_t(c.m) * lda, 1.f);
  auto w = random_vec(rng, size_t(c.n) * c.k, wscale);
  auto bias = random_vec(rng, c.n, 0.5f);
  auto mul = random_vec(rng, size_t(c.m) * ldx, 1.f);
  auto add = random_vec(rng, size_t(c.m) * ldx, 1.f);
  PackedMatrix pw(w.data(), c.n, c.k);
  Epilogue ep;
  if (c.bias) ep.bias = bias.data();
  ep.relu = c.relu;
  if (c.mul) ep.mul = mul.data(), ep.ld_mul = ldx;
  if (c.add) ep.add = add.data(), ep.ld_add = ldx;

  const float sentinel = 12345.f;
  std::vector<float> c1(size_t(c.m) * ldc, sentinel), c2(size_t(c.m) * ldc, sentinel);
  adrank::cpu::gemm_on(isa, a.data(), c.m, lda, pw, c1.data(), ldc, ep, nullptr);
  adrank::cpu::gemm_on(isa, a.data(), c.m, lda, pw, c2.data(), ldc, ep, &pool);
  auto ref = reference(c, a, lda, w, bias, mul, add, ldx);

  const double atol = 1e-4, rtol = 1e-4;
  double max_err = 0;
  bool ok = true, pad_ok = true, clamp_ok = true;
  for (int i = 0; i < c.m; i++) {
    for (int j = 0; j < c.n; j++) {
      double r = ref[size_t(i) * c.n + j], got = c1[i * ldc + j];
      double err = std::fabs(got - r);
      max_err = std::max(max_err, err);
      if (!(err <= atol + rtol * std::fabs(r))) ok = false;
      // ReLU output: where the reference clamped, the kernel must give exactly 0.
      if (c.relu && !c.mul && !c.add && r == 0) {
        clamped++;
        clamp_ok = clamp_ok && got == 0.f;
      }
    }
    for (int64_t j = c.n; j < ldc; j++) pad_ok = pad_ok && c1[i * ldc + j] == sentinel;
  }
  check(clamp_ok, std::string(isa) + " relu clamps to exactly 0 " + describe(c));
  check(ok, std::string(isa) + " matches reference " + describe(c) + " max_err=" + std::to_string(max_err));
  check(pad_ok, std::string(isa) + " leaves ldc padding untouched " + describe(c));
  check(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0,
        std::string(isa) + " threaded == serial bitwise " + describe(c));
  return max_err;
}

float round_bf16(float x) {
  const uint32_t u = uint32_t(adrank::cpu::to_bf16(x)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// One bf16 kernel on one case: (1) against the float64 reference of the bf16-rounded operands at
// the fp32 tolerance (only the fp32 accumulation differs; avx512bf16 rounds A and W, the widening
// avx512 and avx2 only W), (2) against the float64 reference of the fp32 operands within the
// rounding bound 2^-7 Σ_p |a w| (widening: 2^-8) (· |mul|) + 1e-5, (3) ldc padding, exact ReLU
// zeros, threaded == serial bitwise, (4) widening: bitwise its fp32 path on the rounded W. Returns
// the max abs error against the fp32 reference.
double run_case_bf16(const char* kernel, const Case& c, ThreadPool& pool, std::mt19937& rng, double* max_rel) {
  const bool round_a = std::strcmp(kernel, "avx512bf16") == 0;
  const int bound_exp = round_a ? -7 : -8;
  const int64_t lda = c.k + c.lda_pad, ldc = c.n + c.ldc_pad, ldx = c.n + c.ldc_pad + 3;
  const float wscale = 1.f / std::sqrt(float(std::max(c.k, 1)));
  auto a = random_vec(rng, size_t(c.m) * lda, 1.f);
  auto w = random_vec(rng, size_t(c.n) * c.k, wscale);
  auto bias = random_vec(rng, c.n, 0.5f);
  auto mul = random_vec(rng, size_t(c.m) * ldx, 1.f);
  auto add = random_vec(rng, size_t(c.m) * ldx, 1.f);
  PackedMatrix pw(w.data(), c.n, c.k);
  pw.pack_bf16();
  Epilogue ep;
  if (c.bias) ep.bias = bias.data();
  ep.relu = c.relu;
  if (c.mul) ep.mul = mul.data(), ep.ld_mul = ldx;
  if (c.add) ep.add = add.data(), ep.ld_add = ldx;

  const float sentinel = 12345.f;
  std::vector<float> c1(size_t(c.m) * ldc, sentinel), c2(size_t(c.m) * ldc, sentinel), c3(size_t(c.m) * ldc, sentinel);
  adrank::cpu::gemm_bf16_on(kernel, a.data(), c.m, lda, pw, c1.data(), ldc, ep, nullptr);
  adrank::cpu::gemm_bf16_on(kernel, a.data(), c.m, lda, pw, c2.data(), ldc, ep, &pool);
  auto ar = a, wr = w;
  if (round_a)
    for (auto& x : ar) x = round_bf16(x);
  for (auto& x : wr) x = round_bf16(x);
  if (std::strcmp(kernel, adrank::cpu::gemm_bf16_kernel()) == 0) {
    adrank::cpu::gemm(a.data(), c.m, lda, pw, c3.data(), ldc, ep, nullptr);  // dispatches to this kernel
    check(std::memcmp(c1.data(), c3.data(), c1.size() * sizeof(float)) == 0,
          std::string("gemm() takes the ") + kernel + " bf16 kernel for a bf16-packed matrix " + describe(c));
  }
  if (!round_a) {  // a widening kernel is named by its fp32 path
    PackedMatrix pr(wr.data(), c.n, c.k);
    adrank::cpu::gemm_on(kernel, a.data(), c.m, lda, pr, c3.data(), ldc, ep, nullptr);
    check(std::memcmp(c1.data(), c3.data(), c1.size() * sizeof(float)) == 0,
          std::string("bf16 ") + kernel + " == fp32 " + kernel + " on the bf16-rounded W, bitwise " + describe(c));
  }
  auto ref_rounded = reference(c, ar, lda, wr, bias, mul, add, ldx);
  auto ref = reference(c, a, lda, w, bias, mul, add, ldx);

  double max_err = 0;
  bool ok_arith = true, ok_bound = true, pad_ok = true, clamp_ok = true;
  for (int i = 0; i < c.m; i++) {
    for (int j = 0; j < c.n; j++) {
      const double got = c1[i * ldc + j], rr = ref_rounded[size_t(i) * c.n + j], r = ref[size_t(i) * c.n + j];
      if (!(std::fabs(got - rr) <= 1e-4 + 1e-4 * std::fabs(rr))) ok_arith = false;
      double sabs = 0;
      for (int p = 0; p < c.k; p++) sabs += std::fabs(double(a[i * lda + p]) * w[int64_t(j) * c.k + p]);
      const double scale = c.mul ? std::fabs(mul[i * ldx + j]) : 1.0;
      const double err = std::fabs(got - r);
      max_err = std::max(max_err, err);
      if (sabs * scale > 1e-2) *max_rel = std::max(*max_rel, err / (sabs * scale));
      if (!(err <= std::ldexp(sabs, bound_exp) * scale + 1e-5)) ok_bound = false;
      if (c.relu && !c.mul && !c.add && rr == 0) clamp_ok = clamp_ok && got == 0.f;
    }
    for (int64_t j = c.n; j < ldc; j++) pad_ok = pad_ok && c1[i * ldc + j] == sentinel;
  }
  const std::string k = std::string("bf16 ") + kernel + " ";
  check(ok_arith, k + "matches the reference of the rounded operands " + describe(c));
  check(ok_bound, k + "within 2^" + std::to_string(bound_exp) + " sum|a w| of the fp32 reference " + describe(c) +
                      " max_err=" + std::to_string(max_err));
  check(clamp_ok, k + "relu clamps to exactly 0 " + describe(c));
  check(pad_ok, k + "leaves ldc padding untouched " + describe(c));
  check(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0, k + "threaded == serial bitwise " + describe(c));
  return max_err;
}

// Every m from 1 to 64 and 96, 128, 129, 160 (the stream order up to kStreamRows = 128, the
// blocked order above) on odd n and k, on every fp32 path and bf16 kernel, serial and on the pool:
// each against the float64 reference (fp32: 1e-4; bf16: as run_case_bf16), and every row bitwise
// equal to the same row of the m = 160 product, which runs in the blocked order (a row's result
// does not depend on m, the order or the split).
void validate_small_m(ThreadPool& pool) {
  double t0 = now_s();
  std::mt19937 rng(4321);
  const int shapes[][2] = {{37, 53}, {517, 515}};  // 517 × 515: over 2^18 weights, so split over the pool
  int checked = 0;
  for (auto& nk : shapes) {
    const int n = nk[0], k = nk[1], M = 160;
    static_assert(M > adrank::cpu::kStreamRows, "the reference product must run in the blocked order");
    const int64_t lda = k + 3, ldc = n + 1;
    auto a = random_vec(rng, size_t(M) * lda, 1.f);
    auto w = random_vec(rng, size_t(n) * k, 1.f / std::sqrt(float(k)));
    auto bias = random_vec(rng, n, 0.5f);
    auto x = random_vec(rng, size_t(M) * ldc, 1.f);
    std::vector<float> wr(w);
    for (auto& v : wr) v = round_bf16(v);
    std::vector<float> ar(a);
    for (auto& v : ar) v = round_bf16(v);
    PackedMatrix pw(w.data(), n, k);
    pw.pack_bf16();
    // Reference sums over all 64 rows, once: exact, rounded W, rounded A and W; and Σ|a w|.
    std::vector<double> ref(size_t(M) * n), refw(size_t(M) * n), refaw(size_t(M) * n), sabs(size_t(M) * n);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < n; j++) {
        double s = 0, sw = 0, saw = 0, sa = 0;
        for (int p = 0; p < k; p++) {
          const double av = a[i * lda + p], wv = w[int64_t(j) * k + p];
          s += av * wv;
          sw += av * wr[int64_t(j) * k + p];
          saw += double(ar[i * lda + p]) * wr[int64_t(j) * k + p];
          sa += std::fabs(av * wv);
        }
        ref[size_t(i) * n + j] = s, refw[size_t(i) * n + j] = sw, refaw[size_t(i) * n + j] = saw, sabs[size_t(i) * n + j] = sa;
      }
    struct Path {
      std::string name;
      bool bf16;
      const char* id;
    };
    std::vector<Path> paths;
    for (const char* isa : adrank::cpu::gemm_isas_available()) paths.push_back({std::string(isa), false, isa});
    for (const char* kb : adrank::cpu::gemm_bf16_kernels_available()) paths.push_back({std::string("bf16 ") + kb, true, kb});
    for (const Path& path : paths) {
      const bool round_a = path.bf16 && std::strcmp(path.id, "avx512bf16") == 0;
      const std::vector<double>& want = !path.bf16 ? ref : round_a ? refaw : refw;
      std::vector<float> full;  // the m = M product
      std::vector<int> ms{M, 129, 128, 96};
      for (int m = 64; m >= 1; m--) ms.push_back(m);
      for (int m : ms) {
        // Epilogue by m: bias + ReLU, bias + mul (x), bias + mul + add (x, x), none.
        Epilogue ep;
        const int e = m % 4;
        if (e != 3) ep.bias = bias.data();
        ep.relu = e == 0;
        if (e == 1 || e == 2) ep.mul = x.data(), ep.ld_mul = ldc;
        if (e == 2) ep.add = x.data(), ep.ld_add = ldc;
        for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
          std::vector<float> c(size_t(m) * ldc, 12345.f), plain(size_t(m) * ldc, 12345.f);
          auto run = [&](const Epilogue& epi, float* out) {
            if (path.bf16) adrank::cpu::gemm_bf16_on(path.id, a.data(), m, lda, pw, out, ldc, epi, p);
            else adrank::cpu::gemm_on(path.id, a.data(), m, lda, pw, out, ldc, epi, p);
          };
          run(ep, c.data());
          run(Epilogue{}, plain.data());
          if (m == M && p == nullptr) full = plain;
          bool ok = true, same = true, pad = true;
          for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
              const size_t ij = size_t(i) * n + j;
              double r = want[ij];
              if (ep.bias) r += bias[j];
              if (ep.relu) r = std::max(r, 0.0);
              double scale = 1;
              if (ep.mul) r *= x[i * ldc + j], scale = std::fabs(x[i * ldc + j]);
              if (ep.add) r += x[i * ldc + j];
              const double got = c[i * ldc + j];
              ok = ok && std::fabs(got - r) <= 1e-4 + 1e-4 * std::fabs(r);
              if (path.bf16) {  // and against the exact reference within the rounding bound
                double e2 = ref[ij] + (ep.bias ? bias[j] : 0);
                if (ep.relu) e2 = std::max(e2, 0.0);
                if (ep.mul) e2 *= x[i * ldc + j];
                if (ep.add) e2 += x[i * ldc + j];
                ok = ok && std::fabs(got - e2) <= std::ldexp(sabs[ij], round_a ? -7 : -8) * scale + 1e-5;
              }
              same = same && std::memcmp(&plain[i * ldc + j], &full[i * ldc + j], sizeof(float)) == 0;
            }
            pad = pad && c[i * ldc + n] == 12345.f;
          }
          const std::string what = path.name + (p ? " pool" : " serial") + " m=" + std::to_string(m) + " n=" +
                                   std::to_string(n) + " k=" + std::to_string(k) + " epilogue " + std::to_string(e);
          check(ok, what + " matches the reference");
          check(same, what + " rows bitwise those of m=" + std::to_string(M));
          check(pad, what + " leaves ldc padding untouched");
          checked++;
        }
      }
    }
  }
  std::printf("small m   every m 1..64, 96, 128, 129, 160, n×k 37×53 and 517×515, every path, serial and pool: %d products  %.2f s\n", checked,
              now_s() - t0);
}

void validate_gemm(ThreadPool& pool) {
  std::mt19937 rng(1234);
  std::vector<Case> cases;
  // Edges: m = 1, m not a multiple of any micro-tile, n / k not multiples of 8 or 16, k = 0,
  // lda > k, ldc > n, every epilogue combination.
  const int ms[] = {1, 2, 5, 7, 12, 13, 25, 64, 97};
  const int nks[][2] = {{1, 1}, {3, 0}, {16, 16}, {17, 5}, {31, 33}, {33, 64}, {48, 7}, {100, 300}, {4, 128}, {356, 257}};
  for (int m : ms)
    for (auto& nk : nks)
      for (int e = 0; e < 4; e++) {
        Case c{m, nk[0], nk[1], (m + e) % 3 == 0 ? 0 : 5, e % 2 ? 7 : 0, e >= 1, e == 1 || e == 3, e >= 2, e == 3};
        cases.push_back(c);
      }
  // Larger shapes that cross the K block (256), the row block (240) and the column block (256),
  // with and without the thread pool's task split.
  cases.push_back({250, 300, 600, 3, 1, true, true, false, false});
  cases.push_back({241, 513, 257, 0, 0, true, false, true, true});
  cases.push_back({1, 2136, 164, 0, 0, true, true, false, false});
  cases.push_back({64, 356, 712, 0, 0, true, false, false, false});
  cases.push_back({37, 1536, 1536, 0, 0, true, false, true, true});
  cases.push_back({300, 4, 128, 0, 0, true, false, false, false});

  for (const char* isa : adrank::cpu::gemm_isas_available()) {
    double worst = 0;
    double t0 = now_s();
    clamped = 0;
    for (const Case& c : cases) worst = std::max(worst, run_case(isa, c, pool, rng));
    std::printf("gemm %-6s  %3zu cases  max abs err %.3g  (atol 1e-4, rtol 1e-4)  %lld ReLU zeros  %.2f s\n", isa,
                cases.size(), worst, (long long)clamped, now_s() - t0);
    check(clamped > 1000, std::string(isa) + " ReLU cases clamp something");
  }
  for (const char* kernel : adrank::cpu::gemm_bf16_kernels_available()) {
    double worst = 0, rel = 0;
    double t0 = now_s();
    for (const Case& c : cases) worst = std::max(worst, run_case_bf16(kernel, c, pool, rng, &rel));
    std::printf("gemm bf16 %-10s %3zu cases  max abs err vs fp32 reference %.3g, max err / sum|a w| %.3g (bound 2^%d)  %.2f s\n",
                kernel, cases.size(), worst, rel, std::strcmp(kernel, "avx512bf16") ? -8 : -7, now_s() - t0);
    check(worst > 1e-4, std::string("bf16 ") + kernel + " really rounds (differs from the fp32 reference somewhere)");
  }
  std::printf("gemm bf16 in use: %s (%s)\n", *adrank::cpu::gemm_bf16_kernel() ? adrank::cpu::gemm_bf16_kernel() : "none",
              adrank::cpu::gemm_bf16_reason());
  // gemm_on refuses a path it does not know.
  bool threw = false;
  try {
    float x = 0;
    PackedMatrix pw(&x, 1, 1);
    adrank::cpu::gemm_on("sse9", &x, 1, 1, pw, &x, 1, Epilogue{}, nullptr);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "gemm_on rejects an unknown ISA");
}

// ---- task grid --------------------------------------------------------------------------------

// The split of a parallel product into tasks (gemm.h TaskGrid): every row and column covered once,
// the threads' shares within one task of equal, and no more column blocks than the threads need.
void validate_task_grid() {
  int bad = 0;
  for (int threads : {2, 3, 4, 8, 16})
    for (int m : {1, 10, 16, 17, 32, 64, 100, 250, 256, 300, 1000, 4000})
      for (int n : {16, 48, 256, 356, 512, 1536, 2136})
        for (int mr : {6, 12}) {
          const int nr = mr == 12 ? 32 : 16;
          const adrank::cpu::TaskGrid g(m, n, 1536, mr, nr, 240, 1536, 256, threads, int64_t(1) << 20);
          const int64_t tiles = adrank::cpu::ceil_div(n, nr), rb = adrank::cpu::ceil_div(m, g.mc);
          bool ok = g.tasks == rb * g.cb && g.mc % mr == 0 && g.cb * g.ncu >= tiles && (g.cb - 1) * g.ncu < tiles && rb * g.mc >= m;
          // the time of the product in tile units (rounds of tasks × tiles per task) is within one
          // task of a perfect split, with no more column blocks than the threads need (beyond the
          // blocks of at most max_cols): each extra column block packs A again
          if (g.parallel) {
            const int64_t makespan = adrank::cpu::ceil_div(g.tasks, threads) * g.ncu;
            const int64_t perfect = adrank::cpu::ceil_div(rb * tiles, threads);
            ok = ok && makespan <= perfect + g.ncu && g.cb <= std::max<int64_t>(adrank::cpu::ceil_div(n, 1536), threads);
          }
          if (!ok && bad++ < 5)
            std::printf("  task grid m=%d n=%d mr=%d threads=%d: %lld tasks (%lld row x %lld column blocks of %lld tiles), parallel %d\n", m, n, mr,
                        threads, (long long)g.tasks, (long long)rb, (long long)g.cb, (long long)g.ncu, int(g.parallel));
        }
  check(bad == 0, "task grid: tasks cover C once, within one task of a perfect split, no more column blocks than threads");
  std::printf("grid      task splits checked\n");
}

// The CPU backend's candidate chunks (parallel.h row_chunks): every row in one chunk, none over
// the bound, one chunk up to whole_upto rows; above it equal chunks (the last at most a row per
// chunk short), each of at least min_rows, and as many as the threads where the rows allow.
void validate_row_chunks() {
  int bad = 0;
  for (int threads : {1, 2, 3, 4, 8, 16})
    for (int64_t count = 1; count <= 5000; count += count < 300 ? 1 : 37) {
      const adrank::cpu::RowChunks p = adrank::cpu::row_chunks(count, threads, 256, 32, 16);
      const int64_t last = count - p.rows * (p.chunks - 1);
      bool ok = p.rows >= 1 && p.rows <= 256 && p.chunks == adrank::cpu::ceil_div(count, p.rows);
      if (count <= 32) ok = ok && p.chunks == 1;
      else ok = ok && p.rows - last < p.chunks && p.rows >= 16 && p.chunks >= std::min<int64_t>(threads, count / 16);
      if (!ok && bad++ < 5)
        std::printf("  row chunks: %lld rows on %d threads: %lld chunks of %lld rows\n", (long long)count, threads, (long long)p.chunks, (long long)p.rows);
    }
  check(bad == 0, "row chunks: every row once, none over the bound, equal chunks of at least 16 rows, one per thread where the rows allow");
  std::printf("chunks    forward row chunks checked\n");
}

// ---- ThreadPool checks -------------------------------------------------------------------------

// Once with workers that sleep between jobs (spin 0) and once with the default spin: the same
// guarantees either way.
void validate_pool(int spin_us) {
  double t0 = now_s();
  {
    ThreadPool pool(3, spin_us);
    check(pool.size() == 3, "pool size");
    // Every index visited exactly once, chunks respect the grain.
    for (int64_t n : {1, 2, 7, 100, 1000, 100003}) {
      for (int64_t grain : {1, 3, 64, 5000}) {
        std::vector<std::atomic<int>> hits(n);
        std::atomic<bool> small_chunk{false};
        pool.parallel_for(
            n,
            [&](int64_t b, int64_t e) {
              if (e - b < grain && e != n) small_chunk = true;
              for (int64_t i = b; i < e; i++) hits[i]++;
            },
            grain);
        bool once = true;
        for (auto& h : hits) once = once && h.load() == 1;
        check(once, "parallel_for visits each index once n=" + std::to_string(n) + " grain=" + std::to_string(grain));
        check(!small_chunk, "parallel_for chunks >= grain n=" + std::to_string(n));
      }
    }
    pool.parallel_for(0, [&](int64_t, int64_t) { check(false, "n = 0 calls nothing"); });

    // Exceptions are rethrown in the caller and the pool stays usable.
    bool caught = false;
    try {
      pool.parallel_for(1000, [](int64_t b, int64_t) {
        if (b >= 500) throw std::runtime_error("boom");
      });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "boom";
    }
    check(caught, "exception from fn rethrown in caller");
    std::atomic<int64_t> sum{0};
    pool.parallel_for(1000, [&](int64_t b, int64_t e) { sum += e - b; });
    check(sum == 1000, "pool usable after an exception");

    // Many concurrent callers (more than workers), with nested calls, all complete.
    std::atomic<int64_t> total{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 6; t++)
      callers.emplace_back([&] {
        for (int rep = 0; rep < 200; rep++)
          pool.parallel_for(64, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; i++)
              pool.parallel_for(4, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
          });
      });
    for (auto& th : callers) th.join();
    check(total == 6 * 200 * 64 * 4, "concurrent and nested callers all complete");
  }
  // Construction and destruction without any job; default size.
  { ThreadPool idle(4, spin_us); }
  { ThreadPool dflt; check(dflt.size() >= 1, "default pool size"); }

  // Round trip of a job that needs both threads: each of the 2 chunks waits (up to 2 ms) until
  // the other has started, so the time includes waking the sleeping worker.
  ThreadPool pool2(2, spin_us);
  const int reps = 500;
  double t1 = now_s();
  for (int r = 0; r < reps; r++) {
    std::atomic<int> started{0};
    pool2.parallel_for(2, [&](int64_t, int64_t) {
      started++;
      for (double t = now_s(); started.load() < 2 && now_s() - t < 2e-3;) {
      }
    });
  }
  double per = (now_s() - t1) / reps;
  std::printf("pool      spin %d us: checks done %.2f s; parallel_for round trip needing the worker %.1f us\n", spin_us, now_s() - t0,
              per * 1e6);
}

// ---- timing ------------------------------------------------------------------------------------

// Clock of this core, from a chain of dependent integer adds (1 cycle each).
double measure_ghz() {
#if defined(__x86_64__)
  const int64_t iters = 50'000'000;
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    int64_t n = iters, x = 0;
    double t0 = timer_s(true);
    asm volatile(
        "1:\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "dec %1\n\tjnz 1b"
        : "+r"(x), "+r"(n));
    best = std::max(best, 8.0 * iters / (timer_s(true) - t0) / 1e9);
  }
  return best;
#else
  return 0;
#endif
}

struct Shape {
  int n, k;
  const char* what;
};

const Shape kDemo[] = {{2136, 164, "mask 1st"}, {356, 712, "mask 2nd"}, {512, 356, "projection"},
                       {1536, 1536, "DCN"},     {256, 1536, "MLP 1"},   {128, 256, "MLP 2"},
                       {4, 128, "heads"}};

// The fp32 FMA rate of one core on an ISA path, measured: 12 (avx2) or 24 (avx512) independent FMA
// chains in registers, best of 3. FLOP per second. Zen 4: 32 FLOP/cycle on avx2 and avx512 (512-bit
// FMAs issue as two halves); Zen 5 and Intel server cores with two 512-bit FMA units: 64 on avx512.
#if defined(__x86_64__)
#define ADRANK_FMA_RATE(V, SET, FMA, LANES, N)                                           \
  double best = 0;                                                                      \
  volatile float seed = 0.999f;                                                         \
  for (int rep = 0; rep < 3; rep++) {                                                   \
    V acc[N];                                                                             \
    for (int i = 0; i < N; i++) acc[i] = SET(float(i) * 1e-3f);                        \
    const V b = SET(seed), c = SET(1e-6f);                                              \
    const int64_t iters = 20'000'000;                                                   \
    const double t0 = timer_s(true);                                                    \
    for (int64_t it = 0; it < iters; it++) {                                            \
      /* unrolled, the chains stay in registers (else GCC swaps the loops: chains in memory) */ \
      _Pragma("GCC unroll 32") for (int i = 0; i < N; i++) acc[i] = FMA(acc[i], b, c);  \
    }                                                                                   \
    const double dt = timer_s(true) - t0;                                               \
    float sink[LANES], total = 0;                                                       \
    for (int i = 0; i < N; i++) {                                                       \
      std::memcpy(sink, &acc[i], sizeof sink);                                          \
      total += sink[0];                                                                 \
    }                                                                                   \
    if (total == 12345.f) std::printf(" "); /* the chains are used */                   \
    best = std::max(best, 2.0 * LANES * N * double(iters) / dt);                       \
  }                                                                                     \
  return best;
__attribute__((target("avx2,fma"))) double fma_rate_avx2() { ADRANK_FMA_RATE(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8, 12) }
__attribute__((target("avx512f"))) double fma_rate_avx512() { ADRANK_FMA_RATE(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16, 24) }
#undef ADRANK_FMA_RATE
#endif

double measure_peak(const char* isa) {
#if defined(__x86_64__)
  if (!std::strcmp(isa, "avx512")) return fma_rate_avx512();
  if (!std::strcmp(isa, "avx2")) return fma_rate_avx2();
#endif
  return 0;
}

void bench(bool all, int threads) {
  const char* isa = adrank::cpu::gemm_isa();
  const double ghz = measure_ghz();
  // The FMA rate of the path in use, measured (not assumed: 32 or 64 FLOP/cycle on AVX-512).
  double peak1 = measure_peak(isa);
  if (peak1 <= 0) peak1 = 32 * ghz * 1e9;
  peak1 /= 1e9;
  std::printf("bench     isa %s, clock %.2f GHz (dependent adds), FMA peak %.1f GFLOP/s per core (%.1f FLOP/cycle, measured)\n",
              isa, ghz, peak1, peak1 / ghz);
  ThreadPool pool(threads);
  std::vector<int> ms = all ? std::vector<int>{1, 64, 256, 1000, 10000} : std::vector<int>{1000};
  std::mt19937 rng(7);
  const bool bf16 = adrank::cpu::gemm_bf16_available();
  // vdpbf16ps does twice the FLOP of an fp32 FMA of its width; the avx2 bf16 kernel runs fp32 FMAs.
  const bool vdp = std::strcmp(adrank::cpu::gemm_bf16_kernel(), "avx512bf16") == 0;
  if (bf16) std::printf("bench     bf16 kernel %s\n", adrank::cpu::gemm_bf16_kernel());
  std::printf("%-11s %6s %5s %5s %3s %10s %9s %7s%s\n", "layer", "m", "n", "k", "thr", "time", "GFLOP/s", "%peak",
              !bf16 ? "" : vdp ? "   bf16 time  GFLOP/s  ×fp32  %bf16peak(2× FMA peak)" : "   bf16 time  GFLOP/s  ×fp32  %peak");
  for (const Shape& s : kDemo) {
    if (!all && !(s.n == 1536 && s.k == 1536) && !(s.n == 356 && s.k == 712) && !(s.n == 2136)) continue;
    for (int m : ms) {
      auto a = random_vec(rng, size_t(m) * s.k, 1.f);
      auto w = random_vec(rng, size_t(s.n) * s.k, 0.05f);
      auto bias = random_vec(rng, s.n, 0.1f);
      std::vector<float> c(size_t(m) * s.n);
      PackedMatrix pw(w.data(), s.n, s.k);
      PackedMatrix pwb = pw;
      if (bf16) pwb.pack_bf16();
      Epilogue ep;
      ep.bias = bias.data();
      ep.relu = true;
      for (int thr : {1, threads}) {
        ThreadPool* p = thr == 1 ? nullptr : &pool;
        const double flop = 2.0 * m * s.n * s.k;
        // Repeat for ~0.25 s (at least 3 runs), report the best run.
        int reps = int(std::clamp(0.25 / (flop / (peak1 * 0.5e9)), 3.0, 20000.0));
        auto time = [&](const PackedMatrix& mat) {
          adrank::cpu::gemm(a.data(), m, s.k, mat, c.data(), s.n, ep, p);  // warm-up
          double best = 1e30;
          for (int r = 0; r < reps; r++) {
            double t0 = timer_s(thr == 1);
            adrank::cpu::gemm(a.data(), m, s.k, mat, c.data(), s.n, ep, p);
            best = std::min(best, timer_s(thr == 1) - t0);
          }
          return best;
        };
        const double best = time(pw);
        double gflops = flop / best / 1e9;
        std::printf("%-11s %6d %5d %5d %3d %8.3f ms %9.1f %6.0f%%", s.what, m, s.n, s.k, thr, best * 1e3, gflops,
                    100 * gflops / (peak1 * thr));
        if (bf16) {
          const double bb = time(pwb);
          const double gb = flop / bb / 1e9;
          std::printf("   %8.3f ms %8.1f %5.2fx %6.0f%%", bb * 1e3, gb, best / bb, 100 * gb / ((vdp ? 2 : 1) * peak1 * thr));
        }
        std::printf("\n");
        if (threads == 1) break;
      }
    }
  }
}

// ---- small m: the weight stream against the memory bandwidth ---------------------------------

#if defined(__x86_64__)
__attribute__((target("avx2"))) float read_sum(const float* p, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#else
float read_sum(const float* p, size_t n) {
  float s = 0;
  for (size_t i = 0; i < n; i++) s += p[i];
  return s;
}
#endif

// STREAM-style read: 512 MiB (far beyond any L3), each thread summing its own contiguous part, best
// of 5 passes. Bytes per second.
double stream_read(ThreadPool* pool, int threads) {
  const size_t n = size_t(128) << 20;
  std::vector<float, adrank::cpu::CacheAlignedAllocator<float>> buf(n, 1.f);
  volatile float sink = 0;
  double best = 1e30;
  const bool one = !(pool && threads > 1);
  for (int rep = 0; rep < 5; rep++) {
    const double t0 = timer_s(one);
    if (pool && threads > 1) {
      std::vector<float> part(threads);
      pool->parallel_for(threads, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; t++) part[t] = read_sum(buf.data() + n / threads * t, n / threads);
      });
      for (float x : part) sink = sink + x;
    } else {
      sink = sink + read_sum(buf.data(), n);
    }
    best = std::min(best, timer_s(one) - t0);
  }
  return double(n) * sizeof(float) / best;
}

// The DCN layer shape (1536 × 1536) at small m: 16 distinct matrices used in turn (150 MB in fp32,
// 75 MB in bf16: more than the L3), so W comes from DRAM as a cold model's would; the weight bytes
// read per second against stream_read with the same threads.
void bench_stream(int threads) {
  ThreadPool pool(threads);
  const double bw1 = stream_read(nullptr, 1), bwn = stream_read(&pool, threads);
  std::printf("stream    read bandwidth (512 MiB, best of 5): 1 thread %.1f GB/s, %d threads %.1f GB/s\n", bw1 / 1e9, threads,
              bwn / 1e9);
  const int n = 1536, k = 1536, count = 16;
  std::mt19937 rng(11);
  std::vector<PackedMatrix> mats;
  for (int i = 0; i < count; i++) {
    auto w = random_vec(rng, size_t(n) * k, 0.03f);
    mats.emplace_back(w.data(), n, k);
    mats.back().pack_bf16();
  }
  std::vector<std::string> paths{std::string("fp32 ") + adrank::cpu::gemm_isa()};
  for (const char* kb : adrank::cpu::gemm_bf16_kernels_available()) paths.push_back(std::string("bf16 ") + kb);
  std::printf("%-16s %4s %3s %10s %9s %8s\n", "path (DCN shape)", "m", "thr", "per GEMM", "W GB/s", "%stream");
  for (const std::string& path : paths) {
    const bool b16 = path.rfind("bf16 ", 0) == 0;
    const double bytes = double(n) * k * (b16 ? 2 : 4);
    for (int m : {1, 4, 10, 16}) {
      auto a = random_vec(rng, size_t(m) * k, 1.f);
      std::vector<float> c(size_t(m) * n);
      for (int thr : {1, threads}) {
        ThreadPool* p = thr == 1 ? nullptr : &pool;
        auto once = [&](const PackedMatrix& w) {
          if (b16) adrank::cpu::gemm_bf16_on(path.c_str() + 5, a.data(), m, k, w, c.data(), n, Epilogue{}, p);
          else adrank::cpu::gemm_on(adrank::cpu::gemm_isa(), a.data(), m, k, w, c.data(), n, Epilogue{}, p);
        };
        for (auto& w : mats) once(w);  // warm-up
        double best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
          const double t0 = timer_s(thr == 1);
          for (auto& w : mats) once(w);
          best = std::min(best, (timer_s(thr == 1) - t0) / count);
        }
        std::printf("%-16s %4d %3d %7.3f ms %9.1f %7.0f%%\n", path.c_str(), m, thr, best * 1e3, bytes / best / 1e9,
                    100 * bytes / best / (thr == 1 ? bw1 : bwn));
        if (threads == 1) break;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, bench_only = false, all = false, stream = false;
  int threads = 2;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--bench")) bench_only = true;
    else if (!std::strcmp(argv[i], "--all")) all = true;
    else if (!std::strcmp(argv[i], "--stream")) stream = true;
    else if (!std::strcmp(argv[i], "--cputime")) g_cputime = true;
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--bench] [--all] [--stream] [--cputime] [--threads N]\n", argv[0]);
      return 2;
    }
  }
  std::printf("isa       gemm_isa() = %s; available:", adrank::cpu::gemm_isa());
  for (const char* name : adrank::cpu::gemm_isas_available()) std::printf(" %s", name);
  std::printf("\n");
  if (!bench_only && !stream) {
    ThreadPool pool(3);  // more threads than cores: the split must not change any bit
    validate_gemm(pool);
    validate_small_m(pool);
    validate_task_grid();
    validate_row_chunks();
    validate_pool(0);
    validate_pool(adrank::cpu::kDefaultSpinUs);
    std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  }
  if (!quick && (!stream || bench_only)) bench(all, threads);
  if (!quick && (stream || !bench_only)) bench_stream(threads);
  return failures ? 1 : 0;
}
