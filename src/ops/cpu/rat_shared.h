// What the CPU kernels (rat.cpp, rat_backward.cpp) and the GPU backend (ops/cuda/rat.cu) share of
// RAT: the validation of its inputs and cache (defined in rat.cpp) and the rotation's frequencies.
#pragma once
#include <cmath>
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

// The rotation's frequency of channel pair (j, j + dh/2): 1 / base^(2j/dh) in float32 as torch
// computes inv_freq; the angle at chunk index p is float(p) * rat_inv_freq(...), also in float32.
inline float rat_inv_freq(int64_t j, int64_t head_dim, float theta) {
  return 1.0f / std::pow(theta, float(2 * j) / float(head_dim));
}

}  // namespace ssm::ops::detail
