// How an op hands a call to the GPU backend: the first line of each op in ops/cpu/ that has a GPU
// kernel. A CPU-only build has no GPU tensors, so the check compiles away there.
#pragma once
#include "core/tensor.h"

#ifdef SSM_CUDA
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/cuda_ops_backward.h"
// Returns ops::cuda::op(args...) when `tensor` (the op's output, say) lives on the GPU.
#define SSM_GPU_DISPATCH(tensor, op, ...) \
  if ((tensor).device() == ::ssm::Device::CUDA) return ::ssm::ops::cuda::op(__VA_ARGS__)
#else
#define SSM_GPU_DISPATCH(tensor, op, ...) (void)0
#endif
