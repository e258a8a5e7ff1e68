// The MLP activations at one point, value and derivative, shared by the forward and backward kernels.
//
// Silu, GeluTanh and Sigmoid go through one sigmoid built on vec::fast_exp, branch-free so that the loops
// vectorise: silu(x) = x σ(x), and gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x σ(2u) with
// u = √(2/π) (x + 0.044715 x³), since 1 + tanh(u) = 2 σ(2u) (no cancellation for negative x).
// Gelu uses std::erfc: Φ(x) = 0.5 erfc(−x / √2) keeps its relative accuracy for negative x.
#pragma once
#include <cmath>
#include <type_traits>

#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

// σ(t), exactly 0 below t = −88 (where fast_exp saturates at e^88 instead of growing), so that
// x σ'(·) terms of huge |x| vanish as they should.
inline float sigmoid_fast(float t) { return t < -88.0f ? 0.0f : 1.0f / (1.0f + vec::fast_exp(-t)); }

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluTanhCubic = 0.044715f;

// gelu_tanh(x) = x σ(2u): the argument 2u.
inline float gelu_tanh_arg(float x) { return 2.0f * kSqrt2OverPi * x * (1.0f + kGeluTanhCubic * x * x); }
inline float normal_cdf(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
inline float relu(float x) { return x < 0.0f ? 0.0f : x; }  // NaN stays NaN

template <Activation A>
inline float activation_value(float x) {
  if constexpr (A == Activation::Silu) {
    return x * sigmoid_fast(x);
  } else if constexpr (A == Activation::GeluTanh) {
    return x * sigmoid_fast(gelu_tanh_arg(x));
  } else if constexpr (A == Activation::Gelu) {
    return x * normal_cdf(x);
  } else if constexpr (A == Activation::Sigmoid) {
    return sigmoid_fast(x);
  } else {
    static_assert(A == Activation::Relu2);
    return relu(x) * relu(x);
  }
}

struct ValueGrad {
  float value, grad;
};

template <Activation A>
inline ValueGrad activation_value_grad(float x) {
  if constexpr (A == Activation::Silu) {
    const float s = sigmoid_fast(x);
    return {x * s, s * (1.0f + x * (1.0f - s))};
  } else if constexpr (A == Activation::GeluTanh) {
    const float s = sigmoid_fast(gelu_tanh_arg(x));
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluTanhCubic * x * x);  // du/dx
    return {x * s, s + 2.0f * x * s * (1.0f - s) * du};
  } else if constexpr (A == Activation::Gelu) {
    const float cdf = normal_cdf(x);
    const float pdf = 0.39894228040143268f * std::exp(-0.5f * x * x);
    return {x * cdf, cdf + x * pdf};
  } else if constexpr (A == Activation::Sigmoid) {
    const float s = sigmoid_fast(x);
    return {s, s * (1.0f - s)};
  } else {
    static_assert(A == Activation::Relu2);
    const float r = relu(x);
    return {r * r, 2.0f * r};
  }
}

// Calls f(std::integral_constant<Activation, act>{}), so that a kernel's loop is compiled once per
// activation with the activation known inside it.
template <class F>
inline void dispatch_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::Silu:
      return f(std::integral_constant<Activation, Activation::Silu>{});
    case Activation::Gelu:
      return f(std::integral_constant<Activation, Activation::Gelu>{});
    case Activation::GeluTanh:
      return f(std::integral_constant<Activation, Activation::GeluTanh>{});
    case Activation::Relu2:
      return f(std::integral_constant<Activation, Activation::Relu2>{});
    case Activation::Sigmoid:
      return f(std::integral_constant<Activation, Activation::Sigmoid>{});
  }
  fail("activation: unknown Activation value {}", int(act));
}

// Calls row(r) for r in [0, rows), rows spread over threads when the work is worth it.
template <class Row>
inline void for_each_row(int64_t rows, int64_t width, Row&& row) {
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) row(r);
}

}  // namespace ssm::ops::detail
