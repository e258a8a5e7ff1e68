// Sums across a warp and across a block, in F32.
#pragma once
#include <cuda_runtime.h>

namespace ssm::ops::cuda {

// The sum of v over the 32 lanes of a warp, returned to every lane.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The sum of v over the block, returned to every thread. Every thread of the block must call it;
// blockDim.x is a multiple of 32. It ends with a barrier, so it may be called again, and whatever
// the threads read before calling it is read before any thread goes on.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32);
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = warp_sum(lane < int(blockDim.x / 32) ? warp_sums[lane] : 0.0f);
  __syncthreads();
  return v;
}

}  // namespace ssm::ops::cuda
