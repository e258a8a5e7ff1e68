// The decoding forms of ops::linear, ops::linear_conv_step and ops::gated_rmsnorm_linear on the GPU
// (see skinny_kernels.cuh): one kernel each for 1-8 rows of BF16 activations and BF16 weights. Each
// returns false, doing nothing, when the call does not have that form; the arguments are already checked.
#pragma once
#include "core/tensor.h"
#include "ops/ops.h"

namespace ssm::ops::cuda {

// y (=|+=) x · wᵀ + bias; y BF16 or F32.
bool try_skinny_linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate);
bool try_skinny_linear_conv_step(const Tensor& x, const LinearConvStep& p, Tensor& conv_state, Tensor& y);
bool try_skinny_gated_rmsnorm_linear(const Tensor& x, const Tensor& z, const Tensor& norm_weight, int64_t group_size,
                                     bool norm_before_gate, float eps, const Tensor& w, const Tensor& bias, Tensor& y,
                                     bool accumulate);

}  // namespace ssm::ops::cuda
