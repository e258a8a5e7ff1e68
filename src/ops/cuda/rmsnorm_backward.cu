// ops::rmsnorm_backward and ops::gated_rmsnorm_backward on the GPU, the formulas of
// ops/cpu/rmsnorm_backward.cpp: for one group of n channels with input u (x, or x ⊙ silu(z) when the
// gate comes first), r = 1/sqrt(mean(u²) + eps) and g = dy ⊙ w (⊙ silu(z) after the norm),
//   du = r g − (r³/n) u Σ(g ⊙ u),   dw += dy ⊙ u r (⊙ silu(z) after the norm).
//
// A block per (group, block of rows): it walks rows blockIdx.y, blockIdx.y + gridDim.y, ... of its
// group, two passes over each segment (the sums Σu² and Σ g ⊙ u, then the gradients; the second
// reads again from L1/L2). Each thread owns the same channels in every row, so it sums their dw terms
// alone: in registers for its first kAcc packs, in the block's row of the partial buffer for the rest
// of a long segment. add_column_sums then adds the blocks' partial rows in order (deterministic).
#include <algorithm>
#include <utility>

#include "ops/cuda/activation_math.cuh"
#include "ops/cuda/column_sums.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"
#include "ops/cuda/reduce.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kMaxThreads = 512;
constexpr int kAcc = 4;                     // packs per thread whose dw sum stays in registers
constexpr int64_t kMaxRowBlocks = 1024;     // blocks along the rows: partial dw rows to add up

// Where the gate silu(z) was in the forward: nowhere, after the norm or before it (see rmsnorm.cu).
enum class Gate { None, AfterNorm, BeforeNorm };

// One pack of a segment's inputs, and the forward's values at each of its elements (the gate at the
// precision of activations T, as the forward computed it).
template <class T, int N, Gate G>
struct Inputs {
  float x[N], z[N], dy[N], w[N];

  __device__ __forceinline__ float gate(int i) const { return G == Gate::None ? 1.0f : silu_of<T>(z[i]); }
  // The input of the norm.
  __device__ __forceinline__ float u(int i) const { return G == Gate::BeforeNorm ? x[i] * gate(i) : x[i]; }
  // The gradient reaching the normalised u: dy ⊙ w (⊙ silu(z) after the norm).
  __device__ __forceinline__ float g(int i) const {
    return dy[i] * w[i] * (G == Gate::AfterNorm ? gate(i) : 1.0f);
  }
  // dw's term: dy ⊙ u r (⊙ silu(z) after the norm).
  __device__ __forceinline__ float dw_term(int i, float inv_rms) const {
    return dy[i] * u(i) * inv_rms * (G == Gate::AfterNorm ? gate(i) : 1.0f);
  }
};

// One block's segment of one row: group_size channels from its first one.
template <class T, int N, Gate G>
struct Segment {
  const T* x;
  const T* z;
  const T* dy;
  const float* w;
  T* dx;
  T* dz;  // null: not computed

  __device__ __forceinline__ Inputs<T, N, G> load(int64_t p) const {
    Inputs<T, N, G> in;
    load_pack<N>(x + p * N, in.x);
    if constexpr (G != Gate::None) load_pack<N>(z + p * N, in.z);
    load_pack<N>(dy + p * N, in.dy);
    load_pack<N>(w + p * N, in.w);
    return in;
  }

  // Writes dx (added to the old dx when accumulating) and dz at pack p; returns dw's terms.
  __device__ __forceinline__ void backward(int64_t p, float inv_rms, float coef, bool accumulate_dx,
                                           float (&dw_terms)[N]) const {
    const Inputs<T, N, G> in = load(p);
    float old_dx[N] = {}, dxv[N], dzv[N];
    if (accumulate_dx) load_pack<N>(dx + p * N, old_dx);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float du = inv_rms * in.g(i) - coef * in.u(i);
      dxv[i] = (G == Gate::BeforeNorm ? du * in.gate(i) : du) + old_dx[i];
      if constexpr (G == Gate::BeforeNorm) dzv[i] = du * in.x[i] * silu_grad_of<T>(in.z[i]);
      if constexpr (G == Gate::AfterNorm) dzv[i] = in.dy[i] * in.w[i] * in.u(i) * inv_rms * silu_grad_of<T>(in.z[i]);
      dw_terms[i] = in.dw_term(i, inv_rms);
    }
    store_pack<N>(dx + p * N, dxv);
    if constexpr (G != Gate::None) {
      if (dz) store_pack<N>(dz + p * N, dzv);
    }
  }
};

// dw_partial: [gridDim.y, width] F32, or null when dw is not wanted.
template <class T, int N, Gate G>
__global__ void __launch_bounds__(kMaxThreads)
    norm_backward_kernel(Rows<const T> x, Rows<const T> z, const float* w, Rows<const T> dy, Rows<T> dx, Rows<T> dz,
                         float* dw_partial, int64_t rows, int64_t width, int64_t group_size, float eps,
                         bool accumulate_dx) {
  const int64_t c0 = int64_t(blockIdx.x) * group_size, packs = group_size / N, stride = blockDim.x;
  const float inv_n = 1.0f / float(group_size);
  float* partial = dw_partial ? dw_partial + int64_t(blockIdx.y) * width + c0 : nullptr;
  float acc[kAcc][N] = {};
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const Segment<T, N, G> seg{&x.at(row, c0), G == Gate::None ? nullptr : &z.at(row, c0), &dy.at(row, c0), w + c0,
                               &dx.at(row, c0), dz.data ? &dz.at(row, c0) : nullptr};
    float sum_sq = 0.0f, dot = 0.0f;
    for (int64_t p = threadIdx.x; p < packs; p += stride) {
      const Inputs<T, N, G> in = seg.load(p);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const float u = in.u(i);
        sum_sq += u * u;
        dot += in.g(i) * u;
      }
    }
    sum_sq = block_sum(sum_sq);
    dot = block_sum(dot);
    const float inv_rms = 1.0f / sqrtf(sum_sq * inv_n + eps);
    const float coef = inv_rms * inv_rms * inv_rms * inv_n * dot;
#pragma unroll
    for (int k = 0; k < kAcc; ++k) {
      const int64_t p = k * stride + threadIdx.x;
      if (p >= packs) break;
      float terms[N];
      seg.backward(p, inv_rms, coef, accumulate_dx, terms);
#pragma unroll
      for (int i = 0; i < N; ++i) acc[k][i] += terms[i];
    }
    for (int64_t p = kAcc * stride + threadIdx.x; p < packs; p += stride) {
      float terms[N], sum[N];
      seg.backward(p, inv_rms, coef, accumulate_dx, terms);
      if (!partial) continue;
      if (row == blockIdx.y) {
        store_pack<N>(partial + p * N, terms);  // the block's first row starts its sums
      } else {
        load_pack<N>(partial + p * N, sum);
#pragma unroll
        for (int i = 0; i < N; ++i) sum[i] += terms[i];
        store_pack<N>(partial + p * N, sum);
      }
    }
  }
  if (!partial) return;
#pragma unroll
  for (int k = 0; k < kAcc; ++k) {
    const int64_t p = k * stride + threadIdx.x;
    if (p < packs) store_pack<N>(partial + p * N, acc[k]);
  }
}

// Both ops' argument checks (rmsnorm's: no z, one group).
void check_args(const char* op, const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                const Tensor& dy, const Tensor& dx, const Tensor* dz, const Tensor* dw) {
  check_on_gpu(op, {&x, &w, &dy, &dx});
  for (const Tensor* t : {&z, dz, dw})
    if (t && t->defined()) check_on_gpu(op, {t});
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()),
            "{}: x must be F32 or BF16 rows [..., W], got {}", op, describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(!z.defined() || is_gpu_rows(z, x.dtype(), x.shape()),
            "{}: z must be rows of x's shape and dtype ({}), got {}", op, describe(x), describe(z));
  SSM_CHECK(is_gpu_vector(w, width), "{}: w must be F32 [{}] for x {}, got {}", op, width, describe(x), describe(w));
  SSM_CHECK(group_size > 0 && width % group_size == 0, "{}: group_size {} does not divide the width {} of x {}", op,
            group_size, width, shape_str(x.shape()));
  for (const auto& [t, name] : {std::pair{&dy, "dy"}, std::pair{&dx, "dx"}, std::pair{dz, "dz"}}) {
    if (t)
      SSM_CHECK(is_gpu_rows(*t, x.dtype(), x.shape()), "{}: {} must be rows of x's shape and dtype ({}), got {}", op,
                name, describe(x), describe(*t));
  }
  SSM_CHECK(!dz || z.defined(), "{}: dz asked for without z", op);
  SSM_CHECK(!dw || is_gpu_vector(*dw, width), "{}: dw must be F32 [{}], got {}", op, width, describe(*dw));
}

void run(const char* op, const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, Gate gate, float eps,
         const Tensor& dy, Tensor& dx, Tensor* dz, Tensor* dw, bool accumulate_dx) {
  const int64_t width = x.size(-1), rows = x.rows();
  if (rows == 0 || width == 0) return;
  const int64_t groups = width / group_size, row_blocks = std::min(rows, kMaxRowBlocks);
  SSM_CHECK(groups < (int64_t(1) << 31), "{}: {} groups is more than one launch takes", op, groups);
  const Tensor partial = dw ? Tensor::empty({row_blocks, width}, DType::F32, Device::CUDA) : Tensor();
  const Tensor none;
  const Tensor& dz_t = dz ? *dz : none;
  with_activation_type(x.dtype(), op, [&]<class T>() {
    const bool fits = group_size % kPack<T> == 0 && packs_fit(kPack<T>, {&x, &z, &w, &dy, &dx, &dz_t, &partial});
    with_pack<T>(fits, [&]<int N>() {
      const int threads = threads_for(group_size / N, kMaxThreads);
      const dim3 grid{unsigned(groups), unsigned(row_blocks)};
      auto launch = [&]<Gate G>() {
        norm_backward_kernel<T, N, G><<<grid, threads, 0, stream()>>>(
            rows_of<const T>(x), optional_rows_of<const T>(z), w.data<float>(), rows_of<const T>(dy), rows_of<T>(dx),
            optional_rows_of<T>(dz_t), dw ? partial.data<float>() : nullptr, rows, width, group_size, eps,
            accumulate_dx);
      };
      if (gate == Gate::None) launch.template operator()<Gate::None>();
      else if (gate == Gate::AfterNorm) launch.template operator()<Gate::AfterNorm>();
      else launch.template operator()<Gate::BeforeNorm>();
      SSM_CUDA_CHECK_LAUNCH("{} of {} in groups of {}", op, shape_str(x.shape()), group_size);
    });
  });
  if (dw) add_column_sums(partial.data<float>(), row_blocks, width, width, dw->data<float>(), op);
}

}  // namespace

void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw,
                      bool accumulate_dx) {
  const char* op = "rmsnorm_backward";
  check_args(op, x, Tensor(), w, x.defined() && x.dim() >= 1 ? x.size(-1) : 1, dy, dx, nullptr, dw);
  run(op, x, Tensor(), w, x.size(-1), Gate::None, eps, dy, dx, nullptr, dw, accumulate_dx);
}

void gated_rmsnorm_backward(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                            bool norm_before_gate, float eps, const Tensor& dy, Tensor& dx, Tensor* dz, Tensor* dw) {
  const char* op = "gated_rmsnorm_backward";
  check_args(op, x, z, w, group_size, dy, dx, dz, dw);
  const Gate gate = !z.defined() ? Gate::None : norm_before_gate ? Gate::AfterNorm : Gate::BeforeNorm;
  run(op, x, z, w, group_size, gate, eps, dy, dx, dz, dw, false);
}

}  // namespace ssm::ops::cuda
