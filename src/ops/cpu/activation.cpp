// ops::activation and ops::gated_activation on the CPU: elementwise over rows tensors (row strides
// honoured), rows spread over threads. Each element is read before its output is written, so the
// output may alias an input.
#include "core/error.h"
#include "ops/cpu/activation_math.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

void activation(Activation act, const Tensor& x, Tensor& y) {
  SSM_GPU_DISPATCH(y, activation, act, x, y);
  SSM_CHECK(is_f32_rows(x) && is_f32_rows(y, x.shape()),
            "activation {}: x and y must be F32 rows of one shape, got {} and {}", activation_name(act), describe(x),
            describe(y));
  const int64_t rows = x.rows(), width = x.size(-1);
  if (x.numel() == 0) return;
  const int64_t ldx = x.row_stride(), ldy = y.row_stride();
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  detail::dispatch_activation(act, [&](auto kind) {
    detail::for_each_row(rows, width, [&](int64_t r) {
      const float* xr = xp + r * ldx;
      float* yr = yp + r * ldy;
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) yr[i] = detail::activation_value<kind.value>(xr[i]);
    });
  });
}

void gated_activation(Activation act, const Tensor& gate, const Tensor& up, float gate_scale, Tensor& y) {
  SSM_GPU_DISPATCH(y, gated_activation, act, gate, up, gate_scale, y);
  SSM_CHECK(is_f32_rows(gate) && is_f32_rows(up, gate.shape()) && is_f32_rows(y, gate.shape()),
            "gated_activation {}: gate, up and y must be F32 rows of one shape, got {}, {} and {}",
            activation_name(act), describe(gate), describe(up), describe(y));
  const int64_t rows = gate.rows(), width = gate.size(-1);
  if (gate.numel() == 0) return;
  const int64_t ldg = gate.row_stride(), ldu = up.row_stride(), ldy = y.row_stride();
  const float* gp = gate.data<float>();
  const float* up_p = up.data<float>();
  float* yp = y.data<float>();
  detail::dispatch_activation(act, [&](auto kind) {
    detail::for_each_row(rows, width, [&](int64_t r) {
      const float* gr = gp + r * ldg;
      const float* ur = up_p + r * ldu;
      float* yr = yp + r * ldy;
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) {
        const float g = gr[i], u = ur[i];
        yr[i] = detail::activation_value<kind.value>(gate_scale * g) * u;
      }
    });
  });
}

}  // namespace ssm::ops
