#include "nn/headwise_linear.h"

#include "core/error.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

void check_widths(const char* what, const HeadwiseLinear& l, const Tensor& x, const Tensor& y) {
  const int64_t width = l.heads * l.head_dim;
  SSM_CHECK(x.defined() && y.defined() && x.dim() >= 1 && y.dim() >= 1 && x.size(-1) == width && y.size(-1) == width,
            "{}: x and y must be [..., {}] ({} heads of {}), got {} and {}", what, width, l.heads, l.head_dim,
            shape_str(x.shape()), shape_str(y.shape()));
}

}  // namespace

void HeadwiseLinear::forward(const Tensor& x, Tensor& y) const {
  check_widths("headwise linear", *this, x, y);
  for (int64_t h = 0; h < heads; ++h) {
    Tensor yh = y.slice(-1, h * head_dim, head_dim);
    ops::linear(x.slice(-1, h * head_dim, head_dim), weight.select(0, h), Tensor(), yh);
  }
}

void HeadwiseLinear::backward(const Tensor& x, const Tensor& dy, Tensor& dx, Tensor& dweight,
                              bool accumulate_dx) const {
  check_widths("headwise linear backward", *this, x, dy);
  check_widths("headwise linear backward", *this, dx, dy);
  for (int64_t h = 0; h < heads; ++h) {
    Tensor dxh = dx.slice(-1, h * head_dim, head_dim), dwh = dweight.select(0, h);
    ops::linear_backward(x.slice(-1, h * head_dim, head_dim), weight.select(0, h),
                         dy.slice(-1, h * head_dim, head_dim), &dxh, &dwh, nullptr, accumulate_dx);
  }
}

}  // namespace ssm
