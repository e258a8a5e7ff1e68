// Elementwise ops on the CPU over rows tensors (row strides honoured); rows spread over threads.
#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops {

void add_inplace(Tensor& a, const Tensor& b) {
  SSM_CHECK(detail::is_f32_rows(a) && detail::is_f32_rows(b) && a.shape() == b.shape(),
            "add_inplace: a and b must be F32 rows tensors of one shape, got a {} and b {}", detail::describe(a),
            detail::describe(b));
  const int64_t width = a.size(-1);
  if (width == 0) return;
  const int64_t rows = a.rows();
  const int64_t lda = a.row_stride(), ldb = b.row_stride();
  float* ap = a.data<float>();
  const float* bp = b.data<float>();
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    float* ar = ap + r * lda;
    const float* br = bp + r * ldb;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) ar[i] += br[i];
  }
}

void neg_exp(const Tensor& x, Tensor& y) {
  SSM_CHECK(x.dtype() == DType::F32 && y.dtype() == DType::F32 && x.is_contiguous() && y.is_contiguous() &&
                x.shape() == y.shape(),
            "neg_exp: x and y must be contiguous F32 tensors of one shape, got {} and {}", detail::describe(x),
            detail::describe(y));
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) yp[i] = -vec::fast_exp(xp[i]);
}

}  // namespace ssm::ops
