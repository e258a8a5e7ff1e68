// ops::rmsnorm and ops::add_rmsnorm on the CPU: rows spread over threads, each row two vectorised
// passes (sum of squares, then scale), after the residual add for add_rmsnorm. y may alias x in
// rmsnorm: each row is read completely before it is written.
#include <cmath>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

// One row: y = x / sqrt(mean(x²) + eps) · w.
inline void norm_row(const float* x, const float* w, float eps, float* y, int64_t width) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < width; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / float(width) + eps);
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) y[i] = x[i] * scale * w[i];
}

// x, w and y as rmsnorm takes them; returns the width.
int64_t check_norm(const char* op, const Tensor& x, const Tensor& w, const Tensor& y) {
  using detail::describe;
  SSM_CHECK(detail::is_f32_rows(x), "{}: x must be an F32 rows tensor [..., W], got {}", op, describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(detail::is_f32_vec(w, width), "{}: w must be F32 [{}] for x {}, got {}", op, width, describe(x),
            describe(w));
  SSM_CHECK(detail::is_f32_rows(y) && y.shape() == x.shape(), "{}: y must be F32 rows of x's shape {}, got {}", op,
            shape_str(x.shape()), describe(y));
  return width;
}

}  // namespace

void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  SSM_GPU_DISPATCH(y, rmsnorm, x, w, eps, y);
  const int64_t width = check_norm("rmsnorm", x, w, y), rows = x.rows();
  if (width == 0 || rows == 0) return;
  const int64_t ldx = x.row_stride(), ldy = y.row_stride();
  const float *xp = x.data<float>(), *wp = w.data<float>();
  float* yp = y.data<float>();
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) norm_row(xp + r * ldx, wp, eps, yp + r * ldy, width);
}

void add_rmsnorm(Tensor& h, const Tensor& delta, float delta_scale, const Tensor& w, float eps, Tensor& y) {
  SSM_GPU_DISPATCH(y, add_rmsnorm, h, delta, delta_scale, w, eps, y);
  const int64_t width = check_norm("add_rmsnorm", h, w, y), rows = h.rows();
  SSM_CHECK(detail::is_f32_rows(delta) && delta.shape() == h.shape(),
            "add_rmsnorm: delta must be F32 rows of h's shape {}, got {}", shape_str(h.shape()), detail::describe(delta));
  if (width == 0 || rows == 0) return;
  const int64_t ldh = h.row_stride(), ldd = delta.row_stride(), ldy = y.row_stride();
  const float *dp = delta.data<float>(), *wp = w.data<float>();
  float *hp = h.data<float>(), *yp = y.data<float>();
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    float* hr = hp + r * ldh;
    const float* dr = dp + r * ldd;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) hr[i] += delta_scale * dr[i];
    norm_row(hr, wp, eps, yp + r * ldy, width);
  }
}

}  // namespace ssm::ops
