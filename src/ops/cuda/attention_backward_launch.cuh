// Host side of the attention backward kernels (attention_backward_kernels.cuh): their launches in
// order. Returns CUDA's error codes; no engine headers (dev/cuda/attention_backward.cu times exactly this).
#pragma once
#include <cuda_runtime.h>

#include "attention_backward_kernels.cuh"
#include "flash_attention.cuh"  // allow_large_smem, kExactMaxHeadDim

namespace ssm::ops::cuda::attention_backward_kernels {

static_assert(flash::kExactMaxHeadDim <= kMaxChunks * kTile, "the backward takes every head dim the forward does");

template <class T, int kChunks>
cudaError_t launch_chunks(const Args<T>& a, cudaStream_t stream) {
  constexpr auto dkdv = dkdv_kernel<T, kChunks>;
  constexpr auto dq = dq_kernel<T, kChunks>;
  if (const cudaError_t e = flash::allow_large_smem<dkdv>(); e != cudaSuccess) return e;
  if (const cudaError_t e = flash::allow_large_smem<dq>(); e != cudaSuccess) return e;
  const int64_t rows = int64_t(a.batch) * a.T * a.n_heads;
  if (rows > 0) {
    delta_kernel<T><<<unsigned((rows + kDeltaWarps - 1) / kDeltaWarps), 32 * kDeltaWarps, 0, stream>>>(a);
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  const dim3 key_tiles((a.S + kTile - 1) / kTile, a.n_kv_heads, a.batch);
  dkdv<<<key_tiles, kThreads, dkdv_smem_bytes<kChunks>(), stream>>>(a);
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  if (rows == 0) return cudaSuccess;  // no queries: dk and dv are 0, there is no dq
  const dim3 query_tiles((a.T + kTile - 1) / kTile, a.n_heads, a.batch);
  dq<<<query_tiles, kThreads, dq_smem_bytes<kChunks>(), stream>>>(a);
  return cudaGetLastError();
}

// The backward of a.batch sequences (a.S >= 1, a.head_dim <= kMaxChunks * kTile): a.delta is an F32
// scratch of B * n_heads * T floats.
template <class T>
cudaError_t launch(const Args<T>& a, cudaStream_t stream) {
  switch (chunks_for(a.head_dim)) {
    case 1: return launch_chunks<T, 1>(a, stream);
    case 2: return launch_chunks<T, 2>(a, stream);
    case 3: return launch_chunks<T, 3>(a, stream);
    default: return launch_chunks<T, 4>(a, stream);
  }
}

}  // namespace ssm::ops::cuda::attention_backward_kernels
