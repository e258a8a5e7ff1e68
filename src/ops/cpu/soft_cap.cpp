// ops::soft_cap and its backward on the CPU: cap · tanh(x / cap), elementwise over rows tensors.
#include <cmath>

#include "core/error.h"
#include "ops/cpu/op_util.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

void soft_cap(const Tensor& x, float cap, Tensor& y) {
  SSM_GPU_DISPATCH(y, soft_cap, x, cap, y);
  SSM_CHECK(cap > 0 && std::isfinite(cap), "soft_cap: the cap must be positive, got {}", cap);
  SSM_CHECK(is_f32_rows(x) && is_f32_rows(y, x.shape()), "soft_cap: x and y must be F32 rows of one shape, got {} and {}",
            describe(x), describe(y));
  if (x.numel() == 0) return;
  const int64_t rows = x.rows(), width = x.size(-1), ldx = x.row_stride(), ldy = y.row_stride();
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < width; ++c) yp[r * ldy + c] = cap * std::tanh(xp[r * ldx + c] / cap);
}

void soft_cap_backward(const Tensor& x, float cap, const Tensor& dy, Tensor& dx) {
  SSM_GPU_DISPATCH(dx, soft_cap_backward, x, cap, dy, dx);
  SSM_CHECK(cap > 0 && std::isfinite(cap), "soft_cap_backward: the cap must be positive, got {}", cap);
  SSM_CHECK(is_f32_rows(x) && is_f32_rows(dy, x.shape()) && is_f32_rows(dx, x.shape()),
            "soft_cap_backward: x, dy and dx must be F32 rows of one shape, got {}, {} and {}", describe(x),
            describe(dy), describe(dx));
  if (x.numel() == 0) return;
  const int64_t rows = x.rows(), width = x.size(-1);
  const int64_t ldx = x.row_stride(), lddy = dy.row_stride(), lddx = dx.row_stride();
  const float* xp = x.data<float>();
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < width; ++c) {
      const float t = std::tanh(xp[r * ldx + c] / cap);
      dxp[r * lddx + c] = dyp[r * lddy + c] * (1.0f - t * t);
    }
}

}  // namespace ssm::ops
