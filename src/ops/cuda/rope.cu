// ops::rope and ops::rope_backward on the GPU: one block per row (token), in place. The block first
// computes the cos/sin of its position for the half = rotary_dim / 2 frequencies into shared memory,
// then rotates every head's pairs (i, i + half) a pack of i at a time. The backward is the transposed
// rotation (sin negated), as on the CPU.
//
// Rounding as the CPU op (ops/cpu/rope.cpp) and transformers: inv_freq comes from the CPU op's own
// function (detail::rope_inv_freq) and is passed by value, the angle is the float product
// inv_freq · position, and cos/sin are of that float (sincosf: a few ulp at any angle; beyond
// |angle| ≈ 1e5 it takes a slower exact reduction, the 32-byte stack frame in the resource report).
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kMaxHalf = 512;  // rotary_dim up to 1024; the table is a 2 KB kernel parameter
struct InvFreq {
  float v[kMaxHalf];
};

template <class T, int N>
__global__ void rope_kernel(const __grid_constant__ InvFreq inv_freq, Rows<T> x, const int32_t* positions,
                            int64_t heads, int64_t head_dim, int64_t half, float sin_sign) {
  extern __shared__ float cos_sin[];  // cos[half], then sin[half]
  const int64_t row = blockIdx.x;
  const float position = float(positions[row]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = inv_freq.v[i] * position;
    float sin_angle, cos_angle;
    sincosf(angle, &sin_angle, &cos_angle);
    cos_sin[i] = cos_angle;
    cos_sin[half + i] = sin_sign * sin_angle;
  }
  __syncthreads();
  const int64_t packs_per_head = half / N;
  for (int64_t p = threadIdx.x; p < heads * packs_per_head; p += blockDim.x) {
    const int64_t i0 = p % packs_per_head * N;
    T* first = &x.at(row, p / packs_per_head * head_dim + i0);
    float a[N], b[N], out_a[N], out_b[N];
    load_pack<N>(first, a);
    load_pack<N>(first + half, b);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float c = cos_sin[i0 + k], s = cos_sin[half + i0 + k];
      out_a[k] = a[k] * c - b[k] * s;
      out_b[k] = b[k] * c + a[k] * s;
    }
    store_pack<N>(first, out_a);
    store_pack<N>(first + half, out_b);
  }
}

// x rotated in place by the angles of its positions; sin_sign -1: the inverse rotation.
void rotate(const char* op, Tensor& x, const Tensor& positions, const RopeParams& p, float sin_sign) {
  check_on_gpu(op, {&x, &positions});
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()) && (x.dim() == 2 || x.dim() == 3),
            "{}: x must be F32 or BF16 rows [B,T,H*head_dim] or [B,H*head_dim], got {}", op, describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(p.head_dim > 0 && width % p.head_dim == 0, "{}: head_dim {} does not divide the width {} of x", op,
            p.head_dim, width);
  SSM_CHECK(p.rotary_dim > 0 && p.rotary_dim % 2 == 0 && p.rotary_dim <= p.head_dim,
            "{}: rotary_dim {} must be even and in [2, head_dim {}]", op, p.rotary_dim, p.head_dim);
  SSM_CHECK(p.rotary_dim <= 2 * kMaxHalf, "{}: rotary_dim {} is more than the GPU kernel's {}", op, p.rotary_dim,
            2 * kMaxHalf);
  SSM_CHECK(std::isfinite(p.theta) && p.theta > 0.0f, "{}: theta {} must be positive", op, p.theta);
  const Shape pos_shape(x.shape().begin(), x.shape().end() - 1);
  SSM_CHECK(positions.dtype() == DType::I32 && positions.shape() == pos_shape && positions.is_contiguous(),
            "{}: positions must be I32 {} for x {}, got {}", op, shape_str(pos_shape), describe(x),
            describe(positions));
  const int64_t rows = x.rows(), half = p.rotary_dim / 2, heads = width / p.head_dim;
  SSM_CHECK(rows < (int64_t(1) << 31), "{}: {} rows are more than one launch takes", op, rows);
  if (rows == 0) return;
  InvFreq inv_freq{};
  for (int64_t i = 0; i < half; ++i) inv_freq.v[i] = detail::rope_inv_freq(p.theta, p.rotary_dim, i);
  with_activation_type(x.dtype(), op, [&]<class T>() {
    const bool fits = half % kPack<T> == 0 && p.head_dim % kPack<T> == 0 && packs_fit(kPack<T>, {&x});
    with_pack<T>(fits, [&]<int N>() {
      const size_t shared = size_t(2 * half) * sizeof(float);
      rope_kernel<T, N><<<unsigned(rows), threads_for(heads * half / N, 256), shared, stream()>>>(
          inv_freq, rows_of<T>(x), positions.data<int32_t>(), heads, p.head_dim, half, sin_sign);
      SSM_CUDA_CHECK_LAUNCH("{} of x {} with head_dim {}, rotary_dim {}", op, shape_str(x.shape()), p.head_dim,
                            p.rotary_dim);
    });
  });
}

}  // namespace

void rope(Tensor& x, const Tensor& positions, const RopeParams& params) { rotate("rope", x, positions, params, 1.0f); }

void rope_backward(Tensor& dx, const Tensor& positions, const RopeParams& params) {
  rotate("rope_backward", dx, positions, params, -1.0f);
}

}  // namespace ssm::ops::cuda
