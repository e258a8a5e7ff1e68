// Host code shared by the GPU ops: what a GPU rows tensor and a GPU vector are, and optional tensors as
// kernel arguments.
#pragma once
#include "core/tensor.h"
#include "ops/cpu/op_util.h"  // describe

namespace ssm::ops::cuda {

using detail::describe;

// A rows tensor ([..., W], last dim contiguous, uniform row stride) of `dtype` on the GPU.
inline bool is_gpu_rows(const Tensor& t, DType dtype) {
  return t.defined() && t.device() == Device::CUDA && t.dtype() == dtype && t.dim() >= 1 && t.has_uniform_rows();
}
inline bool is_gpu_rows(const Tensor& t, DType dtype, const Shape& shape) {
  return is_gpu_rows(t, dtype) && t.shape() == shape;
}
// A contiguous F32 [n] on the GPU (norm weights, biases).
inline bool is_gpu_vector(const Tensor& t, int64_t n) {
  return t.defined() && t.device() == Device::CUDA && t.dtype() == DType::F32 && t.dim() == 1 && t.size(0) == n &&
         t.is_contiguous();
}

// An optional tensor's data, or null when it is undefined (an output not asked for, an input left out).
template <class T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
// An optional rows tensor's row stride, or 0 when it is undefined.
inline int64_t stride_or_zero(const Tensor& t) { return t.defined() ? t.row_stride() : 0; }

}  // namespace ssm::ops::cuda
