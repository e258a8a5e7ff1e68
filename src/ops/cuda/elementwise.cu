// Elementwise ops on the GPU over rows tensors (row strides honoured), F32 or BF16 activations. The
// two operands may differ in dtype (an F32 residual stream plus a BF16 mixer output).
#include <algorithm>
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/packs.cuh"

namespace ssm::ops::cuda {

namespace {

// out[r, c] = f(out[r, c], in[r, c], c) over every element of two rows tensors of one shape, a pack of
// N columns a thread (16-byte accesses for N = the packs of the narrower dtype): threads x over a
// row's packs, y over rows, the grid's y walking further rows. No division per element.
template <int N, class TO, class TI, class F>
__global__ void rows_kernel(Rows<TO> out, Rows<const TI> in, int64_t rows, int64_t width, F f) {
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * N;
  if (c >= width) return;
  for (int64_t r = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; r < rows; r += int64_t(gridDim.y) * blockDim.y) {
    float a[N], b[N];
    load_pack<N>(&out.at(r, c), a);
    load_pack<N>(&in.at(r, c), b);
#pragma unroll
    for (int i = 0; i < N; ++i) a[i] = f(a[i], b[i], c + i);
    store_pack<N>(&out.at(r, c), a);
  }
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
      auto launch = [&]<int N>() {
        const int tx = threads_for((width + N - 1) / N, 256), ty = 256 / tx;
        const dim3 grid{blocks_for((width + N - 1) / N, tx), unsigned(std::min<int64_t>((rows + ty - 1) / ty, 65535))};
        rows_kernel<N><<<grid, dim3(tx, ty), 0, stream()>>>(rows_of<TO>(out), rows_of<const TI>(in), rows, width, f);
        SSM_CUDA_CHECK_LAUNCH("{} of {}", op, shape_str(out.shape()));
      };
      constexpr int kN = std::max(kPack<TO>, kPack<TI>);
      if (packs_fit(kN, {&out, &in})) launch.template operator()<kN>();
      else launch.template operator()<1>();
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
struct Copy {
  __device__ float operator()(float, float x, int64_t) const { return x; }
};
struct Fill {
  float value;
  __device__ float operator()(float, float, int64_t) const { return value; }
};
struct SoftCap {
  float cap;
  __device__ float operator()(float, float x, int64_t) const { return cap * tanhf(x / cap); }
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

void soft_cap(const Tensor& x, float cap, Tensor& y) {
  SSM_CHECK(cap > 0 && std::isfinite(cap), "soft_cap: the cap must be positive, got {}", cap);
  SSM_CHECK(x.dtype() == y.dtype(), "soft_cap: x and y must have one dtype, got {} and {}", dtype_name(x.dtype()),
            dtype_name(y.dtype()));
  for_rows("soft_cap", y, x, SoftCap{cap});
}

// BF16 outputs are rounded by from_float<bf16> (__float2bfloat16: to nearest even), as AdamW's copies are.
void convert(const Tensor& x, Tensor& y) {
  check_on_gpu("convert", {&x, &y});
  SSM_CHECK(x.is_contiguous() && y.is_contiguous() && x.shape() == y.shape(),
            "convert: x and y must be contiguous tensors of one shape, got {} and {}", shape_str(x.shape()),
            shape_str(y.shape()));
  for_rows("convert", y, x, Copy{});
}

namespace {

// Whether (v, i) replaces the best (value, column) so far: ties and NaN as on the CPU (a later column
// or a NaN never replaces the best so far; a number replaces a NaN).
__device__ __forceinline__ bool beats(float v, int64_t i, float value, int64_t column) {
  return v > value || (v == value && i < column) || (value != value && v == v);
}

// One block of 1024 threads per row, each thread's loads issued kArgmaxLoads at a time before any
// compare (a row of 50K logits is ~12 rounds a thread), then warp shuffles and one warp over the
// warps' bests. A block of 256 threads waiting on each load before the next took 95 us for 64 rows.
constexpr int kArgmaxThreads = 1024, kArgmaxLoads = 4;

__device__ __forceinline__ void keep_better(float& value, int64_t& column, float v, int64_t i) {
  if (beats(v, i, value, column)) value = v, column = i;
}

__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(Rows<const float> logits, int64_t V, int32_t* ids) {
  __shared__ float warp_value[kArgmaxThreads / 32];
  __shared__ int64_t warp_column[kArgmaxThreads / 32];
  const float* row = &logits.at(blockIdx.x, 0);
  float value = row[0];
  int64_t column = 0;
  for (int64_t i0 = threadIdx.x; i0 < V; i0 += int64_t(kArgmaxLoads) * blockDim.x) {
    float v[kArgmaxLoads];
#pragma unroll
    for (int u = 0; u < kArgmaxLoads; ++u) {
      const int64_t i = i0 + int64_t(u) * blockDim.x;
      if (i < V) v[u] = row[i];
    }
#pragma unroll
    for (int u = 0; u < kArgmaxLoads; ++u) {
      const int64_t i = i0 + int64_t(u) * blockDim.x;
      if (i < V) keep_better(value, column, v[u], i);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1)
    keep_better(value, column, __shfl_down_sync(0xffffffffu, value, offset),
                __shfl_down_sync(0xffffffffu, column, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_value[warp] = value, warp_column[warp] = column;
  __syncthreads();
  if (warp != 0) return;
  value = lane < blockDim.x / 32 ? warp_value[lane] : warp_value[0];
  column = lane < blockDim.x / 32 ? warp_column[lane] : warp_column[0];
  for (int offset = 16; offset > 0; offset >>= 1)
    keep_better(value, column, __shfl_down_sync(0xffffffffu, value, offset),
                __shfl_down_sync(0xffffffffu, column, offset));
  if (lane == 0) ids[blockIdx.x] = int32_t(column);
}

}  // namespace

void argmax(const Tensor& logits, Tensor& ids) {
  check_on_gpu("argmax", {&logits, &ids});
  SSM_CHECK(logits.dtype() == DType::F32 && logits.dim() == 2 && logits.has_uniform_rows() &&
                ids.dtype() == DType::I32 && ids.is_contiguous() && ids.shape() == Shape({logits.size(0)}),
            "argmax: logits must be F32 rows [B, V] and ids I32 [B], got {} and {}", shape_str(logits.shape()),
            shape_str(ids.shape()));
  if (logits.size(0) == 0 || logits.size(1) == 0) return;
  argmax_kernel<<<unsigned(logits.size(0)), kArgmaxThreads, 0, stream()>>>(rows_of<const float>(logits), logits.size(1),
                                                                 ids.data<int32_t>());
  SSM_CUDA_CHECK_LAUNCH("argmax of {}", shape_str(logits.shape()));
}

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
