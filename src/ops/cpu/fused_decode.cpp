// The fused decode ops (ops.h, "fused forms of a layer's decode step") on the CPU: each composes the
// CPU ops it names through per-thread scratch rows, so it computes exactly what the unfused calls do.
// The GPU runs them as single kernels where it can (ops/cuda/fused_decode.cu).
#include <algorithm>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using detail::describe;

// [rows, width] F32 rows of grow-only per-thread scratch; `slot` tells apart the buffers one call
// holds at once.
Tensor scratch_rows(int slot, int64_t rows, int64_t width) {
  thread_local Tensor storage[2];
  Tensor& s = storage[slot];
  const int64_t n = rows * width;
  if (!s.defined() || s.numel() < n) s = Tensor::empty({std::max<int64_t>(n, 1)});
  return s.slice(0, 0, n).view({rows, width});
}

}  // namespace

void linear_conv_step(const Tensor& x, const LinearConvStep& p, Tensor& conv_state, Tensor& y) {
  SSM_GPU_DISPATCH(y, linear_conv_step, x, p, conv_state, y);
  SSM_CHECK(x.defined() && x.dim() == 2 && y.defined() && y.dim() == 2,
            "linear_conv_step: x and y must be [B, K] and [B, N] rows, got {} and {}", describe(x), describe(y));
  SSM_CHECK(p.conv_weight.defined() && p.conv_weight.dim() == 2,
            "linear_conv_step: conv_weight must be [C, K], got {}", describe(p.conv_weight));
  const int64_t C = p.conv_weight.size(0);
  SSM_CHECK(p.conv_offset >= 0 && p.conv_offset + C <= y.size(1),
            "linear_conv_step: the conv's {} channels from column {} do not fit y {}", C, p.conv_offset, describe(y));
  Tensor input = x;
  if (p.norm_weight.defined()) {
    input = scratch_rows(0, x.size(0), x.size(1));
    rmsnorm(x, p.norm_weight, p.norm_eps, input);
  }
  linear(input, p.weight, p.bias, y);
  if (p.column_scale.defined()) scale_columns(y, p.column_scale);
  Tensor conv = y.slice(1, p.conv_offset, C);  // the step's output overwrites its input
  conv1d_causal_step(conv, p.conv_weight, p.conv_bias, true, conv_state, conv);
}

void gated_rmsnorm_linear(const Tensor& x, const Tensor& z, const Tensor& norm_weight, int64_t group_size,
                          bool norm_before_gate, float eps, const Tensor& w, const Tensor& bias, Tensor& y,
                          bool accumulate) {
  SSM_GPU_DISPATCH(y, gated_rmsnorm_linear, x, z, norm_weight, group_size, norm_before_gate, eps, w, bias, y,
                   accumulate);
  SSM_CHECK(x.defined() && x.dim() == 2, "gated_rmsnorm_linear: x must be [B, K] rows, got {}", describe(x));
  Tensor gated = scratch_rows(0, x.size(0), x.size(1));
  gated_rmsnorm(x, z, norm_weight, group_size, norm_before_gate, eps, gated);
  linear(gated, w, bias, y, accumulate);
}

void dt_proj_selective_scan_step(const Tensor& dt_low, const Tensor& dt_proj_weight, const SelectiveScanInputs& in,
                                 Tensor& state, Tensor& y) {
  SSM_GPU_DISPATCH(y, dt_proj_selective_scan_step, dt_low, dt_proj_weight, in, state, y);
  SSM_CHECK(!in.delta.defined(), "dt_proj_selective_scan_step: in.delta must be undefined (the op computes it)");
  SSM_CHECK(dt_low.defined() && dt_low.dim() == 2 && dt_proj_weight.defined() && dt_proj_weight.dim() == 2,
            "dt_proj_selective_scan_step: dt_low must be [B, R] rows and dt_proj_weight [D, R], got {} and {}",
            describe(dt_low), describe(dt_proj_weight));
  SelectiveScanInputs with_delta = in;
  with_delta.delta = scratch_rows(0, dt_low.size(0), dt_proj_weight.size(0));
  linear(dt_low, dt_proj_weight, Tensor(), with_delta.delta);
  selective_scan_step(with_delta, state, y);
}

}  // namespace ssm::ops
