// What every GPU kernel file shares: element loads and stores for F32 and BF16 activations, a
// dtype switch that instantiates a kernel for both, views of rows tensors, launch helpers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/check.h"
#include "core/cuda/runtime.h"
#include "core/tensor.h"
#include "ops/cuda/element.cuh"  // bf16, to_float, from_float
#include "ops/cuda/rows.cuh"

namespace ssm::ops::cuda {

// 2^x on the multi-function unit: one instruction, relative error about 2^-22; 0 below 2^-126.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
constexpr float kLog2e = 1.4426950408889634f;

// 2^x on the FMA pipe, for where the exp unit's error would add up (a decay applied thousands of
// times): x = j + f with j = round(x), 2^f by Cephes' degree-6 exp2f polynomial on [-0.5, 0.5]
// (relative error < 8e-8, unbiased near 0), 2^j added to the exponent bits. x is clamped to
// [-126, 126]: below, ~1e-38 instead of 0; above, finite instead of inf.
__device__ __forceinline__ float poly_exp2(float x) {
  x = fminf(fmaxf(x, -126.0f), 126.0f);
  const float shifted = x + 12582912.0f;  // 1.5 * 2^23: round(x) lands in the low mantissa bits
  const float f = x - (shifted - 12582912.0f);
  float p = 1.535336188319500e-4f;
  p = fmaf(p, f, 1.339887440266574e-3f);
  p = fmaf(p, f, 9.618437357674640e-3f);
  p = fmaf(p, f, 5.550332471162809e-2f);
  p = fmaf(p, f, 2.402264791363012e-1f);
  p = fmaf(p, f, 6.931472028550421e-1f);
  p = fmaf(p, f, 1.0f);
  return __int_as_float(__float_as_int(p) + (__float_as_int(shifted) << 23));
}

template <class T>
Rows<T> rows_of(const Tensor& t) {
  return {static_cast<T*>(t.raw()), t.numel() == 0 ? t.size(-1) : t.row_stride()};
}
// The rows of an optional tensor: a null view when it is undefined.
template <class T>
Rows<T> optional_rows_of(const Tensor& t) {
  return t.defined() ? rows_of<T>(t) : Rows<T>{nullptr, 0};
}

inline cudaStream_t stream() { return static_cast<cudaStream_t>(::ssm::cuda::current_stream()); }

inline unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

// An attribute of the current GPU, e.g. its multiprocessor count.
inline int device_attribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  SSM_CUDA_CHECK(cudaGetDevice(&device), "reading the current GPU");
  SSM_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device), "reading GPU attribute {}", int(attribute));
  return value;
}
// The GPU's multiprocessors (read once), for kernels that size their grid to fill it.
inline int multiprocessor_count() {
  static const int count = device_attribute(cudaDevAttrMultiProcessorCount);
  return count;
}
// The shared memory of one multiprocessor (read once).
inline size_t shared_memory_per_multiprocessor() {
  static const size_t bytes = size_t(device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor));
  return bytes;
}
// The most shared memory one block can ask for (read once).
inline size_t shared_memory_per_block() {
  static const size_t bytes = size_t(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
  return bytes;
}

// The activation dtypes the GPU ops take.
inline bool is_activation_dtype(DType d) { return d == DType::F32 || d == DType::BF16; }

// Calls fn.template operator()<T>() with T = float or bf16 for the activation dtype.
template <class Fn>
void with_activation_type(DType dtype, const char* op, Fn&& fn) {
  if (dtype == DType::F32) fn.template operator()<float>();
  else if (dtype == DType::BF16) fn.template operator()<bf16>();
  else fail("{}: GPU activations must be F32 or BF16, got {}", op, dtype_name(dtype));
}

// Every tensor given must be defined and on the GPU.
inline void check_on_gpu(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    SSM_CHECK(t->defined() && t->device() == Device::CUDA, "{}: every tensor must be on the GPU", op);
}

}  // namespace ssm::ops::cuda
