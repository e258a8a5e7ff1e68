// The optimizer's elementwise work on the GPU: AdamW over many tensors per launch (their pointers
// travel in the kernel's arguments), the sum of squares for the global gradient norm in fixed-order
// double partials (deterministic), and acc += a ⊙ b.
// Both multi-tensor kernels read 16 bytes a load where a tensor's start and length allow it, and a
// thread issues all its loads before its arithmetic: at one 4-byte load in flight per thread the
// 1.3B model's AdamW (40 GB a step) ran at about 40% of the memory's bandwidth.
#include <algorithm>

#include "core/tensor.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kVectors = 4;                                    // float4 loads per thread and array
constexpr int64_t kBlockElements = kThreads * kVectors * 4;  // 4096: the elements a block takes at once
constexpr int64_t kNormBlock = 1 << 16;                        // elements per partial sum, as on the CPU

// Up to kTensorsPerLaunch tensors, each split into blocks; a block finds its tensor among the launch's
// by its index.
constexpr int kTensorsPerLaunch = 40;
struct BlockMap {
  int64_t numel[kTensorsPerLaunch];
  int64_t first_block[kTensorsPerLaunch + 1];
  bool vectorized[kTensorsPerLaunch];  // 16-byte aligned pointers and a length a multiple of 4
  int count;
};

__device__ int tensor_of_block(const BlockMap& map) {
  int t = 0;
  while (t + 1 < map.count && int64_t(blockIdx.x) >= map.first_block[t + 1]) ++t;
  return t;
}

// Adds tensor t (elements split into blocks of `block_elements`) to the map; false when it is full.
bool add_to_map(BlockMap& map, int64_t numel, bool vectorized, int64_t block_elements, int64_t* blocks) {
  if (map.count == kTensorsPerLaunch) return false;
  const int k = map.count++;
  map.numel[k] = numel;
  map.vectorized[k] = vectorized;
  map.first_block[k] = *blocks;
  *blocks += (numel + block_elements - 1) / block_elements;
  map.first_block[k + 1] = *blocks;
  return true;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

struct AdamBatch {
  BlockMap map;
  float* param[kTensorsPerLaunch];
  const float* grad[kTensorsPerLaunch];
  float* m[kTensorsPerLaunch];
  float* v[kTensorsPerLaunch];
  bf16* shadow[kTensorsPerLaunch];  // null: no BF16 copy
  float decay[kTensorsPerLaunch];
};

struct AdamMath {
  AdamWStep s;
  float decay;
  // One element: the same arithmetic, in the same order, as the CPU op.
  __device__ __forceinline__ void operator()(float g, float& m, float& v, float& w) const {
    const float gj = g * s.grad_scale;
    m = s.beta1 * m + (1.0f - s.beta1) * gj;
    v = s.beta2 * v + (1.0f - s.beta2) * gj * gj;
    w = w * decay - s.step_size * m / (sqrtf(v) / s.bc2_sqrt + s.eps);
  }
};

__device__ __forceinline__ void adam4(const AdamMath& f, float4 g, float4& m, float4& v, float4& w) {
  f(g.x, m.x, v.x, w.x);
  f(g.y, m.y, v.y, w.y);
  f(g.z, m.z, v.z, w.z);
  f(g.w, m.w, v.w, w.w);
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(AdamBatch batch, AdamWStep s) {
  const int t = tensor_of_block(batch.map);
  const int64_t begin = (int64_t(blockIdx.x) - batch.map.first_block[t]) * kBlockElements;
  const int64_t end = std::min(batch.map.numel[t], begin + kBlockElements);
  float* __restrict__ w = batch.param[t];
  float* __restrict__ m = batch.m[t];
  float* __restrict__ v = batch.v[t];
  const float* __restrict__ g = batch.grad[t];
  bf16* __restrict__ shadow = batch.shadow[t];
  const AdamMath f{s, batch.decay[t]};
  if (batch.map.vectorized[t]) {
    float4 gv[kVectors], mv[kVectors], vv[kVectors], wv[kVectors];
    int64_t at[kVectors];
#pragma unroll
    for (int k = 0; k < kVectors; ++k) {
      at[k] = begin + 4 * (int64_t(k) * kThreads + threadIdx.x);
      if (at[k] < end) {
        gv[k] = *reinterpret_cast<const float4*>(g + at[k]);
        mv[k] = *reinterpret_cast<const float4*>(m + at[k]);
        vv[k] = *reinterpret_cast<const float4*>(v + at[k]);
        wv[k] = *reinterpret_cast<const float4*>(w + at[k]);
      }
    }
#pragma unroll
    for (int k = 0; k < kVectors; ++k) {
      if (at[k] >= end) continue;
      adam4(f, gv[k], mv[k], vv[k], wv[k]);
      *reinterpret_cast<float4*>(m + at[k]) = mv[k];
      *reinterpret_cast<float4*>(v + at[k]) = vv[k];
      *reinterpret_cast<float4*>(w + at[k]) = wv[k];
      if (shadow) {
        const __nv_bfloat162 lo = __floats2bfloat162_rn(wv[k].x, wv[k].y), hi = __floats2bfloat162_rn(wv[k].z, wv[k].w);
        uint2 packed;
        packed.x = *reinterpret_cast<const uint32_t*>(&lo);
        packed.y = *reinterpret_cast<const uint32_t*>(&hi);
        *reinterpret_cast<uint2*>(shadow + at[k]) = packed;
      }
    }
    return;
  }
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    float mj = m[j], vj = v[j], wj = w[j];
    f(g[j], mj, vj, wj);
    m[j] = mj;
    v[j] = vj;
    w[j] = wj;
    if (shadow) shadow[j] = from_float<bf16>(wj);
  }
}

struct SquaresBatch {
  BlockMap map;
  const float* x[kTensorsPerLaunch];
};

// partial[b] = Σ x² over the b-th block of kNormBlock elements of the launch's tensors (in their order),
// in double, in a fixed order: per thread over its 16-byte pieces, then a tree over the block.
__global__ void __launch_bounds__(kThreads) squares_kernel(SquaresBatch batch, double* partial) {
  __shared__ double sums[kThreads];
  const int t = tensor_of_block(batch.map);
  const int64_t begin = (int64_t(blockIdx.x) - batch.map.first_block[t]) * kNormBlock;
  const int64_t end = std::min(batch.map.numel[t], begin + kNormBlock);
  const float* __restrict__ x = batch.x[t];
  double s = 0.0;
  if (batch.map.vectorized[t]) {
    constexpr int64_t kStride = int64_t(kThreads) * 4 * kVectors;
    for (int64_t base = begin; base < end; base += kStride) {
      float4 piece[kVectors];
#pragma unroll
      for (int k = 0; k < kVectors; ++k) {
        const int64_t at = base + 4 * (int64_t(k) * kThreads + threadIdx.x);
        piece[k] = at < end ? *reinterpret_cast<const float4*>(x + at) : make_float4(0, 0, 0, 0);
      }
#pragma unroll
      for (int k = 0; k < kVectors; ++k)
        s += double(piece[k].x) * piece[k].x + double(piece[k].y) * piece[k].y + double(piece[k].z) * piece[k].z +
             double(piece[k].w) * piece[k].w;
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += double(x[i]) * double(x[i]);
  }
  sums[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sums[0];
}

// total = Σ partial[i] in index order: the block stages the partials in shared memory a tile at a
// time (coalesced), and one thread adds them in order (a global load per addition took 1.5 ms for the
// 1.3B model's 20,500 partials).
constexpr int kSumThreads = 1024, kSumTile = 4096;
__global__ void __launch_bounds__(kSumThreads) ordered_sum_kernel(const double* partial, int64_t n, double* total) {
  __shared__ double tile[kSumTile];
  double s = 0.0;
  for (int64_t base = 0; base < n; base += kSumTile) {
    const int count = int(std::min<int64_t>(kSumTile, n - base));
    for (int i = threadIdx.x; i < count; i += kSumThreads) tile[i] = partial[base + i];
    __syncthreads();
    if (threadIdx.x == 0)
      for (int i = 0; i < count; ++i) s += tile[i];
    __syncthreads();
  }
  if (threadIdx.x == 0) *total = s;
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
  size_t next = 0;
  while (next < tensors.size()) {
    SquaresBatch batch{};
    int64_t blocks = 0;
    for (; next < tensors.size(); ++next) {
      const Tensor* t = tensors[next];
      const float* x = t->data<float>();
      if (!add_to_map(batch.map, t->numel(), aligned16(x) && t->numel() % 4 == 0, kNormBlock, &blocks)) break;
      batch.x[batch.map.count - 1] = x;
    }
    if (blocks == 0) continue;
    squares_kernel<<<unsigned(blocks), kThreads, 0, stream()>>>(batch, partial + first);
    SSM_CUDA_CHECK_LAUNCH("sum_of_squares of {} tensors", batch.map.count);
    first += blocks;
  }
  ordered_sum_kernel<<<1, kSumThreads, 0, stream()>>>(partial, partials, partial + partials);
  SSM_CUDA_CHECK_LAUNCH("sum_of_squares over {} tensors", tensors.size());
  double total = 0.0;
  ::ssm::cuda::copy(&total, false, partial + partials, true, sizeof(double));
  return total;
}

void adamw_update(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) {
  size_t next = 0;
  while (next < tensors.size()) {
    AdamBatch batch{};
    int64_t blocks = 0;
    for (; next < tensors.size(); ++next) {
      const AdamWTensor& t = tensors[next];
      check_on_gpu("adamw_update", {t.param, t.grad, t.m, t.v});
      float* param = t.param->data<float>();
      const float* grad = t.grad->data<float>();
      float* m = t.m->data<float>();
      float* v = t.v->data<float>();
      bf16* shadow = t.shadow ? static_cast<bf16*>(t.shadow->raw()) : nullptr;
      // The BF16 copy is written 8 bytes at a time in the vector path.
      const bool vectorized = aligned16(param) && aligned16(grad) && aligned16(m) && aligned16(v) &&
                              (!shadow || reinterpret_cast<uintptr_t>(shadow) % 8 == 0) && t.param->numel() % 4 == 0;
      if (!add_to_map(batch.map, t.param->numel(), vectorized, kBlockElements, &blocks)) break;
      const int k = batch.map.count - 1;
      batch.param[k] = param;
      batch.grad[k] = grad;
      batch.m[k] = m;
      batch.v[k] = v;
      batch.shadow[k] = shadow;
      batch.decay[k] = t.decay ? step.decay_factor : 1.0f;
    }
    if (blocks == 0) continue;
    adamw_kernel<<<unsigned(blocks), kThreads, 0, stream()>>>(batch, step);
    SSM_CUDA_CHECK_LAUNCH("adamw_update of {} tensors", batch.map.count);
  }
}

}  // namespace ssm::ops::cuda
