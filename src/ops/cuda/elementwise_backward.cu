// silu_backward, softplus_backward and soft_cap_backward on the GPU: elementwise over rows tensors
// (row strides honoured), x, dy and dx in one activation dtype (F32 or BF16), arithmetic in F32 with
// the accurate library functions, as on the CPU.
#include <cmath>

#include "ops/cuda/activation_math.cuh"  // sigmoid
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"

namespace ssm::ops::cuda {

namespace {

// dx[r, c] (=|+=) dy[r, c] grad(x[r, c]). dx may be dy: each element is read before it is written.
template <class T, class Grad>
__global__ void pointwise_backward_kernel(Rows<const T> x, Rows<const T> dy, Rows<T> dx, int64_t rows, int64_t width,
                                          bool accumulate, Grad grad) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * width) return;
  const int64_t r = i / width, c = i % width;
  const float v = to_float(dy.at(r, c)) * grad(to_float(x.at(r, c)));
  dx.at(r, c) = from_float<T>(accumulate ? to_float(dx.at(r, c)) + v : v);
}

template <class Grad>
void pointwise_backward(const char* op, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate, Grad grad) {
  check_on_gpu(op, {&x, &dy, &dx});
  const DType dtype = x.dtype();
  SSM_CHECK(is_activation_dtype(dtype) && is_gpu_rows(x, dtype) && is_gpu_rows(dy, dtype, x.shape()) &&
                is_gpu_rows(dx, dtype, x.shape()),
            "{}: x, dy and dx must be F32 or BF16 rows of one shape and dtype, got {}, {} and {}", op, describe(x),
            describe(dy), describe(dx));
  const int64_t width = x.size(-1), rows = x.rows();
  if (rows * width == 0) return;
  with_activation_type(dtype, op, [&]<class T>() {
    pointwise_backward_kernel<T><<<blocks_for(rows * width, 256), 256, 0, stream()>>>(
        rows_of<const T>(x), rows_of<const T>(dy), rows_of<T>(dx), rows, width, accumulate, grad);
    SSM_CUDA_CHECK_LAUNCH("{} of {}", op, shape_str(x.shape()));
  });
}

struct SiluGrad {
  __device__ float operator()(float v) const {
    const float s = sigmoid(v);
    return s * (1.0f + v * (1.0f - s));
  }
};
struct SoftplusGrad {  // 1 above torch's threshold 20, where softplus(x) = x
  __device__ float operator()(float v) const { return v > 20.0f ? 1.0f : sigmoid(v); }
};
struct SoftCapGrad {
  float cap;
  __device__ float operator()(float v) const {
    const float t = tanhf(v / cap);
    return 1.0f - t * t;
  }
};

}  // namespace

void silu_backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx) {
  pointwise_backward("silu_backward", x, dy, dx, accumulate_dx, SiluGrad{});
}

void softplus_backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx) {
  pointwise_backward("softplus_backward", x, dy, dx, accumulate_dx, SoftplusGrad{});
}

void soft_cap_backward(const Tensor& x, float cap, const Tensor& dy, Tensor& dx) {
  SSM_CHECK(cap > 0 && std::isfinite(cap), "soft_cap_backward: the cap must be positive, got {}", cap);
  pointwise_backward("soft_cap_backward", x, dy, dx, false, SoftCapGrad{cap});
}

}  // namespace ssm::ops::cuda
