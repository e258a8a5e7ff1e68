// What ops/cuda/mlstm.cu and mlstm_backward.cu share on the host: the inputs' checks, the kernels' view of the
// inputs, and the chunked forward (the backward runs it keeping every token's q̂·n_t and m_t).
#pragma once
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/mlstm_kernels.cuh"
#include "ops/cuda/op_checks.h"

namespace ssm::ops::cuda::mlstm_launch {

using namespace mlstm_kernels;

struct Dims {
  int64_t B, T, H, dk, dv;
};

// Checks the inputs ([B,T,·] rows or [B,·] for a step: q, k, v in one activation dtype, i, f F32), h (F32) and the
// state.
inline Dims check(const char* op, const MlstmInputs& in, const MlstmState* state, const Tensor& h, bool step,
                  const char* h_name = "h") {
  check_on_gpu(op, {&in.q, &in.k, &in.v, &in.i, &in.f, &h});
  const DType dtype = in.q.dtype();
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(in.n_heads > 0, "{}: n_heads must be positive, got {}", op, in.n_heads);
  SSM_CHECK(is_activation_dtype(dtype) && is_gpu_rows(in.q, dtype) && in.q.dim() == dims,
            "{}: q must be F32 or BF16 rows of {} dims, got {}", op, dims, describe(in.q));
  Dims d{in.q.size(0), step ? 1 : in.q.size(1), in.n_heads, 0, 0};
  SSM_CHECK(in.q.size(-1) % d.H == 0 && in.v.dim() == dims && in.v.size(-1) % d.H == 0,
            "{}: q's width {} and v's {} must be multiples of {} heads", op, in.q.size(-1), in.v.size(-1), d.H);
  d.dk = in.q.size(-1) / d.H;
  d.dv = in.v.size(-1) / d.H;
  const auto rows = [&](int64_t width) { return step ? Shape{d.B, width} : Shape{d.B, d.T, width}; };
  SSM_CHECK(is_gpu_rows(in.k, dtype, in.q.shape()) && is_gpu_rows(in.v, dtype, rows(d.H * d.dv)),
            "{}: k {} and v {} must be rows of q's dtype {}, got {} and {}", op, shape_str(in.q.shape()),
            shape_str(rows(d.H * d.dv)), dtype_name(dtype), describe(in.k), describe(in.v));
  SSM_CHECK(is_gpu_rows(in.i, DType::F32, rows(d.H)) && is_gpu_rows(in.f, DType::F32, rows(d.H)) &&
                is_gpu_rows(h, DType::F32, rows(d.H * d.dv)),
            "{}: i and f {} and {} {} must be F32 rows, got {}, {} and {}", op, shape_str(rows(d.H)), h_name,
            shape_str(rows(d.H * d.dv)), describe(in.i), describe(in.f), describe(h));
  SSM_CHECK(d.dk > 0 && d.dv > 0, "{}: empty heads (dk {}, dv {})", op, d.dk, d.dv);
  SSM_CHECK(in.chunk_size > 0, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  SSM_CHECK(std::isfinite(in.eps) && in.eps >= 0, "{}: eps must not be negative, got {}", op, in.eps);
  if (state) {
    const auto on_gpu = [](const Tensor& t, const Shape& shape) {
      return t.defined() && t.device() == Device::CUDA && t.dtype() == DType::F32 && t.shape() == shape &&
             t.is_contiguous();
    };
    SSM_CHECK(
        on_gpu(state->C, {d.B, d.H, d.dk, d.dv}) && on_gpu(state->n, {d.B, d.H, d.dk}) && on_gpu(state->m, {d.B, d.H}),
        "{}: the state must be contiguous F32 on the GPU, C [{}, {}, {}, {}], n [{}, {}, {}], m [{}, {}], got {}, {} "
        "and {}",
        op, d.B, d.H, d.dk, d.dv, d.B, d.H, d.dk, d.B, d.H, describe(state->C), describe(state->n), describe(state->m));
  }
  return d;
}

template <class T>
Args<T> args_of(const MlstmInputs& in, const Dims& d, Tensor& h, float* dots = nullptr, float* ms = nullptr) {
  return {rows_of<const T>(in.q),
          rows_of<const T>(in.k),
          rows_of<const T>(in.v),
          rows_of<const float>(in.i),
          rows_of<const float>(in.f),
          rows_of<float>(h),
          d.T,
          d.H,
          d.dk,
          d.dv,
          in.eps,
          1.0f / std::sqrt(float(d.dk)),
          dots,
          ms};
}

inline State state_of(MlstmState& s) { return {s.C.data<float>(), s.n.data<float>(), s.m.data<float>()}; }

// The chunked forward from `state` (null: zeros); token_dots and token_ms (optional, [B·H, T] F32) receive q̂·n_t and
// m_t.
void forward(const char* op, const MlstmInputs& in, MlstmState* state, Tensor& h, float* token_dots, float* token_ms);

}  // namespace ssm::ops::cuda::mlstm_launch
