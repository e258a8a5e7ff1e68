// Host code shared by the GPU attention ops (attention.cu, attention_backward.cu, rat.cu): the call's
// placement, the sizes the kernels index with int, and tensors as the kernels see them.
#pragma once
#include <climits>

#include "ops/cpu/attention_checks.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/flash_attention.cuh"

namespace ssm::ops::cuda {

// A [B, rows, width] or [B, width] tensor (last dim contiguous) as the kernels see it.
template <class T>
flash::SeqPtr<T> seq_ptr(const Tensor& t) {
  return {static_cast<T*>(t.raw()), t.stride(0), t.dim() == 3 ? t.stride(1) : 0};
}

// The dtype of the call (that of `first`, named `name`, which the checks then ask of every activation),
// on the GPU.
inline detail::Placement gpu_placement(const char* op, const Tensor& first, const char* name = "q") {
  SSM_CHECK(first.defined() && first.device() == Device::CUDA && is_activation_dtype(first.dtype()),
            "{}: {} must be F32 or BF16 on the GPU, got {}", op, name, detail::describe(first));
  return {first.dtype(), Device::CUDA};
}

// Sizes the kernels index with int and put in the grid (heads in y, batch in z).
inline void check_kernel_sizes(const char* op, const detail::AttentionDims& d) {
  SSM_CHECK(d.batch <= 65535 && d.n_heads <= 65535 && d.T < INT_MAX && d.S < INT_MAX,
            "{}: the GPU kernels take batch and n_heads up to 65535 and T, S below 2^31, got batch {} n_heads {} T {} "
            "S {}",
            op, d.batch, d.n_heads, d.T, d.S);
  SSM_CHECK(d.head_dim <= flash::kExactMaxHeadDim, "{}: the GPU kernels take head_dim up to {}, got {}", op,
            flash::kExactMaxHeadDim, d.head_dim);
}

}  // namespace ssm::ops::cuda
