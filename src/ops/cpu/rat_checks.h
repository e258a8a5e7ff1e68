// Validation of RAT's inputs and cache, shared by the CPU kernels (rat.cpp, rat_backward.cpp) and
// the GPU backend (ops/cuda/rat.cu). Defined in rat.cpp.
#pragma once
#include <cstdint>

#include "ops/cpu/op_util.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

struct RatDims {
  int64_t batch, T, heads, groups, head_dim, width, chunk;  // width = heads * head_dim
  float scale;                                              // softmax scale, default resolved
};

// Checks q/k/v/g/gate_bias/sizes; `seq_dims` is 3 for [B,T,W] tensors and 2 for the step's [B,W].
// q/k/v/g have `where`'s dtype and device; gate_bias is F32 on that device.
RatDims rat_check_inputs(const char* op, const RatInputs& in, int64_t seq_dims, const Placement& where = {});
// Checks the cache's tensors against the dims (batch, width) and that their chunk capacity holds
// every chunk finished after `new_tokens` more tokens. The F32 tensors live on `device`; tokens on
// the host, and a GPU cache also has device_tokens.
void rat_check_cache(const char* op, const RatCache& cache, const RatDims& d, int64_t new_tokens,
                     Device device = Device::CPU);

}  // namespace ssm::ops::detail
