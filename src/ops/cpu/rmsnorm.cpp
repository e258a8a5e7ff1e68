// ops::rmsnorm on the CPU: rows spread over threads, each row two vectorised passes (sum of
// squares, then scale). y may alias x: each row is read completely before it is written.
#include <cmath>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  SSM_GPU_DISPATCH(y, rmsnorm, x, w, eps, y);
  using detail::describe;
  SSM_CHECK(detail::is_f32_rows(x), "rmsnorm: x must be an F32 rows tensor [..., W], got {}", describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(detail::is_f32_vec(w, width), "rmsnorm: w must be F32 [{}] for x {}, got {}", width, describe(x),
            describe(w));
  SSM_CHECK(detail::is_f32_rows(y) && y.shape() == x.shape(), "rmsnorm: y must be F32 rows of x's shape {}, got {}",
            shape_str(x.shape()), describe(y));
  if (width == 0) return;
  const int64_t rows = x.rows();
  const int64_t ldx = x.row_stride(), ldy = y.row_stride();
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  float* yp = y.data<float>();
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * ldx;
    float* yr = yp + r * ldy;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < width; ++i) ss += xr[i] * xr[i];
    const float scale = 1.0f / std::sqrt(ss / float(width) + eps);
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) yr[i] = xr[i] * scale * wp[i];
  }
}

}  // namespace ssm::ops
