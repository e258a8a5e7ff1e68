// The fused decode ops on the GPU. ops::linear_conv_step and ops::gated_rmsnorm_linear are one kernel
// each for the few rows of batch decoding (1-8 BF16 rows, BF16 weights; skinny_linear.cu),
// ops::dt_proj_selective_scan_step one kernel for BF16 activations (scan_step_kernels.cuh); any other
// call composes the unfused kernels through a scratch from the memory pool, as the CPU composes the CPU
// ops. The choice is made here, by the call's form, so the mixers have one code path for every batch
// and device.
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/pdl.cuh"
#include "ops/cuda/scan_step_kernels.cuh"
#include "ops/cuda/selective_scan_checks.h"
#include "ops/cuda/skinny_linear.h"

namespace ssm::ops::cuda {

namespace {

// x [B, K] and w [N, K] of one activation dtype, bias F32 [N] optional, y [B, N] rows; returns N.
int64_t check_product(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()) && x.dim() == 2,
            "{}: x must be F32 or BF16 rows [B, K] on the GPU, got {}", op, describe(x));
  const int64_t K = x.size(1);
  SSM_CHECK(w.defined() && w.device() == Device::CUDA && w.dtype() == x.dtype() && w.dim() == 2 && w.size(1) == K &&
                w.is_contiguous(),
            "{}: w must be a contiguous [N, {}] matrix of x's dtype on the GPU, got {}", op, K, describe(w));
  const int64_t N = w.size(0);
  SSM_CHECK(!bias.defined() || is_gpu_vector(bias, N), "{}: bias must be F32 [{}], got {}", op, N, describe(bias));
  SSM_CHECK(y.defined() && y.device() == Device::CUDA && is_activation_dtype(y.dtype()) && y.has_uniform_rows() &&
                y.dim() == 2 && y.size(0) == x.size(0) && y.size(1) == N,
            "{}: y must be F32 or BF16 rows [{}, {}] on the GPU, got {}", op, x.size(0), N, describe(y));
  return N;
}

}  // namespace

void linear_conv_step(const Tensor& x, const LinearConvStep& p, Tensor& conv_state, Tensor& y) {
  const char* op = "linear_conv_step";
  const int64_t N = check_product(op, x, p.weight, p.bias, y), K = x.size(1), batch = x.size(0);
  SSM_CHECK(y.dtype() == x.dtype(), "{}: y must have x's dtype {}, got {}", op, dtype_name(x.dtype()), describe(y));
  SSM_CHECK(!p.column_scale.defined() || is_gpu_vector(p.column_scale, N),
            "{}: column_scale must be F32 [{}], got {}", op, N, describe(p.column_scale));
  SSM_CHECK(!p.norm_weight.defined() || is_gpu_vector(p.norm_weight, K), "{}: norm_weight must be F32 [{}], got {}",
            op, K, describe(p.norm_weight));
  const Tensor& cw = p.conv_weight;
  SSM_CHECK(cw.defined() && cw.device() == Device::CUDA && cw.dtype() == DType::F32 && cw.dim() == 2 &&
                cw.size(1) >= 1 && cw.is_contiguous(),
            "{}: conv_weight must be contiguous F32 [C, K] on the GPU, got {}", op, describe(cw));
  const int64_t C = cw.size(0), taps = cw.size(1);
  SSM_CHECK(p.conv_offset >= 0 && p.conv_offset + C <= N, "{}: the conv's {} channels from column {} do not fit y {}",
            op, C, p.conv_offset, describe(y));
  SSM_CHECK(!p.conv_bias.defined() || is_gpu_vector(p.conv_bias, C), "{}: conv_bias must be F32 [{}], got {}", op, C,
            describe(p.conv_bias));
  const Shape state_shape{batch, taps - 1, C};
  SSM_CHECK(is_gpu_rows(conv_state, DType::F32, state_shape), "{}: conv_state must be F32 rows {} on the GPU, got {}",
            op, shape_str(state_shape), describe(conv_state));
  if (batch == 0 || N == 0) return;
  if (K > 0 && try_skinny_linear_conv_step(x, p, conv_state, y)) return;
  Tensor normed;
  if (p.norm_weight.defined()) {
    normed = Tensor::empty(x.shape(), x.dtype(), Device::CUDA);
    rmsnorm(x, p.norm_weight, p.norm_eps, normed);
  }
  linear(normed.defined() ? normed : x, p.weight, p.bias, y, false);
  if (p.column_scale.defined()) scale_columns(y, p.column_scale);
  // In place: each thread of the conv step reads its elements of x before it writes them to y.
  Tensor conv_columns = y.slice(1, p.conv_offset, C);
  conv1d_causal_step(conv_columns, cw, p.conv_bias, true, conv_state, conv_columns);
}

void gated_rmsnorm_linear(const Tensor& x, const Tensor& z, const Tensor& norm_weight, int64_t group_size,
                          bool norm_before_gate, float eps, const Tensor& w, const Tensor& bias, Tensor& y,
                          bool accumulate) {
  const char* op = "gated_rmsnorm_linear";
  check_product(op, x, w, bias, y);
  const int64_t K = x.size(1);
  SSM_CHECK(!z.defined() || is_gpu_rows(z, x.dtype(), x.shape()),
            "{}: z must be rows of x's shape and dtype ({}), got {}", op, describe(x), describe(z));
  SSM_CHECK(is_gpu_vector(norm_weight, K), "{}: norm_weight must be F32 [{}], got {}", op, K, describe(norm_weight));
  SSM_CHECK(group_size > 0 && K % group_size == 0, "{}: group_size {} does not divide the width {} of x", op,
            group_size, K);
  if (x.size(0) == 0 || w.size(0) == 0) return;
  if (K > 0 && try_skinny_gated_rmsnorm_linear(x, z, norm_weight, group_size, norm_before_gate, eps, w, bias, y,
                                               accumulate))
    return;
  Tensor gated = Tensor::empty(x.shape(), x.dtype(), Device::CUDA);
  gated_rmsnorm(x, z, norm_weight, group_size, norm_before_gate, eps, gated);
  linear(gated, w, bias, y, accumulate);
}

void dt_proj_selective_scan_step(const Tensor& dt_low, const Tensor& dt_proj_weight, const SelectiveScanInputs& in,
                                 Tensor& state, Tensor& y) {
  const char* op = "dt_proj_selective_scan_step";
  SSM_CHECK(!in.delta.defined(), "{}: in.delta must be undefined (the op computes it)", op);
  SelectiveScanInputs probe = in;  // Δ will have u's shape and dtype: u stands for it in the scan's checks
  probe.delta = in.u;
  const int64_t N = check_scan_inputs(op, probe, 2);
  const DType dtype = in.u.dtype();
  const int64_t batch = in.u.size(0), D = in.u.size(1);
  SSM_CHECK(is_gpu_rows(dt_low, dtype) && dt_low.dim() == 2 && dt_low.size(0) == batch,
            "{}: dt_low must be {} rows [{}, R] on the GPU, got {}", op, dtype_name(dtype), batch, describe(dt_low));
  const int64_t R = dt_low.size(1);
  const Tensor& w = dt_proj_weight;
  SSM_CHECK(w.defined() && w.device() == Device::CUDA && w.dtype() == dtype && w.dim() == 2 && w.size(0) == D &&
                w.size(1) == R && w.is_contiguous(),
            "{}: dt_proj_weight must be a contiguous {} [{}, {}] on the GPU, got {}", op, dtype_name(dtype), D, R,
            describe(w));
  SSM_CHECK(is_gpu_rows(y, dtype, in.u.shape()), "{}: y must be rows of u's shape {} and dtype {}, got {}", op,
            shape_str(in.u.shape()), dtype_name(dtype), describe(y));
  check_gpu_f32(op, "state", state, {batch, D, N});
  if (batch == 0 || D == 0) return;
  if (dtype == DType::BF16) {
    const scan_step::Args<bf16> a{dt_low.data<bf16>(),
                                  w.data<bf16>(),
                                  in.u.data<bf16>(),
                                  in.B.data<bf16>(),
                                  in.C.data<bf16>(),
                                  data_or_null<bf16>(in.z),
                                  dt_low.row_stride(),
                                  in.u.row_stride(),
                                  in.B.row_stride(),
                                  in.C.row_stride(),
                                  stride_or_zero(in.z),
                                  y.row_stride(),
                                  in.A.data<float>(),
                                  data_or_null<float>(in.delta_bias),
                                  data_or_null<float>(in.D),
                                  state.data<float>(),
                                  y.data<bf16>(),
                                  int(D),
                                  int(R),
                                  int(N),
                                  in.delta_softplus};
    SSM_CUDA_CHECK(pdl::launch_overlapped(scan_step::dt_proj_scan_step_kernel<bf16>,
                                          dim3(blocks_for(D, scan_step::kThreads), unsigned(batch)),
                                          dim3(scan_step::kThreads), scan_step::shared_bytes(int(R), int(N)),
                                          stream(), a),
                   "{} of batch {}, D {}, R {}, N {}", op, batch, D, R, N);
    return;
  }
  SelectiveScanInputs with_delta = in;
  with_delta.delta = Tensor::empty({batch, D}, dtype, Device::CUDA);
  linear(dt_low, w, Tensor(), with_delta.delta, false);
  cuda::selective_scan_step(with_delta, state, y);  // qualified: ADL would also find ops::selective_scan_step
}

}  // namespace ssm::ops::cuda
