// Branchless float math for the CPU kernels: fast_exp, fast_log, softplus, silu.
//
// Each function is one template over V = float or f32x16 (a GCC/Clang vector of 16 floats), so the
// same source serves scalar loops (which g++ -O3 auto-vectorises: no branches, no libm calls) and
// kernels written directly on 16-lane vectors. f32x16 lowers to one zmm register with AVX-512 and
// to pairs of ymm / quads of xmm registers elsewhere, so no #ifdef is needed for portability.
// Explicit vectors are used where it matters because g++ auto-vectorises at 256 bits on Ice Lake
// (-mprefer-vector-width=256) even though 512-bit registers are there.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>

// Passing 64-byte vectors by value changes the ABI on targets without AVX-512; everything here is
// inline, so the note is noise.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ssm::vec {

constexpr int kLanes = 16;
using f32x16 = float __attribute__((vector_size(64)));
using i32x16 = int32_t __attribute__((vector_size(64)));
using u16x16 = uint16_t __attribute__((vector_size(32)));
using u32x16 = uint32_t __attribute__((vector_size(64)));

template <class V>
struct IntOf;
template <>
struct IntOf<float> {
  using type = int32_t;
};
template <>
struct IntOf<f32x16> {
  using type = i32x16;
};

// A scalar broadcast to V (V{} + c works for both scalars and vectors).
template <class V>
inline V splat(float c) {
  return V{} + c;
}

inline f32x16 load(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, f32x16 v) { std::memcpy(p, &v, sizeof v); }
// First n (< 16) lanes from p, the rest zero; for the channel tails of the kernels.
inline f32x16 load_partial(const float* p, int64_t n) {
  f32x16 v{};
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}
inline void store_partial(float* p, f32x16 v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}
// 16 bf16 values widened to f32: the bf16 bits are the high half of the f32 bits.
inline f32x16 load_bf16(const uint16_t* p) {
  u16x16 h;
  std::memcpy(&h, p, sizeof h);
  return std::bit_cast<f32x16>(__builtin_convertvector(h, u32x16) << 16);
}
inline f32x16 load_bf16_partial(const uint16_t* p, int64_t n) {
  f32x16 v{};
  for (int64_t i = 0; i < n; ++i) v[i] = std::bit_cast<float>(uint32_t(p[i]) << 16);
  return v;
}
// The full or the partial form chosen at compile time, so that one kernel body serves both the
// full 16-channel blocks and the tail block (n lanes).
template <bool kTail>
inline f32x16 load_n(const float* p, int64_t n) {
  if constexpr (kTail) return load_partial(p, n);
  else return load(p);
}
template <bool kTail>
inline void store_n(float* p, f32x16 v, int64_t n) {
  if constexpr (kTail) store_partial(p, v, n);
  else store(p, v);
}
template <bool kTail>
inline f32x16 load_bf16_n(const uint16_t* p, int64_t n) {
  if constexpr (kTail) return load_bf16_partial(p, n);
  else return load_bf16(p);
}

inline float to_float(int32_t v) { return float(v); }
inline f32x16 to_float(i32x16 v) { return __builtin_convertvector(v, f32x16); }
inline float reduce_add(f32x16 v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// e^x with relative error < 2e-7 for x in [-87.3, 88]; exactly 0 below -87.3 (never a denormal,
// which would slow every later multiply), e^88 above 88, NaN for NaN.
// x = n ln2 + r with |r| <= ln2/2; e^r by the Cephes expf polynomial; 2^n built in the exponent bits.
template <class V>
inline V fast_exp(V x) {
  using I = typename IntOf<V>::type;
  const V lo = splat<V>(-87.3f), hi = splat<V>(88.0f);
  const V xc = x < lo ? lo : (x > hi ? hi : x);
  // Adding 1.5*2^23 rounds to an integer held in the low mantissa bits.
  const V magic = splat<V>(12582912.0f);
  const V shifted = xc * 1.44269504088896341f + magic;
  const V n = shifted - magic;
  const V r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 split in two for an exact n*ln2_hi
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const I bits = (std::bit_cast<I>(shifted) - std::bit_cast<I>(magic) + 127) << 23;
  const V e = p * std::bit_cast<V>(bits);
  return x < lo ? V{} : e;
}

// ln x for positive normal x (relative error ~1e-7): x = m 2^k with m in [sqrt(1/2), sqrt(2)), then
// the Cephes logf polynomial in m - 1.
template <class V>
inline V fast_log(V x) {
  using I = typename IntOf<V>::type;
  const I bits = std::bit_cast<I>(x);
  I k = (bits >> 23) - 127;
  V m = std::bit_cast<V>((bits & 0x007fffff) | 0x3f800000);  // in [1, 2)
  const auto big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  k = big ? k + 1 : k;
  const V f = m - 1.0f;
  const V kf = to_float(k);
  V p = splat<V>(7.0376836292e-2f);
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const V f2 = f * f;
  V y = f * f2 * p + kf * -2.12194440e-4f - 0.5f * f2;
  return f + y + kf * 0.693359375f;
}

// torch.nn.functional.softplus (threshold 20: x for x > 20, else log1p(e^x)), computed as
// max(x, 0) + log1p(e^-|x|) so that e^ never overflows. Relative error < 2e-7 for x >= -87.
template <class V>
inline V softplus(V x) {
  const V ax = x < 0.0f ? -x : x;
  const V e = fast_exp(-ax);  // in (0, 1]
  const V u = 1.0f + e;
  // log1p(e) ~ log(u) + (e - (u - 1)): the second term (exact, <= 2^-24) restores what rounding
  // 1 + e lost, so e^x below 2^-24 survives. (Exactly it is divided by u; dropping that costs < 5e-8
  // relative, and a division here would stop g++ from if-converting the x > 20 select.)
  const V l = fast_log(u) + (e - (u - 1.0f));
  // No x > 20 select needed: there l < 2.1e-9 is under half an ulp of x, so x + l rounds to x.
  return (x > 0.0f ? x : V{}) + l;
}

// x * sigmoid(x).
template <class V>
inline V silu(V x) {
  return x / (1.0f + fast_exp(-x));
}

}  // namespace ssm::vec
