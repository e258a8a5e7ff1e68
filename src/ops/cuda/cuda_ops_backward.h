// The GPU backend of ops_backward.h: the same backward ops with the same signatures and contracts,
// for tensors on Device::CUDA. ops::<op>_backward (in ops/cpu/<op>_backward.cpp) hands a call whose
// tensors live on the GPU to ops::cuda::<op>_backward (in ops/cuda/<op>_backward.cu).
//
// GPU conventions on top of cuda_ops.h's:
//   - Activations, their gradients (dx, dy, ...) and the saved tensors a backward reads are F32 or
//     BF16, one dtype per call; parameter gradients (dw, dbias, dA, dD, ...) are F32 and accumulated.
//   - Deterministic: no float atomics whose order varies. Sums over rows (a parameter's gradient)
//     go through per-block partials added in a fixed order, so two runs give the same bits.
#pragma once
#include "ops/ops_backward.h"

namespace ssm::ops::cuda {

void ssd_backward(const SsdInputs& in, const Tensor& state0, const Tensor& dy, SsdGrads& grads,
                  const Tensor& dfinal_state);

}  // namespace ssm::ops::cuda
