// What every GPU kernel file shares: element loads and stores for F32 and BF16 activations, a
// dtype switch that instantiates a kernel for both, views of rows tensors, launch helpers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/check.h"
#include "core/cuda/runtime.h"
#include "core/tensor.h"
#include "ops/cuda/bf16.cuh"  // bf16, to_float, from_float

namespace ssm::ops::cuda {

// A rows tensor as a kernel sees it: element (r, c) at data[r * ld + c].
template <class T>
struct Rows {
  T* data;
  int64_t ld;
  __device__ __forceinline__ T& at(int64_t r, int64_t c) const { return data[r * ld + c]; }
};

template <class T>
Rows<T> rows_of(const Tensor& t) {
  return {static_cast<T*>(t.raw()), t.numel() == 0 ? t.size(-1) : t.row_stride()};
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
