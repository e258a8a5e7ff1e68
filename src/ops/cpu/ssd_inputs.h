// Raw pointers and row strides of SsdInputs, shared by the SSD forward, step and backward kernels.
#pragma once
#include "ops/ops.h"

namespace ssm::ops::detail {

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
