// Argument checks shared by the CPU kernels: each op names itself and the offending shapes.
#pragma once
#include <string>

#include "core/tensor.h"

namespace ssm::ops::detail {

inline std::string describe(const Tensor& t) {
  return t.defined() ? shape_str(t.shape()) + " " + std::string(dtype_name(t.dtype())) : std::string("undefined");
}

// An F32 rows tensor (ops.h) with `dims` dimensions (any number >= 1 when dims == 0).
inline bool is_f32_rows(const Tensor& t, int64_t dims = 0) {
  return t.defined() && t.device() == Device::CPU && t.dtype() == DType::F32 &&
         (dims == 0 ? t.dim() >= 1 : t.dim() == dims) && t.has_uniform_rows();
}

// A contiguous F32 vector of n elements.
inline bool is_f32_vector(const Tensor& t, int64_t n) {
  return t.defined() && t.device() == Device::CPU && t.dtype() == DType::F32 && t.dim() == 1 && t.size(0) == n &&
         t.is_contiguous();
}

}  // namespace ssm::ops::detail
