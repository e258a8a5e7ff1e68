// Small helpers shared by the CPU kernels (shape checks and descriptions for messages, row access).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace ssm::ops::detail {

inline std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined";
  return fmt::format("{} {}{}", shape_str(t.shape()), dtype_name(t.dtype()), t.device() == Device::CPU ? "" : " on the GPU");
}

// The dtype and device every activation of one call must have: F32 on the CPU, or F32 or BF16 (one
// per call) on the GPU. Checks shared by both backends take one; str() names it in messages.
struct Placement {
  DType dtype = DType::F32;
  Device device = Device::CPU;
  std::string str() const { return fmt::format("{}{}", dtype_name(dtype), device == Device::CPU ? "" : " on the GPU"); }
};
inline const char* on_device(Device device) { return device == Device::CPU ? "" : " on the GPU"; }

// Rows tensors ([..., width], uniform row stride, contiguous last dim) with `where`'s dtype and device.
inline bool is_rows(const Tensor& t, const Placement& where) {
  return t.defined() && t.device() == where.device && t.dtype() == where.dtype && t.dim() >= 1 && t.has_uniform_rows();
}
// Contiguous F32 tensors of `shape` on `device` (vectors, states).
inline bool is_f32_contig_on(const Tensor& t, const Shape& shape, Device device) {
  return t.defined() && t.device() == device && t.dtype() == DType::F32 && t.shape() == shape && t.is_contiguous();
}

// CPU tensors only: a GPU tensor reaching a CPU kernel fails these checks instead of being read.
inline bool is_f32_rows(const Tensor& t) {
  return t.defined() && t.device() == Device::CPU && t.dtype() == DType::F32 && t.dim() >= 1 && t.has_uniform_rows();
}
inline bool is_f32_rows(const Tensor& t, const Shape& shape) { return is_f32_rows(t) && t.shape() == shape; }

// An optional output (undefined = not wanted) must otherwise be F32 rows of `shape`.
inline void check_optional_rows(const char* op, const Tensor& t, const char* name, const Shape& shape) {
  if (t.defined())
    SSM_CHECK(is_f32_rows(t, shape), "{}: {} must be F32 rows {}, got {}", op, name, shape_str(shape), describe(t));
}
inline bool is_f32_vec(const Tensor& t, int64_t n) {
  return t.defined() && t.device() == Device::CPU && t.dtype() == DType::F32 && t.dim() == 1 && t.size(0) == n && t.is_contiguous();
}
inline bool is_f32_contig(const Tensor& t, const Shape& shape) {
  return t.defined() && t.device() == Device::CPU && t.dtype() == DType::F32 && t.shape() == shape && t.is_contiguous();
}
inline int64_t ld(const Tensor& t) { return t.numel() == 0 ? t.size(-1) : t.row_stride(); }

// Sets every element of an F32 rows tensor (or contiguous tensor) to zero.
inline void zero_rows(Tensor& t) {
  if (!t.defined() || t.numel() == 0) return;
  if (t.is_contiguous()) {
    std::memset(t.raw(), 0, t.nbytes());
    return;
  }
  const int64_t rows = t.rows(), width = t.size(-1), stride = t.row_stride();
  float* p = t.data<float>();
  for (int64_t r = 0; r < rows; ++r) std::memset(p + r * stride, 0, size_t(width) * sizeof(float));
}

// The RoPE frequency 1 / theta^(2i / rotary_dim), rounded as transformers computes it (a float pow).
// One definition (ops/cpu/rope.cpp) serves the CPU and the GPU op, so that both round it alike.
float rope_inv_freq(float theta, int64_t rotary_dim, int64_t i);

inline float softplus_f(float v) { return v > 20.0f ? v : std::log1p(std::exp(v)); }
// d softplus / dv (torch: 1 above the threshold 20).
inline float softplus_grad_f(float v) { return v > 20.0f ? 1.0f : 1.0f / (1.0f + std::exp(-v)); }
// log σ(x), without overflow for either sign (the xLSTM forget gates).
inline float log_sigmoid(float x) { return std::min(x, 0.0f) - std::log1p(std::exp(-std::fabs(x))); }
inline float sigmoid_f(float v) { return 1.0f / (1.0f + std::exp(-v)); }
inline float silu_f(float v) { return v / (1.0f + std::exp(-v)); }
inline float silu_grad_f(float v) {
  const float s = 1.0f / (1.0f + std::exp(-v));
  return s * (1.0f + v * (1.0f - s));
}

}  // namespace ssm::ops::detail
