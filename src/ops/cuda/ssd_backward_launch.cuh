// Host side of the SSD backward kernels (ssd_backward_kernels.cuh): their launches in order. Returns
// CUDA's error codes; no engine headers.
#pragma once
#include <cuda_runtime.h>

#include "ssd_backward_kernels.cuh"

namespace ssm::ops::cuda::ssd_backward_kernels {

// Once per instantiation: the shared-memory limits of the kernels that take more than 48 KB.
template <class T>
cudaError_t kernel_setup() {
  static const cudaError_t error = [] {
    cudaError_t e = cudaFuncSetAttribute(group_and_sums_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(group_and_sums_smem<T>()));
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(state_walk_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(state_walk_smem<T, true>()));
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(head_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(head_smem()));
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(dbc_and_head_kernel<T, 64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(dbc_and_head_smem<T, 64>()));
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(dbc_and_head_kernel<T, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(dbc_and_head_smem<T, 128>()));
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(dbc_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dbc_smem<T>()));
    return e;
  }();
  return error;
}

// Which kernels a launch runs: all (the op); one alone only to time it (dev/cuda/ssd_backward.cu).
enum Stages {
  kChunkValues = 1,
  kSegmentSums = 2,
  kSegmentPass = 4,
  kStateWalk = 8,
  kGroup = 16,
  kHead = 32,
  kDbc = 64,
  kParams = 128,
  kAllStages = 255
};

// The backward of one call: `scratch` holds plan.scratch_floats floats (plan = make_plan(a, g,
// chunk_states != null)); chunk_states: the forward's state entering every chunk, or null.
template <class T>
cudaError_t launch_backward(const Args<T>& a, const Grads<T>& g, const Plan& plan, float* scratch, cudaStream_t stream,
                            int stages = kAllStages, T* chunk_states = nullptr) {
  if (const cudaError_t e = kernel_setup<T>(); e != cudaSuccess) return e;
  const Scratch<T> s = carve_scratch(a, plan, scratch, chunk_states);
  const bool states = plan.states || plan.dstates, params = g.dA || g.dD || g.ddt_bias;
  // Each launch checked at once: a launch that fails stops the sequence.
  cudaError_t e = cudaSuccess;
  if (stages & kChunkValues) {
    chunk_values_kernel<T><<<plan.values_blocks, kThreads, chunk_values_smem(), stream>>>(a, s);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  // 5 (C Bᵀ for head_kernel, d(C Bᵀ) for dbc_block) and 2 in one launch.
  const unsigned group_blocks = (stages & kGroup) && (plan.dbc || !plan.head_tiles) ? plan.group_blocks : 0;
  const unsigned sums_blocks = states && plan.segments.count > 1 && (stages & kSegmentSums) ? plan.walk_blocks : 0;
  if (group_blocks + sums_blocks > 0) {
    group_and_sums_kernel<T><<<group_blocks + sums_blocks, kThreads, group_and_sums_smem<T>(), stream>>>(
        a, g, s, plan.segments, group_blocks);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (states && (stages & kSegmentPass)) {
    segment_pass_kernel<T><<<plan.pass_blocks, kThreads, 0, stream>>>(a, g, s, plan.segments);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (states && (stages & kStateWalk)) {
    state_walk_kernel<T><<<plan.walk_blocks, kThreads, state_walk_smem<T, true>(), stream>>>(a, g, s, plan.segments);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  // 7 and 6 in one launch on the tensor cores; else 6 on the CUDA cores, then 7.
  const unsigned dbc_blocks = plan.dbc && (stages & kDbc) ? plan.dbc_blocks : 0;
  const unsigned head_blocks = stages & kHead ? plan.head_blocks : 0;
  if (plan.head_tiles && dbc_blocks + head_blocks > 0) {
    const unsigned blocks = dbc_blocks + head_blocks;
    if (plan.head_tiles == 64)
      dbc_and_head_kernel<T, 64><<<blocks, kThreads, dbc_and_head_smem<T, 64>(), stream>>>(a, g, s, dbc_blocks);
    else
      dbc_and_head_kernel<T, 128><<<blocks, kThreads, dbc_and_head_smem<T, 128>(), stream>>>(a, g, s, dbc_blocks);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (!plan.head_tiles && head_blocks > 0) {
    head_kernel<T><<<head_blocks, kThreads, head_smem(), stream>>>(a, g, s);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (!plan.head_tiles && dbc_blocks > 0) {
    dbc_kernel<T><<<dbc_blocks, kThreads, dbc_smem<T>(), stream>>>(a, g, s);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (params && (stages & kParams)) {
    param_kernel<<<plan.param_blocks, kThreads, param_smem(), stream>>>(a.heads, int64_t(a.batch) * plan.chunks, s.parts, g.dA,
                                                             g.dD, g.ddt_bias);
    e = cudaGetLastError();
  }
  return e;
}

}  // namespace ssm::ops::cuda::ssd_backward_kernels
