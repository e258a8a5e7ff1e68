// Backward of ops::moe_scatter_add on the CPU: dispatch rows spread over threads; each row reads
// dy of its token once for both its gradients.
#include "core/error.h"
#include "ops/cpu/moe_plan.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

void moe_scatter_add_backward(const Tensor& rows, const Tensor& weights, const MoePlan& plan, int64_t first_row,
                              const Tensor& dy, Tensor* drows, Tensor* dweights) {
  SSM_GPU_DISPATCH(dy, moe_scatter_add_backward, rows, weights, plan, first_row, dy, drows, dweights);
  const char* op = "moe_scatter_add_backward";
  const detail::MoePlanDims d = detail::check_moe_plan(op, plan);
  SSM_CHECK(is_f32_rows(dy) && dy.dim() == 2 && dy.size(0) == d.tokens,
            "{}: dy must be F32 rows [{}, D] (the plan's tokens), got {}", op, d.tokens, describe(dy));
  const int64_t D = dy.size(1);
  SSM_CHECK(is_f32_rows(rows) && rows.dim() == 2 && rows.size(1) == D, "{}: rows must be F32 rows [n, {}], got {}", op,
            D, describe(rows));
  const int64_t n = rows.size(0);
  const Shape weights_shape{d.tokens, d.top_k};
  if (weights.defined())
    SSM_CHECK(is_f32_rows(weights, weights_shape), "{}: weights must be F32 rows {}, got {}", op,
              shape_str(weights_shape), describe(weights));
  if (drows)
    SSM_CHECK(is_f32_rows(*drows, rows.shape()), "{}: drows must be F32 rows {}, got {}", op, shape_str(rows.shape()),
              describe(*drows));
  if (dweights) {
    SSM_CHECK(weights.defined(), "{}: dweights asked for without weights", op);
    SSM_CHECK(is_f32_rows(*dweights, weights_shape), "{}: dweights must be F32 rows {}, got {}", op,
              shape_str(weights_shape), describe(*dweights));
  }
  detail::check_moe_rows(op, plan, d, first_row, n);
  if (n == 0 || (!drows && !dweights)) return;

  const int32_t* token = plan.row_token.data<int32_t>() + first_row;
  const int32_t* slot = plan.row_slot.data<int32_t>() + first_row;
  const float* rp = rows.data<float>();
  const float* wp = weights.defined() ? weights.data<float>() : nullptr;
  const float* dyp = dy.data<float>();
  float* drp = drows ? drows->data<float>() : nullptr;
  float* dwp = dweights ? dweights->data<float>() : nullptr;
  const int64_t ldr = rows.row_stride(), ldw = wp ? weights.row_stride() : 0, lddy = dy.row_stride(),
                lddr = drows ? drows->row_stride() : 0, lddw = dweights ? dweights->row_stride() : 0;
#pragma omp parallel for schedule(static) if (n * D >= (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const float* dyt = dyp + token[i] * lddy;
    if (dwp) {  // before drows is written: drows may alias rows
      const float* src = rp + i * ldr;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < D; ++c) dot += dyt[c] * src[c];
      dwp[token[i] * lddw + slot[i]] = dot;
    }
    if (drp) {
      const float w = wp ? wp[token[i] * ldw + slot[i]] : 1.0f;
      float* dst = drp + i * lddr;
#pragma omp simd
      for (int64_t c = 0; c < D; ++c) dst[c] = w * dyt[c];
    }
  }
}

}  // namespace ssm::ops
