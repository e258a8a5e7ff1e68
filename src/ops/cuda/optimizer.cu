// The optimizer's elementwise work on the GPU: AdamW over many tensors per launch (their pointers
// travel in the kernel's arguments), the sum of squares for the global gradient norm in fixed-order
// double partials (deterministic), and acc += a ⊙ b.
#include <algorithm>

#include "core/tensor.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kNormBlock = 1 << 16;  // elements per partial sum, as on the CPU

// Up to kTensorsPerLaunch tensors, each split into blocks of kAdamElements; a block finds its
// tensor among the launch's by its first block index.
constexpr int kTensorsPerLaunch = 40;
constexpr int64_t kAdamElements = 4096;
struct AdamBatch {
  float* param[kTensorsPerLaunch];
  const float* grad[kTensorsPerLaunch];
  float* m[kTensorsPerLaunch];
  float* v[kTensorsPerLaunch];
  bf16* shadow[kTensorsPerLaunch];  // null: no BF16 copy
  int64_t numel[kTensorsPerLaunch];
  int64_t first_block[kTensorsPerLaunch + 1];
  float decay[kTensorsPerLaunch];
  int count;
};

__global__ void adamw_kernel(AdamBatch batch, AdamWStep s) {
  int t = 0;
  while (t + 1 < batch.count && int64_t(blockIdx.x) >= batch.first_block[t + 1]) ++t;
  const int64_t begin = (int64_t(blockIdx.x) - batch.first_block[t]) * kAdamElements;
  const int64_t end = std::min(batch.numel[t], begin + kAdamElements);
  float *w = batch.param[t], *m = batch.m[t], *v = batch.v[t];
  const float* g = batch.grad[t];
  const float decay = batch.decay[t];
  bf16* shadow = batch.shadow[t];
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const float gj = g[j] * s.grad_scale;
    const float mj = s.beta1 * m[j] + (1.0f - s.beta1) * gj;
    const float vj = s.beta2 * v[j] + (1.0f - s.beta2) * gj * gj;
    m[j] = mj;
    v[j] = vj;
    const float wj = w[j] * decay - s.step_size * mj / (sqrtf(vj) / s.bc2_sqrt + s.eps);
    w[j] = wj;
    if (shadow) shadow[j] = from_float<bf16>(wj);
  }
}

// partial[first + b] = Σ x² over elements [b·kNormBlock, (b+1)·kNormBlock) of x, in double, in a
// fixed order (strided per thread, then a tree over the block).
__global__ void squares_kernel(const float* x, int64_t n, double* partial) {
  __shared__ double sums[kThreads];
  const int64_t begin = int64_t(blockIdx.x) * kNormBlock, end = std::min(n, begin + kNormBlock);
  double s = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += double(x[i]) * double(x[i]);
  sums[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sums[0];
}

// total = Σ partial[i] in index order (one thread: a few thousand additions per optimizer step).
__global__ void ordered_sum_kernel(const double* partial, int64_t n, double* total) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += partial[i];
  *total = s;
}

__global__ void add_product_kernel(float* acc, const float* a, const float* b, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) acc[i] += a[i] * b[i];
}

}  // namespace

void add_product_inplace(Tensor& acc, const Tensor& a, const Tensor& b) {
  check_on_gpu("add_product_inplace", {&acc, &a, &b});
  const int64_t n = acc.numel();
  if (n == 0) return;
  add_product_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(acc.data<float>(), a.data<float>(),
                                                                         b.data<float>(), n);
  SSM_CUDA_CHECK_LAUNCH("add_product_inplace of {}", shape_str(acc.shape()));
}

double sum_of_squares(const std::vector<const Tensor*>& tensors) {
  int64_t partials = 0;
  for (const Tensor* t : tensors) {
    check_on_gpu("sum_of_squares", {t});
    partials += (t->numel() + kNormBlock - 1) / kNormBlock;
  }
  const auto scratch = ::ssm::cuda::allocate(size_t(partials + 1) * sizeof(double));
  double* partial = static_cast<double*>(scratch->data());
  int64_t first = 0;
  for (const Tensor* t : tensors) {
    const int64_t blocks = (t->numel() + kNormBlock - 1) / kNormBlock;
    if (blocks == 0) continue;
    squares_kernel<<<unsigned(blocks), kThreads, 0, stream()>>>(t->data<float>(), t->numel(), partial + first);
    SSM_CUDA_CHECK_LAUNCH("sum_of_squares of {}", shape_str(t->shape()));
    first += blocks;
  }
  ordered_sum_kernel<<<1, 1, 0, stream()>>>(partial, partials, partial + partials);
  SSM_CUDA_CHECK_LAUNCH("sum_of_squares over {} tensors", tensors.size());
  double total = 0.0;
  ::ssm::cuda::copy(&total, false, partial + partials, true, sizeof(double));
  return total;
}

void adamw_update(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) {
  for (size_t start = 0; start < tensors.size(); start += kTensorsPerLaunch) {
    AdamBatch batch{};
    int64_t blocks = 0;
    for (size_t i = start; i < std::min(tensors.size(), start + kTensorsPerLaunch); ++i) {
      const AdamWTensor& t = tensors[i];
      check_on_gpu("adamw_update", {t.param, t.grad, t.m, t.v});
      const int k = batch.count++;
      batch.param[k] = t.param->data<float>();
      batch.grad[k] = t.grad->data<float>();
      batch.m[k] = t.m->data<float>();
      batch.v[k] = t.v->data<float>();
      batch.shadow[k] = t.shadow ? static_cast<bf16*>(t.shadow->raw()) : nullptr;
      batch.numel[k] = t.param->numel();
      batch.decay[k] = t.decay ? step.decay_factor : 1.0f;
      batch.first_block[k] = blocks;
      blocks += (t.param->numel() + kAdamElements - 1) / kAdamElements;
    }
    batch.first_block[batch.count] = blocks;
    if (blocks == 0) continue;
    adamw_kernel<<<unsigned(blocks), kThreads, 0, stream()>>>(batch, step);
    SSM_CUDA_CHECK_LAUNCH("adamw_update of {} tensors", batch.count);
  }
}

}  // namespace ssm::ops::cuda
