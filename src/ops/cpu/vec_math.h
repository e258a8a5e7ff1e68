// Branchless float math for the CPU kernels: fast_exp, fast_log, softplus, silu.
//
// Each function is one template over V = float or f32x16 (a GCC/Clang vector of 16 floats), so the
// same source serves scalar loops (which g++ -O3 auto-vectorises: no branches, no libm calls) and
// kernels written directly on 16-lane vectors. f32x16 lowers to one zmm register with AVX-512 and
// to pairs of ymm / quads of xmm registers elsewhere, so no #ifdef is needed for portability.
// Explicit vectors are used where it matters because g++ auto-vectorises at 256 bits on Ice Lake
// (-mprefer-vector-width=256) even though 512-bit registers are there.
#pragma once
#include <immintrin.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"

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
template <class V>
struct UintOf;
template <>
struct UintOf<float> {
  using type = uint32_t;
};
template <>
struct UintOf<f32x16> {
  using type = u32x16;
};

// A scalar broadcast to V. (Not V{} + c: adding +0.0 turns -0 into +0, so the compiler must keep
// that add, one extra instruction before every broadcast of a runtime value.)
template <class V>
inline V splat(float c) {
  if constexpr (std::is_same_v<V, float>)
    return c;
  else
    return V{c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c};
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
// 16 IEEE half values widened to f32: one vcvtph2ps with AVX-512 or F16C (every AVX2 CPU has it),
// the scalar conversion elsewhere.
inline f32x16 load_f16(const uint16_t* p) {
#if defined(__AVX512F__)
  // (The zero-masked form: GCC 12's plain _mm512_cvtph_ps warns about an uninitialised operand.)
  return std::bit_cast<f32x16>(_mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#elif defined(__F16C__)
  struct Halves {
    __m256 lo, hi;
  };
  return std::bit_cast<f32x16>(Halves{_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
                                      _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))});
#else
  f32x16 v;
  for (int i = 0; i < kLanes; ++i) v[i] = f16_to_f32(p[i]);
  return v;
#endif
}
inline f32x16 load_f16_partial(const uint16_t* p, int64_t n) {
  f32x16 v{};
  for (int64_t i = 0; i < n; ++i) v[i] = f16_to_f32(p[i]);
  return v;
}
// 16 f32 values rounded to bf16 (to nearest even, as f32_to_bf16; NaN stays NaN).
inline u16x16 to_bf16(f32x16 v) {
  const u32x16 bits = std::bit_cast<u32x16>(v);
  const u32x16 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const u32x16 nan = (bits >> 16) | 0x40u;
  return __builtin_convertvector((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded, u16x16);
}
// The full or the partial form chosen at compile time, so that one kernel body serves both the
// full 16-channel blocks and the tail block (n lanes).
template <bool kTail>
inline f32x16 load_n(const float* p, int64_t n) {
  if constexpr (kTail)
    return load_partial(p, n);
  else
    return load(p);
}
template <bool kTail>
inline void store_n(float* p, f32x16 v, int64_t n) {
  if constexpr (kTail)
    store_partial(p, v, n);
  else
    store(p, v);
}
template <bool kTail>
inline f32x16 load_bf16_n(const uint16_t* p, int64_t n) {
  if constexpr (kTail)
    return load_bf16_partial(p, n);
  else
    return load_bf16(p);
}
template <bool kTail>
inline f32x16 load_f16_n(const uint16_t* p, int64_t n) {
  if constexpr (kTail)
    return load_f16_partial(p, n);
  else
    return load_f16(p);
}

// Calls f(tail, i, m) for the 16-lane vectors [i, i + m) covering [0, n): full ones with
// tail = std::false_type{}, then the partial last one with std::true_type{}. f reads the flag as
// decltype(tail)::value and passes it to load_n / store_n.
template <class F>
inline void for_each_vector(int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) f(std::false_type{}, i, int64_t(kLanes));
  if (i < n) f(std::true_type{}, i, n - i);
}

// a * b + c, rounded once where the CPU has FMA. Written out rather than left to the compiler's
// contraction of `c += a * b`, which g++ applies in some instantiations of a kernel template and not
// in others (ops::linear's rows then changed in the last bit with the number of rows beside them).
inline f32x16 fma(f32x16 a, f32x16 b, f32x16 c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, b, c);
#elif defined(__FMA__)
  using f32x8 = float __attribute__((vector_size(32)));
  const f32x8 lo = _mm256_fmadd_ps(__builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7),
                                   __builtin_shufflevector(b, b, 0, 1, 2, 3, 4, 5, 6, 7),
                                   __builtin_shufflevector(c, c, 0, 1, 2, 3, 4, 5, 6, 7));
  const f32x8 hi = _mm256_fmadd_ps(__builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15),
                                   __builtin_shufflevector(b, b, 8, 9, 10, 11, 12, 13, 14, 15),
                                   __builtin_shufflevector(c, c, 8, 9, 10, 11, 12, 13, 14, 15));
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
  return a * b + c;
#endif
}

inline float to_float(int32_t v) { return float(v); }
inline f32x16 to_float(i32x16 v) { return __builtin_convertvector(v, f32x16); }
// Sum of the 16 lanes, halving the vector each step (4 shuffle-add pairs, not 15 dependent adds).
inline float reduce_add(f32x16 v) {
  using f32x8 = float __attribute__((vector_size(32)));
  using f32x4 = float __attribute__((vector_size(16)));
  const f32x8 v8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x4 v4 = __builtin_shufflevector(v8, v8, 0, 1, 2, 3) + __builtin_shufflevector(v8, v8, 4, 5, 6, 7);
  return (v4[0] + v4[2]) + (v4[1] + v4[3]);
}

// The largest of x[0], ..., x[n - 1] (n >= 1), 16 lanes at a time, as the loop `m = m < x[i] ? x[i] : m`
// from m = x[0] finds it: a NaN never replaces a number, and x[0] NaN gives NaN.
inline float max_value(const float* x, int64_t n) {
  f32x16 lanes = splat<f32x16>(x[0]);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const f32x16 v = load(x + i);
    lanes = lanes < v ? v : lanes;
  }
  float m = x[0];
  for (int lane = 0; lane < kLanes; ++lane) m = m < lanes[lane] ? lanes[lane] : m;
  for (; i < n; ++i) m = m < x[i] ? x[i] : m;
  return m;
}

// e^x with relative error < 2e-7 (8e-8 measured) for x in [-87.3, 88]; exactly 0 below -87.3 (never a denormal,
// which would slow every later multiply), e^88 above 88, NaN for NaN.
// x = n ln2 + r with |r| <= ln2/2 (n by the round-to-nearest of adding 1.5*2^23, which leaves n in
// the low mantissa bits); e^r = 1 + r g(r) with g a degree-5 Chebyshev fit of (e^r - 1)/r; 2^n is
// built in the exponent bits. The inputs below -87.3 compute garbage that the last select drops.
template <class V>
inline V fast_exp(V x) {
  using U = typename UintOf<V>::type;
  const V xc = x > 88.0f ? splat<V>(88.0f) : x;
  const V magic = splat<V>(12582912.0f);
  const V shifted = xc * 1.44269504088896341f + magic;
  const V n = shifted - magic;
  const V r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 in two parts: n*ln2_hi is exact
  V g = splat<V>(1.3933641031986701e-3f);
  g = g * r + 8.369148490856347e-3f;
  g = g * r + 4.166646500604005e-2f;
  g = g * r + 1.6666505260408124e-1f;
  g = g * r + 5.000000013457727e-1f;
  g = g * r + 1.00000001077157f;
  const V p = g * r + 1.0f;
  const U bits = (std::bit_cast<U>(shifted) + (127u - std::bit_cast<uint32_t>(12582912.0f))) << 23;
  const V e = p * std::bit_cast<V>(bits);
  return x < -87.3f ? V{} : e;
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
  // 1 + e lost, so e^x below 2^-24 survives. (Exactly it is divided by u; dropping that costs
  // < 5e-8 relative and saves a division.)
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
