// The SSD kernels' arguments from an op's inputs (host code shared by ssd.cu and ssd_backward.cu).
#pragma once
#include "ops/cpu/ssd_inputs.h"
#include "ops/cuda/op_checks.h"  // data_or_null, stride_or_zero
#include "ops/cuda/ssd_kernels.cuh"

namespace ssm::ops::cuda {

// y may be undefined (the backward reads no y): then null with row stride 0.
template <class T>
ssd_kernels::Args<T> ssd_kernel_args(const SsdInputs& in, const detail::SsdSizes& d, const Tensor& y) {
  return {in.x.data<T>(),
          in.dt.data<T>(),
          in.B.data<T>(),
          in.C.data<T>(),
          data_or_null<T>(y),
          in.A.data<float>(),
          data_or_null<float>(in.dt_bias),
          data_or_null<float>(in.D),
          in.x.row_stride(),
          in.dt.row_stride(),
          in.B.row_stride(),
          in.C.row_stride(),
          stride_or_zero(y),
          int(d.batch),
          int(d.T),
          int(d.H),
          int(d.P),
          int(d.G),
          int(d.N),
          in.dt_min,
          in.dt_max};
}

}  // namespace ssm::ops::cuda
