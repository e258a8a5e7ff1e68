// Argument checks shared by the GPU selective scan's forward and backward (host code).
#pragma once
#include "core/error.h"
#include "ops/cuda/op_checks.h"
#include "ops/ops.h"

namespace ssm::ops::cuda {

// The N of the scan: every input on the GPU, u/delta/B/C/z rows of one activation dtype (dims 3:
// [B, T, *], dims 2: [B, *]), A contiguous F32 [D, N] with N <= 64, delta_bias and D F32 [D].
inline int64_t check_scan_inputs(const char* op, const SelectiveScanInputs& in, int64_t dims) {
  for (const Tensor* t : {&in.u, &in.delta, &in.A, &in.B, &in.C, &in.delta_bias, &in.D, &in.z})
    SSM_CHECK(!t->defined() || t->device() == Device::CUDA, "{}: every tensor must be on the GPU", op);
  const char* layout = dims == 3 ? "[B, T, D]" : "[B, D]";
  const DType dtype = in.u.dtype();
  SSM_CHECK((dtype == DType::F32 || dtype == DType::BF16) && is_gpu_rows(in.u, dtype) && in.u.dim() == dims,
            "{}: u must be F32 or BF16 rows {}, got {}", op, layout, describe(in.u));
  const Shape& shape = in.u.shape();
  const int64_t channels = shape.back();
  SSM_CHECK(is_gpu_rows(in.delta, dtype, shape), "{}: delta must be rows of u's shape {} and dtype {}, got {}", op,
            shape_str(shape), dtype_name(dtype), describe(in.delta));
  SSM_CHECK(in.A.defined() && in.A.dtype() == DType::F32 && in.A.dim() == 2 && in.A.size(0) == channels &&
                in.A.is_contiguous(),
            "{}: A must be contiguous F32 [{}, N] for u {}, got {}", op, channels, shape_str(shape), describe(in.A));
  const int64_t N = in.A.size(1);
  SSM_CHECK(N <= 64, "{}: the GPU scan holds at most 64 states per channel, A is {}", op, describe(in.A));
  Shape bc_shape = shape;
  bc_shape.back() = N;
  SSM_CHECK(is_gpu_rows(in.B, dtype, bc_shape), "{}: B must be {} rows {} for A {}, got {}", op, dtype_name(dtype),
            shape_str(bc_shape), describe(in.A), describe(in.B));
  SSM_CHECK(is_gpu_rows(in.C, dtype, bc_shape), "{}: C must be {} rows {} for A {}, got {}", op, dtype_name(dtype),
            shape_str(bc_shape), describe(in.A), describe(in.C));
  SSM_CHECK(!in.delta_bias.defined() || is_gpu_vector(in.delta_bias, channels),
            "{}: delta_bias must be F32 [{}], got {}", op, channels, describe(in.delta_bias));
  SSM_CHECK(!in.D.defined() || is_gpu_vector(in.D, channels), "{}: D must be F32 [{}], got {}", op, channels,
            describe(in.D));
  SSM_CHECK(!in.z.defined() || is_gpu_rows(in.z, dtype, shape),
            "{}: z must be rows of u's shape {} and dtype {}, got {}", op, shape_str(shape), dtype_name(dtype),
            describe(in.z));
  SSM_CHECK(shape[0] <= 65535, "{}: the GPU scan takes at most 65535 sequences per call, got {}", op, shape[0]);
  return N;
}

// A contiguous F32 tensor of `shape` on the GPU (states, chunk states, parameter gradients).
inline void check_gpu_f32(const char* op, const char* name, const Tensor& t, const Shape& shape) {
  SSM_CHECK(t.defined() && t.device() == Device::CUDA && t.dtype() == DType::F32 && t.shape() == shape &&
                t.is_contiguous(),
            "{}: {} must be contiguous F32 {} on the GPU, got {}", op, name, shape_str(shape), describe(t));
}

}  // namespace ssm::ops::cuda
