// ops::rmsnorm_backward and ops::gated_rmsnorm_backward on the GPU, the formulas of
// ops/cpu/rmsnorm_backward.cpp: for one group of n channels with input u (x, or x ⊙ silu(z) when the
// gate comes first), r = 1/sqrt(mean(u²) + eps) and g = dy ⊙ w (⊙ silu(z) after the norm),
//   du = r g − (r³/n) u Σ(g ⊙ u),   dw += dy ⊙ u r (⊙ silu(z) after the norm).
//
// A block per (group, block of rows): it walks rows blockIdx.y, blockIdx.y + gridDim.y, ... of its
// group. Each thread owns the same packs of channels in every row: the first R of them (pack
// threadIdx.x + k · blockDim.x, k < R) stay in registers as loaded, from the sums (Σu², Σ g ⊙ u, one
// block reduction) to the gradients, and the next row's are loaded before the current row's sums, so
// a row's loads wait behind the previous row's work instead of stalling it. Packs beyond R per thread
// (segments longer than R · blockDim.x packs) are read again in the second pass. A thread sums the dw
// terms of its packs alone: in registers for its first R, in the block's row of the partial buffer for
// the rest. add_column_sums then adds the blocks' partial rows in order (deterministic).
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
// Threads of one launch at most over all its blocks (about a full H200: 132 multiprocessors of up to
// 2048 threads, halved). Fewer, longer row walks: each block's loads run ahead by a row for longer,
// and fewer partial dw rows to add. A constant, not the device's size: the sums' order (the bits of
// dw) depends only on the shapes.
constexpr int64_t kLaunchThreads = int64_t(1) << 17;

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
  // Adds this pack's terms to the row's sums Σu² and Σ g ⊙ u.
  __device__ __forceinline__ void add_sums(float& sum_sq, float& dot) const {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float ui = u(i);
      sum_sq += ui * ui;
      dot += g(i) * ui;
    }
  }
};

// One pack of a row as loaded (activations of type T), before any arithmetic: what a thread keeps
// in registers between the sums and the gradients. old_dx: the dx to add to (accumulate_dx, which
// only rmsnorm_backward, without a gate, asks for).
template <class T, int N>
struct Loaded {
  Pack<T, N> x, z, dy, old_dx;
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

  __device__ __forceinline__ Loaded<T, N> load(int64_t p, bool accumulate_dx) const {
    Loaded<T, N> in;
    in.x = *reinterpret_cast<const Pack<T, N>*>(x + p * N);
    if constexpr (G != Gate::None) in.z = *reinterpret_cast<const Pack<T, N>*>(z + p * N);
    in.dy = *reinterpret_cast<const Pack<T, N>*>(dy + p * N);
    if (G == Gate::None && accumulate_dx) in.old_dx = *reinterpret_cast<const Pack<T, N>*>(dx + p * N);
    return in;
  }

  __device__ __forceinline__ Inputs<T, N, G> inputs(int64_t p, const Loaded<T, N>& loaded) const {
    Inputs<T, N, G> in;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      in.x[i] = to_float(loaded.x.v[i]);
      if constexpr (G != Gate::None) in.z[i] = to_float(loaded.z.v[i]);
      in.dy[i] = to_float(loaded.dy.v[i]);
    }
    load_pack<N>(w + p * N, in.w);
    return in;
  }

  // Writes dx (added to the old dx when accumulating) and dz at pack p; returns dw's terms.
  __device__ __forceinline__ void backward(int64_t p, const Loaded<T, N>& loaded, float inv_rms, float coef,
                                           bool accumulate_dx, float (&dw_terms)[N]) const {
    const Inputs<T, N, G> in = inputs(p, loaded);
    float dxv[N], dzv[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float du = inv_rms * in.g(i) - coef * in.u(i);
      const float old_dx = G == Gate::None && accumulate_dx ? to_float(loaded.old_dx.v[i]) : 0.0f;
      dxv[i] = (G == Gate::BeforeNorm ? du * in.gate(i) : du) + old_dx;
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

// The sums of a and b over the block, returned to every thread (block_sum's contract): one pair of
// barriers for both, each sum in block_sum's order.
__device__ __forceinline__ float2 block_sum2(float a, float b) {
  __shared__ float2 warp_sums[32];
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32);
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) warp_sums[warp] = make_float2(a, b);
  __syncthreads();
  const float2 mine = lane < int(blockDim.x / 32) ? warp_sums[lane] : make_float2(0.0f, 0.0f);
  const float2 sums = make_float2(warp_sum(mine.x), warp_sum(mine.y));
  __syncthreads();
  return sums;
}

// R: packs per thread kept in registers; Tail: whether the segment has packs beyond R per thread.
// With one pack a thread and no tail, at most 64 registers: two blocks of 512 threads a
// multiprocessor (bf16 packs of 8: 64 registers, no spills). dw_partial: [gridDim.y, width] F32, or
// null when dw is not wanted.
template <class T, int N, Gate G, int R, bool Tail>
__global__ void __launch_bounds__(kMaxThreads, R == 1 && !Tail ? 2 : 1)
    norm_backward_kernel(Rows<const T> x, Rows<const T> z, const float* w, Rows<const T> dy, Rows<T> dx, Rows<T> dz,
                         float* dw_partial, int64_t rows, int64_t width, int64_t group_size, float eps,
                         bool accumulate_dx) {
  const int64_t c0 = int64_t(blockIdx.x) * group_size, packs = group_size / N, stride = blockDim.x;
  const float inv_n = 1.0f / float(group_size);
  float* partial = dw_partial ? dw_partial + int64_t(blockIdx.y) * width + c0 : nullptr;
  auto segment = [&](int64_t row) {
    return Segment<T, N, G>{&x.at(row, c0), G == Gate::None ? nullptr : &z.at(row, c0), &dy.at(row, c0), w + c0,
                            &dx.at(row, c0), dz.data ? &dz.at(row, c0) : nullptr};
  };
  // The thread's resident packs of one row, loaded.
  auto load_resident = [&](int64_t row, Loaded<T, N> (&loaded)[R]) {
    const Segment<T, N, G> seg = segment(row);
#pragma unroll
    for (int k = 0; k < R; ++k) {
      const int64_t p = k * stride + threadIdx.x;
      if (p < packs) loaded[k] = seg.load(p, accumulate_dx);
    }
  };
  float acc[R][N] = {};
  Loaded<T, N> current[R], next[R];
  if (int64_t(blockIdx.y) < rows) load_resident(blockIdx.y, current);
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const Segment<T, N, G> seg = segment(row);
    if (row + gridDim.y < rows) load_resident(row + gridDim.y, next);
    float sum_sq = 0.0f, dot = 0.0f;
#pragma unroll
    for (int k = 0; k < R; ++k) {
      const int64_t p = k * stride + threadIdx.x;
      if (p < packs) seg.inputs(p, current[k]).add_sums(sum_sq, dot);
    }
    for (int64_t p = R * stride + threadIdx.x; Tail && p < packs; p += stride)
      seg.inputs(p, seg.load(p, accumulate_dx)).add_sums(sum_sq, dot);
    const float2 sums = block_sum2(sum_sq, dot);
    const float inv_rms = 1.0f / sqrtf(sums.x * inv_n + eps);
    const float coef = inv_rms * inv_rms * inv_rms * inv_n * sums.y;
#pragma unroll
    for (int k = 0; k < R; ++k) {
      const int64_t p = k * stride + threadIdx.x;
      if (p >= packs) break;
      float terms[N];
      seg.backward(p, current[k], inv_rms, coef, accumulate_dx, terms);
#pragma unroll
      for (int i = 0; i < N; ++i) acc[k][i] += terms[i];
    }
    for (int64_t p = R * stride + threadIdx.x; Tail && p < packs; p += stride) {
      float terms[N], sum[N];
      seg.backward(p, seg.load(p, accumulate_dx), inv_rms, coef, accumulate_dx, terms);
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
#pragma unroll
    for (int k = 0; k < R; ++k) current[k] = next[k];
  }
  if (!partial) return;
#pragma unroll
  for (int k = 0; k < R; ++k) {
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
  const int64_t groups = width / group_size;
  SSM_CHECK(groups < (int64_t(1) << 31), "{}: {} groups is more than one launch takes", op, groups);
  const Tensor none;
  const Tensor& dz_t = dz ? *dz : none;
  with_activation_type(x.dtype(), op, [&]<class T>() {
    // The partial dw buffer needs no check: fresh from the pool (256-byte aligned), rows of `width`
    // floats, whole packs whenever the group's are.
    const bool fits = group_size % kPack<T> == 0 && packs_fit(kPack<T>, {&x, &z, &w, &dy, &dx, &dz_t});
    with_pack<T>(fits, [&]<int N>() {
      const int64_t packs = group_size / N;
      const int threads = threads_for(packs, kMaxThreads);
      const int64_t row_blocks = std::clamp<int64_t>(kLaunchThreads / (int64_t(threads) * groups), 1, rows);
      const Tensor partial = dw ? Tensor::empty({row_blocks, width}, DType::F32, Device::CUDA) : Tensor();
      const dim3 grid{unsigned(groups), unsigned(row_blocks)};
      auto launch = [&]<Gate G, int R, bool Tail>() {
        norm_backward_kernel<T, N, G, R, Tail><<<grid, threads, 0, stream()>>>(
            rows_of<const T>(x), optional_rows_of<const T>(z), w.data<float>(), rows_of<const T>(dy), rows_of<T>(dx),
            optional_rows_of<T>(dz_t), dw ? partial.data<float>() : nullptr, rows, width, group_size, eps,
            accumulate_dx);
      };
      // Packs per thread in registers: one up to a block's threads, else two; longer segments keep
      // one and read the others again.
      auto with_gate = [&]<int R, bool Tail>() {
        if (gate == Gate::None) launch.template operator()<Gate::None, R, Tail>();
        else if (gate == Gate::AfterNorm) launch.template operator()<Gate::AfterNorm, R, Tail>();
        else launch.template operator()<Gate::BeforeNorm, R, Tail>();
      };
      if (packs <= threads) with_gate.template operator()<1, false>();
      else if (packs <= 2 * threads) with_gate.template operator()<2, false>();
      else with_gate.template operator()<1, true>();
      SSM_CUDA_CHECK_LAUNCH("{} of {} in groups of {}", op, shape_str(x.shape()), group_size);
      if (dw) add_column_sums(partial.data<float>(), row_blocks, width, width, dw->data<float>(), op);
    });
  });
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
