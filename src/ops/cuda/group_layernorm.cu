// ops::group_layernorm and its backward on the GPU (xLSTM's per-head norm): a block per (row, group), the mean and the
// biased variance in F32 over two passes (the second from cache), then the scaled write; the backward also writes each
// row's dy x̂, whose column sums (column_sums.h, a fixed order) it adds into dw. x is F32 (cuda_ops.h says why), y and
// dy F32 or BF16, dx F32.
// y may alias x: every read of the statistics passes comes before block_sum's barrier, and each element is written by
// the thread that reads it last.
#include <cmath>

#include "ops/cuda/column_sums.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"  // threads_for
#include "ops/cuda/reduce.cuh"

namespace ssm::ops::cuda {

namespace {

struct Moments {
  float mean, rstd;
};

// The group's mean and 1 / sqrt(biased variance + eps), by the block, two passes (the second from cache).
__device__ __forceinline__ Moments group_moments(Rows<const float> x, int64_t row, int64_t c0, int64_t group_size,
                                                 float eps) {
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < group_size; c += blockDim.x) sum += x.at(row, c0 + c);
  const float mean = block_sum(sum) / float(group_size);
  float squares = 0.0f;
  for (int64_t c = threadIdx.x; c < group_size; c += blockDim.x) {
    const float d = x.at(row, c0 + c) - mean;
    squares += d * d;
  }
  return {mean, 1.0f / sqrtf(block_sum(squares) / float(group_size) + eps)};
}

template <class T>
__global__ void __launch_bounds__(256)
    group_layernorm_kernel(Rows<const float> x, const float* w, const float* bias, Rows<T> y, int64_t groups,
                           int64_t group_size, float eps) {
  const int64_t row = blockIdx.x / groups, c0 = blockIdx.x % groups * group_size;
  const auto [mean, rstd] = group_moments(x, row, c0, group_size, eps);
  for (int64_t c = threadIdx.x; c < group_size; c += blockDim.x) {
    const float normed = (x.at(row, c0 + c) - mean) * rstd * w[c0 + c];
    y.at(row, c0 + c) = from_float<T>(bias ? normed + bias[c0 + c] : normed);
  }
}

// With x̂ = (x − μ) rstd and g = dy · w: dx = rstd (g − mean(g) − x̂ mean(g x̂)); dw_rows (optional) gets dy x̂.
template <class T>
__global__ void __launch_bounds__(256)
    group_layernorm_backward_kernel(Rows<const float> x, const float* w, Rows<const T> dy, Rows<float> dx,
                                    float* dw_rows, int64_t groups, int64_t group_size, float eps) {
  const int64_t row = blockIdx.x / groups, c0 = blockIdx.x % groups * group_size, width = groups * group_size;
  const auto [mean, rstd] = group_moments(x, row, c0, group_size, eps);
  float g_sum = 0.0f, gx_sum = 0.0f;
  for (int64_t c = threadIdx.x; c < group_size; c += blockDim.x) {
    const float xhat = (x.at(row, c0 + c) - mean) * rstd, d = to_float(dy.at(row, c0 + c));
    const float g = d * w[c0 + c];
    g_sum += g;
    gx_sum += g * xhat;
    if (dw_rows) dw_rows[row * width + c0 + c] = d * xhat;
  }
  const float mean_g = block_sum(g_sum) / float(group_size), mean_gx = block_sum(gx_sum) / float(group_size);
  for (int64_t c = threadIdx.x; c < group_size; c += blockDim.x) {
    const float xhat = (x.at(row, c0 + c) - mean) * rstd;
    dx.at(row, c0 + c) = rstd * (to_float(dy.at(row, c0 + c)) * w[c0 + c] - mean_g - xhat * mean_gx);
  }
}

// Checks w (F32 [width] on the GPU), the group size and eps; returns the groups a row has.
int64_t check_groups(const char* op, const Tensor& x, const Tensor& w, int64_t group_size, float eps) {
  const int64_t width = x.size(-1);
  SSM_CHECK(group_size > 0 && width % group_size == 0, "{}: group size {} does not divide the width {}", op, group_size,
            width);
  SSM_CHECK(is_gpu_vector(w, width), "{}: w must be F32 [{}] on the GPU, got {}", op, width, describe(w));
  SSM_CHECK(std::isfinite(eps) && eps >= 0, "{}: eps must not be negative, got {}", op, eps);
  SSM_CHECK(x.rows() * (width / group_size) < (int64_t(1) << 31), "{}: {} rows of {} groups are too many", op,
            x.rows(), width / group_size);
  return width / group_size;
}

}  // namespace

void group_layernorm(const Tensor& x, const Tensor& w, const Tensor& b, int64_t group_size, float eps, Tensor& y) {
  const char* op = "group_layernorm";
  check_on_gpu(op, {&x, &w, &y});
  SSM_CHECK(is_gpu_rows(x, DType::F32) && is_activation_dtype(y.dtype()) && is_gpu_rows(y, y.dtype(), x.shape()),
            "{}: x must be F32 rows and y F32 or BF16 rows of its shape, got {} and {}", op, describe(x), describe(y));
  const int64_t width = x.size(-1), groups = check_groups(op, x, w, group_size, eps), rows = x.rows();
  SSM_CHECK(!b.defined() || is_gpu_vector(b, width), "{}: b must be F32 [{}] on the GPU, got {}", op, width,
            describe(b));
  if (rows * width == 0) return;
  const int threads = threads_for(group_size, 256);
  with_activation_type(y.dtype(), op, [&]<class T>() {
    group_layernorm_kernel<T><<<unsigned(rows * groups), threads, 0, stream()>>>(
        rows_of<const float>(x), w.data<float>(), data_or_null<const float>(b), rows_of<T>(y), groups, group_size, eps);
    SSM_CUDA_CHECK_LAUNCH("{} of {} in groups of {}", op, shape_str(x.shape()), group_size);
  });
}

void group_layernorm_backward(const Tensor& x, const Tensor& w, int64_t group_size, float eps, const Tensor& dy,
                              Tensor& dx, Tensor* dw, Tensor* db) {
  const char* op = "group_layernorm_backward";
  check_on_gpu(op, {&x, &w, &dy, &dx});
  SSM_CHECK(is_gpu_rows(x, DType::F32) && is_gpu_rows(dx, DType::F32, x.shape()) && is_activation_dtype(dy.dtype()) &&
                is_gpu_rows(dy, dy.dtype(), x.shape()),
            "{}: x and dx must be F32 rows of one shape and dy F32 or BF16 rows of it, got {}, {} and {}", op,
            describe(x), describe(dx), describe(dy));
  const int64_t width = x.size(-1), groups = check_groups(op, x, w, group_size, eps), rows = x.rows();
  for (Tensor* grad : {dw, db})
    if (grad) SSM_CHECK(is_gpu_vector(*grad, width), "{}: dw and db must be F32 [{}], got {}", op, width, describe(*grad));
  SSM_CHECK(!db || (dy.dtype() == DType::F32 && dy.is_contiguous()),
            "{}: db on the GPU takes contiguous F32 dy, got {}", op, describe(dy));
  if (rows * width == 0) return;
  Tensor dw_rows;
  if (dw) dw_rows = Tensor::empty({rows, width}, DType::F32, Device::CUDA);
  with_activation_type(dy.dtype(), op, [&]<class T>() {
    group_layernorm_backward_kernel<T><<<unsigned(rows * groups), threads_for(group_size, 256), 0, stream()>>>(
        rows_of<const float>(x), w.data<float>(), rows_of<const T>(dy), rows_of<float>(dx),
        dw ? dw_rows.data<float>() : nullptr, groups, group_size, eps);
    SSM_CUDA_CHECK_LAUNCH("{} of {} in groups of {}", op, shape_str(x.shape()), group_size);
  });
  if (dw) add_column_sums(dw_rows.data<float>(), rows, width, width, dw->data<float>(), op);
  if (db) add_column_sums(dy.data<float>(), rows, width, width, db->data<float>(), op);
}

}  // namespace ssm::ops::cuda
