// Host data an op needs on the GPU (token ids or targets the trainer keeps on the host).
#pragma once
#include "ops/cuda/common.cuh"

namespace ssm::ops::cuda {

// A contiguous GPU copy of `bytes` of host memory as a tensor of `shape` and `dtype`, queued on the
// current stream without waiting for it: from pageable memory the driver stages the bytes before the
// call returns, so the source may be reused at once.
inline Tensor upload(const void* host, const Shape& shape, DType dtype, const char* op) {
  Tensor copy = Tensor::empty(shape, dtype, Device::CUDA);
  SSM_CUDA_CHECK(cudaMemcpyAsync(copy.raw(), host, copy.nbytes(), cudaMemcpyHostToDevice, stream()),
                 "{}: uploading {} bytes", op, copy.nbytes());
  return copy;
}

}  // namespace ssm::ops::cuda
