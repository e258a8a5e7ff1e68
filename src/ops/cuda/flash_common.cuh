// What the attention kernels share (the forward's flash_attention.cuh and flash_decode.cuh, the
// backward's attention_backward_kernels.cuh): sequence tensors as the kernels see them and attention's
// causal visibility. No engine headers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ssm::ops::cuda::flash {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// A [B, rows, width] tensor whose last dim is contiguous: row r of batch b at data + b*batch_stride + r*row_stride.
template <class T>
struct SeqPtr {
  T* data;
  int64_t batch_stride, row_stride;
  __device__ __forceinline__ T* row(int64_t b, int64_t r) const { return data + b * batch_stride + r * row_stride; }
};

// Attention's visibility: query t sits at position offset + t and sees the keys j <= its position,
// and with a window W > 0 only those with position - j < W.
struct CausalWindow {
  int64_t offset, window;
  __device__ __forceinline__ int64_t last(int, int64_t t) const { return offset + t; }
  __device__ __forceinline__ int64_t first(int, int64_t t) const {
    return window > 0 ? max(int64_t(0), offset + t - window + 1) : 0;
  }
};

}  // namespace ssm::ops::cuda::flash
