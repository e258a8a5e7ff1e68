// Element loads and stores of the GPU kernels: F32 or BF16 values, arithmetic in F32. No engine
// headers, so that the standalone kernel files under dev/cuda/ can include the kernels too.
#pragma once
#include <cuda_bf16.h>

namespace ssm::ops::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) { return __float2bfloat16(v); }

}  // namespace ssm::ops::cuda
