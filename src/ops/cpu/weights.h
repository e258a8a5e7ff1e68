// Reading weights stored as F32, BF16 or F16 into f32 registers or buffers: the one place that
// knows the three storage types of matrices (all arithmetic is f32).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"
#include "core/tensor.h"
#include "ops/cpu/scratch.h"
#include "ops/cpu/vec_math.h"

namespace ssm::ops::detail {

inline bool is_weight_dtype(DType dtype) { return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16; }

// The element type a weight of dtype D is stored as.
template <DType D>
using weight_t = std::conditional_t<D == DType::F32, float, uint16_t>;

// 16 weights as f32 (the first n when kTail, the rest zero).
template <DType D, bool kTail>
inline vec::f32x16 load_weights(const weight_t<D>* p, int64_t n) {
  if constexpr (D == DType::F32)
    return vec::load_n<kTail>(p, n);
  else if constexpr (D == DType::BF16)
    return vec::load_bf16_n<kTail>(p, n);
  else
    return vec::load_f16_n<kTail>(p, n);
}

// dst[0, n) = src[0, n) widened to f32.
template <DType D>
inline void widen(const weight_t<D>* src, int64_t n, float* dst) {
  vec::for_each_vector(n, [&](auto tail, int64_t i, int64_t m) {
    vec::store_n<decltype(tail)::value>(dst + i, load_weights<D, decltype(tail)::value>(src + i, m), m);
  });
}

// dst[0, n) = src[0, n) rounded to bf16.
template <DType D>
inline void to_bf16(const weight_t<D>* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + vec::kLanes <= n; i += vec::kLanes) {
    const vec::u16x16 h = vec::to_bf16(load_weights<D, false>(src + i, vec::kLanes));
    std::memcpy(dst + i, &h, sizeof h);
  }
  for (; i < n; ++i) {
    const vec::f32x16 v = load_weights<D, true>(src + i, 1);
    dst[i] = f32_to_bf16(v[0]);
  }
}

// Calls f(std::integral_constant<DType, D>{}) for the dtype of a weight (F32, BF16 or F16), so that
// one templated kernel body serves all three.
template <class F>
inline decltype(auto) with_weight_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::BF16:
      return f(std::integral_constant<DType, DType::BF16>{});
    case DType::F16:
      return f(std::integral_constant<DType, DType::F16>{});
    default:
      return f(std::integral_constant<DType, DType::F32>{});
  }
}

// The values of a contiguous F32, BF16 or F16 weight as f32: its own memory when it is F32, else
// widened into `scratch` (valid until its next use).
inline const float* weights_as_f32(const Tensor& w, Scratch& scratch) {
  if (w.dtype() == DType::F32) return w.data<float>();
  float* out = scratch.get<float>(size_t(w.numel()));
  const int64_t cols = w.dim() ? w.size(-1) : 1, rows = cols ? w.numel() / cols : 0;
  with_weight_dtype(w.dtype(), [&](auto dtype) {
    constexpr DType D = decltype(dtype)::value;
    const weight_t<D>* src = w.data<weight_t<D>>();
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
    for (int64_t r = 0; r < rows; ++r) widen<D>(src + r * cols, cols, out + r * cols);
  });
  return out;
}

}  // namespace ssm::ops::detail
