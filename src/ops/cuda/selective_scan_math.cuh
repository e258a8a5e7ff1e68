// The pointwise math of the Mamba-1 selective scan's GPU kernels (forward in selective_scan.cu,
// backward in selective_scan_backward.cu), so that the backward recomputes exactly the forward's values.
//
// Decays: in F32 mode (the parity mode) by poly_exp2, whose errors do not add up along a slow
// decay's thousands of steps; in BF16 mode on the exp unit, several times faster, whose ~1e-7 per
// step stays far below bf16's rounding. Likewise softplus, the silu gate and their derivatives: the
// accurate library functions in F32 mode, the exp unit's short forms (activation_math.cuh) in BF16 mode.
#pragma once
#include <type_traits>

#include "ops/cuda/activation_math.cuh"  // sigmoid_of, silu_of, softplus and their fast forms
#include "ops/cuda/common.cuh"

namespace ssm::ops::cuda {

template <class Act>
__device__ __forceinline__ float decay(float x) {
  if constexpr (std::is_same_v<Act, float>) return poly_exp2(x);
  else return fast_exp2(x);
}

template <class Act>
__device__ __forceinline__ float dt_softplus(float x) {
  if constexpr (std::is_same_v<Act, float>) return softplus(x);
  else return fast_softplus(x);
}

// softplus'(x) = σ(x), from dt = softplus(x): σ(x) = 1 - e^-dt (1 above torch's threshold 20, where
// dt = x, to within 2e-9). F32: expm1 keeps a small dt's few bits; BF16: the exp unit.
template <class Act>
__device__ __forceinline__ float softplus_grad_from_value(float dt) {
  if constexpr (std::is_same_v<Act, float>) return -expm1f(-dt);
  else return 1.0f - fast_exp2(-dt * kLog2e);
}

}  // namespace ssm::ops::cuda
