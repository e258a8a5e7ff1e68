// Turning CUDA errors into ssm::Error (for .cu files): the call that failed, what the op was doing,
// and CUDA's own words.
#pragma once
#include <cuda_runtime.h>

#include "core/error.h"

namespace ssm::cuda {

[[noreturn]] void fail_call(cudaError_t error, const char* call, const std::string& context);

}  // namespace ssm::cuda

// Checks a CUDA runtime call; `...` formats what was being done (the op and its sizes).
#define SSM_CUDA_CHECK(call, ...)                                                   \
  do {                                                                              \
    const cudaError_t ssm_cuda_error_ = (call);                                     \
    if (ssm_cuda_error_ != cudaSuccess)                                             \
      ::ssm::cuda::fail_call(ssm_cuda_error_, #call, ::fmt::format(__VA_ARGS__));   \
  } while (0)

// After a kernel launch: a bad launch configuration shows up here, not at the next call.
#define SSM_CUDA_CHECK_LAUNCH(...) SSM_CUDA_CHECK(cudaGetLastError(), __VA_ARGS__)
