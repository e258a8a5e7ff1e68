// ops::group_layernorm on the GPU (xLSTM's per-head norm): a block per (row, group), the mean and the biased variance
// in F32 over two passes (the second from cache), then the scaled write. x is F32 (cuda_ops.h says why), y F32 or BF16.
// y may alias x: every read of the statistics passes comes before block_sum's barrier, and each element is written by
// the thread that reads it last.
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"  // threads_for
#include "ops/cuda/reduce.cuh"

namespace ssm::ops::cuda {

namespace {

template <class T>
__global__ void __launch_bounds__(256)
    group_layernorm_kernel(Rows<const float> x, const float* w, const float* bias, Rows<T> y, int64_t groups,
                           int64_t group_size, float eps) {
  const int64_t row = blockIdx.x / groups, c0 = blockIdx.x % groups * group_size;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < group_size; c += blockDim.x) sum += x.at(row, c0 + c);
  const float mean = block_sum(sum) / float(group_size);
  float squares = 0.0f;
  for (int64_t c = threadIdx.x; c < group_size; c += blockDim.x) {
    const float d = x.at(row, c0 + c) - mean;
    squares += d * d;
  }
  const float rstd = 1.0f / sqrtf(block_sum(squares) / float(group_size) + eps);
  for (int64_t c = threadIdx.x; c < group_size; c += blockDim.x) {
    const float normed = (x.at(row, c0 + c) - mean) * rstd * w[c0 + c];
    y.at(row, c0 + c) = from_float<T>(bias ? normed + bias[c0 + c] : normed);
  }
}

}  // namespace

void group_layernorm(const Tensor& x, const Tensor& w, const Tensor& b, int64_t group_size, float eps, Tensor& y) {
  const char* op = "group_layernorm";
  check_on_gpu(op, {&x, &w, &y});
  SSM_CHECK(is_gpu_rows(x, DType::F32) && is_activation_dtype(y.dtype()) && is_gpu_rows(y, y.dtype(), x.shape()),
            "{}: x must be F32 rows and y F32 or BF16 rows of its shape, got {} and {}", op, describe(x), describe(y));
  const int64_t width = x.size(-1);
  SSM_CHECK(group_size > 0 && width % group_size == 0, "{}: group size {} does not divide the width {}", op, group_size,
            width);
  SSM_CHECK(is_gpu_vector(w, width) && (!b.defined() || is_gpu_vector(b, width)),
            "{}: w and b must be F32 [{}] on the GPU, got {} and {}", op, width, describe(w), describe(b));
  SSM_CHECK(std::isfinite(eps) && eps >= 0, "{}: eps must not be negative, got {}", op, eps);
  const int64_t rows = x.rows(), groups = width / group_size;
  if (rows * width == 0) return;
  SSM_CHECK(rows * groups < (int64_t(1) << 31), "{}: {} rows of {} groups are too many", op, rows, groups);
  const int threads = threads_for(group_size, 256);
  with_activation_type(y.dtype(), op, [&]<class T>() {
    group_layernorm_kernel<T><<<unsigned(rows * groups), threads, 0, stream()>>>(
        rows_of<const float>(x), w.data<float>(), data_or_null<const float>(b), rows_of<T>(y), groups, group_size, eps);
    SSM_CUDA_CHECK_LAUNCH("{} of {} in groups of {}", op, shape_str(x.shape()), group_size);
  });
}

}  // namespace ssm::ops::cuda
