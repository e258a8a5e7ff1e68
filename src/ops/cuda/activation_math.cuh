// The activations at one point on the GPU (ops.h's Activation), and their derivatives for the
// backward ops, in F32 with the accurate expf/erfcf: the same functions as ops/cpu/activation_math.h,
// whose branch-free fast_exp they agree with to a few ulp. silu also serves the gated norm, the conv
// and the selective scan's gate; softplus the scan's dt.
#pragma once
#include <type_traits>

#include "ops/cuda/common.cuh"
#include "ops/ops.h"

namespace ssm::ops::cuda {

__device__ __forceinline__ float sigmoid(float t) { return 1.0f / (1.0f + expf(-t)); }
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// torch's softplus (x above 20), as on the CPU (ops/cpu/vec_math.h): max(x, 0) + log1p(e^-|x|). The
// library's log1pf, not __logf(1 + e): near 1, __logf's absolute error (~1e-7) would be 1e-5 of a
// small dt such as softplus(-4).
__device__ __forceinline__ float softplus(float x) {
  return fmaxf(x, 0.0f) + log1pf(fast_exp2(-fabsf(x) * kLog2e));
}

// silu and softplus on the exp unit, for BF16 activations (the selective scan's gate and dt): a few
// instructions instead of the library's expf, division and log1pf, relative error ~1e-6 (far below
// bf16's 4e-3 rounding). F32 activations keep the accurate versions above.
__device__ __forceinline__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fast_silu(float x) { return x * fast_rcp(1.0f + fast_exp2(-x * kLog2e)); }
// log1p(e) for e = e^-|x| in (0, 1]: below 1/64 its series to e^3 (relative error < e^3/4 < 1e-6), where
// log2(1 + e) would lose e's low bits in the sum; above, the exp unit's log2 (absolute error ~2^-22
// against a log of at least 0.0155).
__device__ __forceinline__ float fast_softplus(float x) {
  const float e = fast_exp2(-fabsf(x) * kLog2e);
  const float series = e * fmaf(e, fmaf(e, 1.0f / 3.0f, -0.5f), 1.0f);
  const float log1p_e = e < 1.0f / 64.0f ? series : fast_log2(1.0f + e) * 0.6931471805599453f;
  return fmaxf(x, 0.0f) + log1p_e;
}

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluTanhCubic = 0.044715f;
// gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x σ(2u), u = √(2/π) (x + 0.044715 x³): no cancellation for
// negative x. The argument 2u.
__device__ __forceinline__ float gelu_tanh_arg(float x) {
  return 2.0f * kSqrt2OverPi * x * (1.0f + kGeluTanhCubic * x * x);
}
// Φ(x) through erfc keeps negative x accurate.
__device__ __forceinline__ float normal_cdf(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }

template <Activation A>
__device__ __forceinline__ float activation_value(float x) {
  if constexpr (A == Activation::Silu) {
    return x * sigmoid(x);
  } else if constexpr (A == Activation::GeluTanh) {
    return x * sigmoid(gelu_tanh_arg(x));
  } else if constexpr (A == Activation::Gelu) {
    return x * normal_cdf(x);
  } else if constexpr (A == Activation::Sigmoid) {
    return sigmoid(x);
  } else {
    static_assert(A == Activation::Relu2);
    const float r = x < 0.0f ? 0.0f : x;  // NaN stays NaN
    return r * r;
  }
}

struct ValueGrad {
  float value, grad;
};

// The activation and its derivative at x, as ops/cpu/activation_math.h's activation_value_grad.
template <Activation A>
__device__ __forceinline__ ValueGrad activation_value_grad(float x) {
  if constexpr (A == Activation::Silu) {
    const float s = sigmoid(x);
    return {x * s, s * (1.0f + x * (1.0f - s))};
  } else if constexpr (A == Activation::GeluTanh) {
    const float s = sigmoid(gelu_tanh_arg(x));
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluTanhCubic * x * x);  // du/dx
    return {x * s, s + 2.0f * x * s * (1.0f - s) * du};
  } else if constexpr (A == Activation::Gelu) {
    const float cdf = normal_cdf(x), pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return {x * cdf, cdf + x * pdf};
  } else if constexpr (A == Activation::Sigmoid) {
    const float s = sigmoid(x);
    return {s, s * (1.0f - s)};
  } else {
    static_assert(A == Activation::Relu2);
    const float r = x < 0.0f ? 0.0f : x;
    return {r * r, 2.0f * r};
  }
}

// silu'(x), for the gates fused into the norm and the conv.
__device__ __forceinline__ float silu_grad(float x) { return activation_value_grad<Activation::Silu>(x).grad; }

// sigmoid, silu and silu' at the precision of activations of type Act: the accurate functions above
// for F32 (the parity mode), the exp unit's short forms for BF16 (the selective scan's gate, the
// conv), whose ~1e-6 relative error is far below bf16's rounding.
template <class Act>
__device__ __forceinline__ float sigmoid_of(float x) {
  if constexpr (std::is_same_v<Act, float>) return sigmoid(x);
  else return fast_rcp(1.0f + fast_exp2(-x * kLog2e));
}
template <class Act>
__device__ __forceinline__ float silu_of(float x) {
  if constexpr (std::is_same_v<Act, float>) return silu(x);
  else return fast_silu(x);
}
template <class Act>
__device__ __forceinline__ float silu_grad_of(float x) {
  if constexpr (std::is_same_v<Act, float>) return silu_grad(x);
  const float s = sigmoid_of<Act>(x);
  return s * (1.0f + x * (1.0f - s));
}

// Calls fn.template operator()<A>() with A = act known at compile time.
template <class Fn>
void with_activation(Activation act, Fn&& fn) {
  switch (act) {
    case Activation::Silu: return fn.template operator()<Activation::Silu>();
    case Activation::Gelu: return fn.template operator()<Activation::Gelu>();
    case Activation::GeluTanh: return fn.template operator()<Activation::GeluTanh>();
    case Activation::Relu2: return fn.template operator()<Activation::Relu2>();
    case Activation::Sigmoid: return fn.template operator()<Activation::Sigmoid>();
  }
  fail("activation: unknown Activation value {}", int(act));
}

}  // namespace ssm::ops::cuda
