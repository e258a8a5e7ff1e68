// What ops/cuda/mamba3.cu and mamba3_backward.cu share on the host: the inputs' checks, the walk's threads and the
// kernels' view of the inputs.
#pragma once
#include <bit>
#include <cmath>
#include <limits>

#include "ops/cuda/common.cuh"
#include "ops/cuda/mamba3_kernels.cuh"
#include "ops/cuda/op_checks.h"

namespace ssm::ops::cuda::mamba3_launch {

using namespace mamba3_kernels;

struct Dims {
  int64_t B, T, H, P, G, N, S, R;
};

// Checks the inputs ([B,T,·] rows, or [B,·] for a step; one activation dtype), y and the state.
inline Dims check(const char* op, const Mamba3Inputs& in, const Mamba3State* state, const Tensor& y, bool step,
                  const char* y_name = "y") {
  check_on_gpu(op, {&in.x, &in.B, &in.C, &in.dt, &in.A, &in.trap, &in.angles, &in.dt_bias, &in.B_bias, &in.C_bias, &y});
  const DType dtype = in.x.dtype();
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(is_activation_dtype(dtype) && is_gpu_rows(in.dt, dtype) && in.dt.dim() == dims,
            "{}: dt must be rows of {} dims in x's dtype (F32 or BF16), got {} and x {}", op, dims, describe(in.dt),
            describe(in.x));
  Dims d{in.dt.size(0), step ? 1 : in.dt.size(1), in.dt.size(-1), 0, in.n_groups, 0, 0, in.rank};
  SSM_CHECK(d.G > 0 && d.H % d.G == 0 && d.R > 0, "{}: n_groups {} must divide the {} heads and rank {} be positive",
            op, d.G, d.H, d.R);
  const auto rows = [&](int64_t width) { return step ? Shape{d.B, width} : Shape{d.B, d.T, width}; };
  const auto leads = [&](const Tensor& t) {
    return is_gpu_rows(t, dtype) && t.dim() == dims && t.size(0) == d.B && (step || t.size(1) == d.T);
  };
  SSM_CHECK(leads(in.x) && in.x.size(-1) > 0 && in.x.size(-1) % (d.R * d.H) == 0,
            "{}: x must be rows {}[{} ranks × {} heads × P], got {}", op, shape_str(rows(0)), d.R, d.H, describe(in.x));
  d.P = in.x.size(-1) / (d.R * d.H);
  SSM_CHECK(
      leads(in.B) && in.B.size(-1) > 0 && in.B.size(-1) % (d.R * d.G) == 0 && is_gpu_rows(in.C, dtype, in.B.shape()),
      "{}: B and C must be rows {}[{} ranks × {} groups × N] of x's dtype, got {} and {}", op, shape_str(rows(0)), d.R,
      d.G, describe(in.B), describe(in.C));
  d.N = in.B.size(-1) / (d.R * d.G);
  SSM_CHECK(d.N % 4 == 0 && d.N <= 32 * kPieces,
            "{}: the GPU kernels take a d_state that is a multiple of 4 and at most {}, got {}", op, 32 * kPieces, d.N);
  SSM_CHECK(is_gpu_rows(in.A, dtype, rows(d.H)) && is_gpu_rows(in.trap, dtype, rows(d.H)),
            "{}: A and trap must be rows {} like dt, got {} and {}", op, shape_str(rows(d.H)), describe(in.A),
            describe(in.trap));
  SSM_CHECK(leads(in.angles) && in.angles.size(-1) > 0 && in.angles.size(-1) * 2 <= d.N,
            "{}: angles must be rows {}[S] with 0 < S <= N/2 = {}, got {}", op, shape_str(rows(0)), d.N / 2,
            describe(in.angles));
  d.S = in.angles.size(-1);
  const auto on_gpu_f32 = [](const Tensor& t, const Shape& shape) {
    return t.defined() && t.device() == Device::CUDA && t.dtype() == DType::F32 && t.shape() == shape &&
           t.is_contiguous();
  };
  SSM_CHECK(is_gpu_vector(in.dt_bias, d.H) && (!in.D.defined() || is_gpu_vector(in.D, d.H)),
            "{}: dt_bias and D must be F32 [{}] on the GPU (D may be absent), got {} and {}", op, d.H,
            describe(in.dt_bias), describe(in.D));
  SSM_CHECK(on_gpu_f32(in.B_bias, {d.H, d.R * d.N}) && on_gpu_f32(in.C_bias, {d.H, d.R * d.N}),
            "{}: B_bias and C_bias must be contiguous F32 [{}, {}] on the GPU, got {} and {}", op, d.H, d.R * d.N,
            describe(in.B_bias), describe(in.C_bias));
  SSM_CHECK(std::isfinite(in.A_floor) && in.A_floor >= 0, "{}: A_floor must not be negative, got {}", op, in.A_floor);
  SSM_CHECK(is_gpu_rows(y, dtype, rows(d.R * d.H * d.P)), "{}: {} must be rows {} of x's dtype, got {}", op, y_name,
            shape_str(rows(d.R * d.H * d.P)), describe(y));
  if (state)
    SSM_CHECK(on_gpu_f32(state->angle, {d.B, d.H, d.S}) && on_gpu_f32(state->ssm, {d.B, d.H, d.P, d.N}) &&
                  on_gpu_f32(state->k, {d.B, d.H, d.R * d.N}) && on_gpu_f32(state->x, {d.B, d.H, d.R * d.P}),
              "{}: the state must be contiguous F32 on the GPU, angle [{}, {}, {}], ssm [{}, {}, {}, {}], k [{}, {}, "
              "{}], x [{}, {}, {}], got {}, {}, {} and {}",
              op, d.B, d.H, d.S, d.B, d.H, d.P, d.N, d.B, d.H, d.R * d.N, d.B, d.H, d.R * d.P, describe(state->angle),
              describe(state->ssm), describe(state->k), describe(state->x));
  SSM_CHECK(d.T <= std::numeric_limits<int>::max() / 2 && d.B * d.H <= 65535,
            "{}: {} tokens of {} sequences × {} heads are beyond the kernels' grid", op, d.T, d.B, d.H);
  return d;
}

// The walk's threads: a row of the state over tpr threads, as many rows a block as 256 threads hold.
inline Layout threads_of(const Dims& d) {
  Layout lay{};
  lay.tpr = int(std::bit_ceil(uint64_t((d.N + 4 * kPieces - 1) / (4 * kPieces))));
  lay.rows = int(std::min<int64_t>(d.P, kMaxThreads / lay.tpr));
  lay.threads = int(std::max<int64_t>((lay.rows * lay.tpr + 31) / 32 * 32, (d.S + 31) / 32 * 32));
  return lay;
}

template <class T>
Args<T> args_of(const Mamba3Inputs& in, const Dims& d, const Tensor& y) {
  return {rows_of<const T>(in.x),
          rows_of<const T>(in.B),
          rows_of<const T>(in.C),
          rows_of<const T>(in.dt),
          rows_of<const T>(in.A),
          rows_of<const T>(in.trap),
          rows_of<const T>(in.angles),
          in.dt_bias.data<float>(),
          in.B_bias.data<float>(),
          in.C_bias.data<float>(),
          data_or_null<const float>(in.D),
          optional_rows_of<T>(y),
          int(d.T),
          int(d.H),
          int(d.P),
          int(d.G),
          int(d.N),
          int(d.S),
          int(d.R),
          in.rotation == Mamba3Rotation::Halves,
          in.A_floor};
}

}  // namespace ssm::ops::cuda::mamba3_launch
