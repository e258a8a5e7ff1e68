// Elementwise ops on the GPU over rows tensors (row strides honoured), F32 or BF16 activations. The
// two operands may differ in dtype (an F32 residual stream plus a BF16 mixer output).
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace ssm::ops::cuda {

namespace {

// out[r, c] = f(out[r, c], in[r, c], c) over every element of two rows tensors of one shape.
template <class TO, class TI, class F>
__global__ void rows_kernel(Rows<TO> out, Rows<const TI> in, int64_t rows, int64_t width, F f) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * width) return;
  const int64_t r = i / width, c = i % width;
  out.at(r, c) = from_float<TO>(f(to_float(out.at(r, c)), to_float(in.at(r, c)), c));
}

template <class F>
void for_rows(const char* op, Tensor& out, const Tensor& in, F f) {
  check_on_gpu(op, {&out, &in});
  SSM_CHECK(out.shape() == in.shape() && out.has_uniform_rows() && in.has_uniform_rows(),
            "{}: operands must be rows tensors of one shape, got {} and {}", op, shape_str(out.shape()),
            shape_str(in.shape()));
  const int64_t width = out.dim() ? out.size(-1) : 1, rows = out.rows();
  if (rows * width == 0) return;
  with_activation_type(out.dtype(), op, [&]<class TO>() {
    with_activation_type(in.dtype(), op, [&]<class TI>() {
      rows_kernel<TO, TI><<<blocks_for(rows * width, 256), 256, 0, stream()>>>(rows_of<TO>(out), rows_of<const TI>(in),
                                                                               rows, width, f);
      SSM_CUDA_CHECK_LAUNCH("{} of {}", op, shape_str(out.shape()));
    });
  });
}

struct Add {
  float factor;
  __device__ float operator()(float a, float b, int64_t) const { return a + factor * b; }
};
struct Scale {
  float factor;
  __device__ float operator()(float, float x, int64_t) const { return factor * x; }
};
struct Fill {
  float value;
  __device__ float operator()(float, float, int64_t) const { return value; }
};
struct ScaleColumns {
  const float* factors;
  __device__ float operator()(float a, float, int64_t c) const { return a * factors[c]; }
};

__global__ void neg_exp_kernel(const float* x, float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = -expf(x[i]);
}

}  // namespace

void add_inplace(Tensor& a, const Tensor& b) { for_rows("add_inplace", a, b, Add{1.0f}); }
void add_scaled_inplace(Tensor& a, const Tensor& b, float factor) { for_rows("add_scaled_inplace", a, b, Add{factor}); }
void scale(const Tensor& x, float factor, Tensor& y) { for_rows("scale", y, x, Scale{factor}); }

void scale_columns(Tensor& x, const Tensor& factors) {
  check_on_gpu("scale_columns", {&x, &factors});
  SSM_CHECK(factors.dtype() == DType::F32 && factors.dim() == 1 && factors.size(0) == x.size(-1) &&
                factors.is_contiguous(),
            "scale_columns: factors must be F32 [{}], got {}", x.size(-1), shape_str(factors.shape()));
  for_rows("scale_columns", x, x, ScaleColumns{factors.data<float>()});
}

void fill(Tensor& x, float value) { for_rows("fill", x, x, Fill{value}); }

void neg_exp(const Tensor& x, Tensor& y) {
  check_on_gpu("neg_exp", {&x, &y});
  SSM_CHECK(x.dtype() == DType::F32 && y.dtype() == DType::F32 && x.is_contiguous() && y.is_contiguous() &&
                x.shape() == y.shape(),
            "neg_exp: x and y must be contiguous F32 tensors of one shape");
  if (x.numel() == 0) return;
  neg_exp_kernel<<<blocks_for(x.numel(), 256), 256, 0, stream()>>>(x.data<float>(), y.data<float>(), x.numel());
  SSM_CUDA_CHECK_LAUNCH("neg_exp of {}", shape_str(x.shape()));
}

}  // namespace ssm::ops::cuda
