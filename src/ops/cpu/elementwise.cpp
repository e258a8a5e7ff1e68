// Elementwise ops on the CPU over rows tensors (row strides honoured); rows spread over threads.
#include <cmath>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

// Runs row_fn(out_row, in_row, width) over the rows of two F32 rows tensors of one shape.
template <class RowFn>
void for_row_pairs(const char* op, Tensor& out, const Tensor& in, RowFn row_fn) {
  SSM_CHECK(detail::is_f32_rows(out) && detail::is_f32_rows(in) && out.shape() == in.shape(),
            "{}: operands must be F32 rows tensors of one shape, got {} and {}", op, detail::describe(out),
            detail::describe(in));
  const int64_t width = out.size(-1);
  if (width == 0) return;
  const int64_t rows = out.rows(), ldo = out.row_stride(), ldi = in.row_stride();
  float* op_ = out.data<float>();
  const float* ip = in.data<float>();
#pragma omp parallel for schedule(static) if (rows * width >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) row_fn(op_ + r * ldo, ip + r * ldi, width);
}

}  // namespace

void add_inplace(Tensor& a, const Tensor& b) {
  SSM_GPU_DISPATCH(a, add_inplace, a, b);
  for_row_pairs("add_inplace", a, b, [](float* ar, const float* br, int64_t width) {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) ar[i] += br[i];
  });
}

void add_scaled_inplace(Tensor& a, const Tensor& b, float scale) {
  SSM_GPU_DISPATCH(a, add_scaled_inplace, a, b, scale);
  for_row_pairs("add_scaled_inplace", a, b, [scale](float* ar, const float* br, int64_t width) {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) ar[i] += scale * br[i];
  });
}

void scale(const Tensor& x, float factor, Tensor& y) {
  SSM_GPU_DISPATCH(y, scale, x, factor, y);
  for_row_pairs("scale", y, x, [factor](float* yr, const float* xr, int64_t width) {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) yr[i] = factor * xr[i];
  });
}

void scale_columns(Tensor& x, const Tensor& factors) {
  SSM_GPU_DISPATCH(x, scale_columns, x, factors);
  SSM_CHECK(detail::is_f32_rows(x) && detail::is_f32_vec(factors, x.size(-1)),
            "scale_columns: x must be F32 rows and factors F32 [{}], got {} and {}", x.dim() ? x.size(-1) : 0,
            detail::describe(x), detail::describe(factors));
  const float* f = factors.data<float>();
  for_row_pairs("scale_columns", x, x, [f](float* xr, const float*, int64_t width) {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) xr[i] *= f[i];
  });
}

void fill(Tensor& x, float value) {
  SSM_GPU_DISPATCH(x, fill, x, value);
  for_row_pairs("fill", x, x, [value](float* xr, const float*, int64_t width) {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) xr[i] = value;
  });
}

void argmax(const Tensor& logits, Tensor& ids) {
  SSM_GPU_DISPATCH(ids, argmax, logits, ids);
  SSM_CHECK(detail::is_f32_rows(logits) && logits.dim() == 2 && ids.device() == Device::CPU &&
                ids.dtype() == DType::I32 && ids.is_contiguous() && ids.shape() == Shape({logits.size(0)}),
            "argmax: logits must be F32 rows [B, V] and ids I32 [B], got {} and {}", detail::describe(logits),
            detail::describe(ids));
  const int64_t V = logits.size(1), ld = logits.row_stride();
  for (int64_t b = 0; b < logits.size(0); ++b) {
    const float* row = logits.data<float>() + b * ld;
    int64_t best = 0;
    for (int64_t i = 1; i < V; ++i)
      if (row[i] > row[best] || (std::isnan(row[best]) && !std::isnan(row[i]))) best = i;
    ids.data<int32_t>()[b] = int32_t(best);
  }
}

void convert(const Tensor& x, Tensor& y) {
  SSM_GPU_DISPATCH(y, convert, x, y);
  auto f32_or_bf16 = [](const Tensor& t) { return t.dtype() == DType::F32 || t.dtype() == DType::BF16; };
  SSM_CHECK(f32_or_bf16(x) && f32_or_bf16(y) && x.is_contiguous() && y.is_contiguous() && x.shape() == y.shape() &&
                x.device() == y.device(),
            "convert: x and y must be contiguous F32 or BF16 tensors of one shape, got {} and {}", detail::describe(x),
            detail::describe(y));
  const int64_t n = x.numel();
  if (x.dtype() == y.dtype()) {
    y.copy_from(x);
  } else if (x.dtype() == DType::F32) {
    const float* xp = x.data<float>();
    uint16_t* yp = y.data<uint16_t>();
#pragma omp parallel for simd schedule(static) if (n >= (1 << 16))
    for (int64_t i = 0; i < n; ++i) yp[i] = f32_to_bf16(xp[i]);
  } else {
    const uint16_t* xp = x.data<uint16_t>();
    float* yp = y.data<float>();
#pragma omp parallel for simd schedule(static) if (n >= (1 << 16))
    for (int64_t i = 0; i < n; ++i) yp[i] = bf16_to_f32(xp[i]);
  }
}

void neg_exp(const Tensor& x, Tensor& y) {
  SSM_GPU_DISPATCH(y, neg_exp, x, y);
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
