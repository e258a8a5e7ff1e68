// The decoding form of ops::linear on the GPU (see skinny_linear.cu): used by linear.cu when it fits.
#pragma once
#include "core/tensor.h"

namespace ssm::ops::cuda {

// y (=|+=) x · wᵀ + bias for BF16 x of 1-8 rows and BF16 w, rows 16-byte aligned; y BF16 or F32.
// Returns false, doing nothing, when the call does not have that form. Arguments already checked.
bool try_skinny_linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate);

}  // namespace ssm::ops::cuda
