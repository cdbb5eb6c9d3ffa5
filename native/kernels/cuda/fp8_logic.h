// The fp8 retrieval's arithmetic that the device and the host share, in plain C++ (no CUDA
// headers; docs/cuda.md "The fp8 retrieval"): the e4m3 format, the per-ad quantization of the bf16
// retrieval table with its error term, and the interval a bf16 score must lie in.
//
// The bf16 scan scores ad a as S = fl(Σ q_i e_i) (e the bf16 table, fp32 fused multiply-adds in
// some order). The fp8 scan scores it as T = fl(s · fl(Σ q_i d_i)) with d = e4m3(e / s), the per-ad
// scale s = max|e| / 448. With err_i = e_i − s·d_i (exact in double), u = 2^-24 and
// γ = n·u / (1 − n·u) for the n = d_r terms, any summation order gives
//   |S − Σ q e|       ≤ γ Σ|q_i e_i|    ≤ γ ‖q‖ ‖e‖
//   |Σ q e − s Σ q d| = |Σ q_i err_i|  ≤ ‖q‖ ‖err‖
//   |s Σ q d − s fl(Σ q d)|            ≤ s γ ‖q‖ ‖d‖
//   |s fl(Σ q d) − T|                  ≤ u |T| / (1 − u)
// so |S − T| ≤ ‖q‖ · B + 2u|T| with B = ‖err‖ + γ (‖e‖ + s ‖d‖), stored per ad (rounded up).
// fp8_interval widens that by a relative 1e-4 (the fp32 ‖q‖ and the products' own rounding) and
// rounds the ends outward, so S ∈ [lb, ub] always.
//
// The selection (retrieve.cu): τ = the L-th best lb over the eligible ads. An ad with ub < τ is
// behind L ads whose S ≥ lb ≥ τ > ub ≥ its S, so it is not among the L best: only the ads with
// ub ≥ τ (or ≥ any lower bound of τ) are rescored in bf16 with the bf16 scan's own arithmetic, and
// their exact top L is the bf16 scan's answer.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "engine/host_device.h"

namespace adrank::cuda {

constexpr float kFp8Max = 448.f;  // the largest finite e4m3 (e4m3fn: no infinities; 0x7f / 0xff are NaN)

// e4m3 → float, exact: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is
// subnormal (m · 2^-9).
ADRANK_HOST_DEVICE float fp8_e4m3_value(uint8_t b) {
  const int e = (b >> 3) & 15, mant = b & 7;
  const float mag = e == 0 ? float(mant) * 0.001953125f : ldexpf(1.f + float(mant) * 0.125f, e - 7);
  return (b & 0x80) ? -mag : mag;
}

// float → the nearest e4m3 (ties to even), saturating at ±448; x must be finite. Host side (the
// table is quantized at load). Below 2^-6 the codes are the multiples of 2^-9 (code 8 is 2^-6, the
// smallest normal); above, the fp32 bits rounded to 3 mantissa bits (a carry moves the exponent).
inline uint8_t fp8_e4m3_from(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::fabs(x);
  if (a >= kFp8Max) return uint8_t(sign | 0x7e);
  if (a < 0.015625f) return uint8_t(sign | int(std::nearbyint(a * 512.f)));
  uint32_t u;
  std::memcpy(&u, &a, 4);
  u += 0x7ffffu + ((u >> 20) & 1u);
  const uint32_t code = (u >> 20) - (120u << 3);
  return uint8_t(sign | (code > 0x7e ? 0x7e : code));
}

// γ_n for n fp32 terms: n u / (1 − n u), u = 2^-24.
inline double fp32_gamma(int n) {
  const double nu = double(n) * 5.9604644775390625e-8;
  return nu / (1.0 - nu);
}

// Quantizes one ad's bf16 retrieval row e[0, n) (values exact in fp32) into out[0, n): returns the
// scale s (0 for an all-zero row) and writes B (see above, rounded up) to *bound.
inline float fp8_quantize_row(const float* e, int n, uint8_t* out, float* bound) {
  float amax = 0.f;
  for (int i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(e[i]));
  const float s = amax > 0.f ? amax / kFp8Max : 0.f;
  double err2 = 0, e2 = 0, d2 = 0;
  for (int i = 0; i < n; ++i) {
    // e / s may round above 448 by an ulp: the encoder saturates, err keeps it exact
    const uint8_t b = s > 0.f ? fp8_e4m3_from(e[i] / s) : 0;
    out[i] = b;
    const double d = fp8_e4m3_value(b);
    const double err = double(e[i]) - double(s) * d;  // exact: s has 24 bits, d 4
    err2 += err * err;
    e2 += double(e[i]) * double(e[i]);
    d2 += d * d;
  }
  const double B = std::sqrt(err2) + fp32_gamma(n) * (std::sqrt(e2) + double(s) * std::sqrt(d2));
  // rounded up, with room for the double sums' own rounding
  *bound = float(B * (1.0 + 1e-9)) * (1.f + 1.2e-7f) + 1e-38f;
  return s;
}

// Quantizes rows [i0, i1) of a bf16 table (the bf16 bit patterns, rows ld values apart, d values
// each) into e4m3 rows of d8 bytes (d8 >= d, zero padded) at out + i · d8, with each row's scale
// and B at scale[i] and bound[i]: the engine's copy at load and the harness's are made by this.
inline void fp8_quantize_bf16_rows(const uint16_t* rows, int64_t ld, int d, int64_t i0, int64_t i1, int d8, uint8_t* out,
                                   float* scale, float* bound) {
  float e[1024];  // d8 values: the retrieval dimension is far below this
  if (d8 > 1024 || d > d8) throw std::invalid_argument("fp8_quantize_bf16_rows: expected d <= d8 <= 1024");
  for (int c = d; c < d8; ++c) e[c] = 0.f;
  for (int64_t i = i0; i < i1; ++i) {
    for (int c = 0; c < d; ++c) {
      const uint32_t bits = uint32_t(rows[i * ld + c]) << 16;
      std::memcpy(&e[c], &bits, 4);
    }
    scale[i] = fp8_quantize_row(e, d8, out + i * d8, &bound[i]);
  }
}

// The interval [lb, ub] around the fp8 score T that holds the bf16 score S, for a query of norm qn
// (fp32) and the ad's B. Both ends rounded outward.
ADRANK_HOST_DEVICE void fp8_interval(float T, float qn, float B, float* lb, float* ub) {
  const double beta = double(qn) * double(B) * 1.0001 + 2.5e-7 * fabs(double(T)) + 1e-37;
  const double l = double(T) - beta, h = double(T) + beta;
#ifdef __CUDA_ARCH__
  *lb = __double2float_rd(l);
  *ub = __double2float_ru(h);
#else
  float fl = float(l), fh = float(h);
  if (double(fl) > l) fl = std::nextafter(fl, -INFINITY);
  if (double(fh) < h) fh = std::nextafter(fh, INFINITY);
  *lb = fl;
  *ub = fh;
#endif
}

}  // namespace adrank::cuda
