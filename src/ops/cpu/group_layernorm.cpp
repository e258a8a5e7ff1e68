// ops::group_layernorm and its backward on the CPU: one LayerNorm per group of channels of each
// row (xLSTM's per-head norm), statistics in double.
#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/cpu/op_util.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;
using detail::is_f32_vec;

namespace {

void check(const char* op, const Tensor& x, const Tensor& w, int64_t group_size, float eps) {
  SSM_CHECK(is_f32_rows(x), "{}: x must be F32 rows, got {}", op, describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(group_size > 0 && width % group_size == 0, "{}: group size {} does not divide the width {}", op,
            group_size, width);
  SSM_CHECK(is_f32_vec(w, width), "{}: w must be F32 [{}], got {}", op, width, describe(w));
  SSM_CHECK(eps >= 0, "{}: eps must not be negative, got {}", op, eps);
}

struct Moments {
  double mean, rstd;
};
Moments moments(const float* x, int64_t n, float eps) {
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / double(n);
  for (int64_t i = 0; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  return {mean, 1.0 / std::sqrt(sq / double(n) + double(eps))};
}

}  // namespace

void group_layernorm(const Tensor& x, const Tensor& w, const Tensor& b, int64_t group_size, float eps, Tensor& y) {
  SSM_GPU_DISPATCH(y, group_layernorm, x, w, b, group_size, eps, y);
  const char* op = "group_layernorm";
  check(op, x, w, group_size, eps);
  const int64_t width = x.size(-1);
  if (b.defined()) SSM_CHECK(is_f32_vec(b, width), "{}: b must be F32 [{}], got {}", op, width, describe(b));
  SSM_CHECK(is_f32_rows(y, x.shape()), "{}: y must be F32 rows {}, got {}", op, shape_str(x.shape()), describe(y));
  if (x.numel() == 0) return;
  const int64_t rows = x.rows(), ldx = x.row_stride(), ldy = y.row_stride();
  const float* wp = w.data<float>();
  const float* bp = b.defined() ? b.data<float>() : nullptr;
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g0 = 0; g0 < width; g0 += group_size) {
      const float* xr = x.data<float>() + r * ldx + g0;
      float* yr = y.data<float>() + r * ldy + g0;
      const Moments mo = moments(xr, group_size, eps);
      for (int64_t i = 0; i < group_size; ++i)
        yr[i] = float((xr[i] - mo.mean) * mo.rstd) * wp[g0 + i] + (bp ? bp[g0 + i] : 0.0f);
    }
}

// With x̂ = (x − μ) rstd and g = dy · w:  dx = rstd (g − mean(g) − x̂ mean(g x̂)),  dw += dy x̂,  db += dy.
void group_layernorm_backward(const Tensor& x, const Tensor& w, int64_t group_size, float eps, const Tensor& dy,
                              Tensor& dx, Tensor* dw, Tensor* db) {
  SSM_GPU_DISPATCH(dx, group_layernorm_backward, x, w, group_size, eps, dy, dx, dw, db);
  const char* op = "group_layernorm_backward";
  check(op, x, w, group_size, eps);
  const int64_t width = x.size(-1);
  SSM_CHECK(is_f32_rows(dy, x.shape()) && is_f32_rows(dx, x.shape()), "{}: dy and dx must be F32 rows {}, got {} and {}",
            op, shape_str(x.shape()), describe(dy), describe(dx));
  for (Tensor* grad : {dw, db})
    if (grad) SSM_CHECK(is_f32_vec(*grad, width), "{}: dw and db must be F32 [{}], got {}", op, width, describe(*grad));
  if (x.numel() == 0) return;
  const int64_t rows = x.rows(), ldx = x.row_stride(), lddy = dy.row_stride(), lddx = dx.row_stride();
  const float* wp = w.data<float>();
  std::vector<double> dw_sum(static_cast<size_t>(width), 0.0), db_sum(static_cast<size_t>(width), 0.0);
  std::vector<double> g(static_cast<size_t>(group_size)), xhat(static_cast<size_t>(group_size));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g0 = 0; g0 < width; g0 += group_size) {
      const float* xr = x.data<float>() + r * ldx + g0;
      const float* dyr = dy.data<float>() + r * lddy + g0;
      float* dxr = dx.data<float>() + r * lddx + g0;
      const Moments mo = moments(xr, group_size, eps);
      double mean_g = 0, mean_gx = 0;
      for (int64_t i = 0; i < group_size; ++i) {
        xhat[size_t(i)] = (xr[i] - mo.mean) * mo.rstd;
        g[size_t(i)] = double(dyr[i]) * wp[g0 + i];
        mean_g += g[size_t(i)];
        mean_gx += g[size_t(i)] * xhat[size_t(i)];
        dw_sum[size_t(g0 + i)] += double(dyr[i]) * xhat[size_t(i)];
        db_sum[size_t(g0 + i)] += dyr[i];
      }
      mean_g /= double(group_size);
      mean_gx /= double(group_size);
      for (int64_t i = 0; i < group_size; ++i)
        dxr[i] = float(mo.rstd * (g[size_t(i)] - mean_g - xhat[size_t(i)] * mean_gx));
    }
  for (int64_t i = 0; i < width; ++i) {
    if (dw) dw->data<float>()[i] += float(dw_sum[size_t(i)]);
    if (db) db->data<float>()[i] += float(db_sum[size_t(i)]);
  }
}

}  // namespace ssm::ops
