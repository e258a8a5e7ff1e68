// SsdInputs as the SSD kernels see them: the shared argument check (CPU and GPU ops) and, for the CPU
// kernels, raw pointers and row strides (shared by the SSD forward, step and backward).
#pragma once
#include "ops/ops.h"

namespace ssm::ops::detail {

struct SsdSizes {
  int64_t batch, T, H, P, G, N;
};

// Checks the arguments of ssd (seq_dims 3: [B,T,W] tensors) or ssd_step (seq_dims 2: [B,W]): x, dt, B, C
// and y rows of dtype `activations`; A, dt_bias, D F32 vectors; state (when given) contiguous F32
// [B,H,P,N]; every tensor on `device`. Returns the sizes; bad arguments are an ssm::Error naming `op`.
SsdSizes check_ssd_args(const char* op, const SsdInputs& in, const Tensor* state, const Tensor& y, int64_t seq_dims,
                        Device device, DType activations);

struct SsdPointers {
  const float *x, *dt, *B, *C, *A, *dt_bias, *D;  // dt_bias and D are null when absent
  int64_t ldx, lddt, ldB, ldC;
};

inline SsdPointers ssd_pointers(const SsdInputs& in) {
  return {in.x.data<float>(),
          in.dt.data<float>(),
          in.B.data<float>(),
          in.C.data<float>(),
          in.A.data<float>(),
          in.dt_bias.defined() ? in.dt_bias.data<float>() : nullptr,
          in.D.defined() ? in.D.data<float>() : nullptr,
          in.x.row_stride(),
          in.dt.row_stride(),
          in.B.row_stride(),
          in.C.row_stride()};
}

}  // namespace ssm::ops::detail
