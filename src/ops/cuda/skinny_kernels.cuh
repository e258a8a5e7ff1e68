// Matrix-vector products for decoding (1-8 rows of BF16 activations, BF16 weights) with the work around
// them fused in, so that a Mamba layer's step is three kernels instead of six or seven (at 3-4 us per
// dependent kernel in a CUDA graph, the count of kernels, not the bytes, set the decode time).
//
// One warp owns one output column n: it streams that weight row once in 16-byte pieces, kInFlight
// pieces a lane in flight, and dots it with every input row. What the product reads and what the warp
// does with its sums are the kernel's two template arguments:
//   - the input: the rows x themselves (PlainInput), or a norm of them that each block computes into
//     shared memory before the product (NormInput: rmsnorm, or the gated per-group RMSNorm of Mamba-2,
//     rounded to BF16 where the unfused norm would write BF16). The input rows are a few KB, so every
//     block computing the norm costs a little L2 traffic instead of a kernel.
//   - the output: y (=|+=) sum + bias (StoreOutput; += is a residual add in place: each element is read
//     and written by its own warp only), or that and, for the columns of a depthwise causal conv, the
//     conv step of the column's channel (ConvStepOutput): the column's warp is the only reader and
//     writer of that channel's conv state, so no other block can see it half-updated.
// The kernel is launched to overlap the kernel before it (pdl.cuh): its first weight pieces, which no
// kernel writes, are loaded before it waits for that kernel.
// No engine headers: dev/cuda/decode_layer.cu times these kernels as they are.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "element.cuh"
#ifndef SSM_SKINNY_HOST_CHECK  // dev/cuda/decode_layer_host_check.cpp brings CPU versions
#include "pdl.cuh"
#endif

namespace ssm::ops::cuda::skinny {

constexpr int kWarps = 8;                // per block
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxRows = 8;              // input rows a call may have
constexpr int kInFlight = 8;             // weight pieces each lane loads before using them (a 2048-wide column)
constexpr int kPiece = 8;                // BF16 elements in a 16-byte piece
constexpr int kMaxConvTaps = 8;          // the conv's kernel width (Mamba's d_conv is 4)
constexpr int kReduceBytes = 16 * ((kWarps * 4 + 15) / 16);  // the block sums' slot at the start of shared memory

// The same silu as the unfused kernels (activation_math.cuh).
__device__ __forceinline__ float silu_value(float v) { return v / (1.0f + expf(-v)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The sum of v over the block, returned to every thread; `slot` holds kWarps floats of shared memory.
// Ends with a barrier, so it may be called again at once.
__device__ __forceinline__ float block_sum(float v, float* slot) {
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32);
  v = warp_sum(v);
  if (lane == 0) slot[warp] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) total += slot[i];
  __syncthreads();
  return total;
}

// Eight BF16 values at p (16-byte aligned) as floats, and back: one 16-byte access.
struct alignas(16) Bf16x8 {
  bf16 v[kPiece];
};
__device__ __forceinline__ void load8(const bf16* p, float (&out)[kPiece]) {
  const Bf16x8 piece = *reinterpret_cast<const Bf16x8*>(p);
#pragma unroll
  for (int i = 0; i < kPiece; ++i) out[i] = to_float(piece.v[i]);
}
__device__ __forceinline__ void store8(bf16* p, const float (&in)[kPiece]) {
  Bf16x8 piece;
#pragma unroll
  for (int i = 0; i < kPiece; ++i) piece.v[i] = from_float<bf16>(in[i]);
  *reinterpret_cast<Bf16x8*>(p) = piece;
}
// The weights stay as loaded (4 registers a piece, not 8) until they are used, so twice as many are in flight.
__device__ __forceinline__ uint4 load_raw(const bf16* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ void unpack8(const uint4& raw, float (&out)[kPiece]) {
  Bf16x8 piece;
  memcpy(&piece, &raw, sizeof(piece));  // not a cast: a uint4 read as bf16 breaks strict aliasing
#pragma unroll
  for (int i = 0; i < kPiece; ++i) out[i] = to_float(piece.v[i]);
}
__device__ __forceinline__ void load8(const float* p, float (&out)[kPiece]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

// ---- inputs ----

// The rows x as they are (row m at x + m · ldx).
struct PlainInput {
  const bf16* x;
  int64_t ldx;
  static constexpr bool kStaged = false;
  __device__ __forceinline__ const bf16* row(int m, const bf16*, int64_t) const { return x + m * ldx; }
  __device__ __forceinline__ void stage(bf16*, float*, int, int64_t) const {}
};

// rmsnorm (z null) or the gated RMSNorm per group of group_size channels (mamba_ssm's RMSNormGated):
//   gate_after_norm: y = norm(x) · w · silu(z);  otherwise y = norm(x · silu(z)) · w,
// computed by every block into shared memory (row m at staged + m · K), rounded to BF16.
struct NormInput {
  const bf16* x;
  int64_t ldx;
  const bf16* z;  // null: no gate
  int64_t ldz;
  const float* w;
  int64_t group_size;
  bool gate_after_norm;
  float eps;
  static constexpr bool kStaged = true;

  __device__ __forceinline__ const bf16* row(int m, const bf16* staged, int64_t K) const { return staged + m * K; }

  // The values to normalise at channel c (8 of them) and their gates (1 without one, or before the norm).
  __device__ __forceinline__ void values(int m, int64_t c, float (&v)[kPiece], float (&gate)[kPiece]) const {
    load8(x + m * ldx + c, v);
#pragma unroll
    for (int i = 0; i < kPiece; ++i) gate[i] = 1.0f;
    if (!z) return;
    float zv[kPiece];
    load8(z + m * ldz + c, zv);
#pragma unroll
    for (int i = 0; i < kPiece; ++i) {
      if (gate_after_norm) gate[i] = silu_value(zv[i]);
      else v[i] *= silu_value(zv[i]);
    }
  }

  // Every thread of the block calls it. Row m's group g: a pass for the sum of squares, a block sum, a
  // pass that scales (x and z read again, from L1).
  __device__ void stage(bf16* staged, float* reduce_slot, int rows, int64_t K) const {
    const int64_t group_pieces = group_size / kPiece;
    for (int m = 0; m < rows; ++m) {
      for (int64_t c0 = 0; c0 < K; c0 += group_size) {
        float sum_sq = 0.0f;
        for (int64_t p = threadIdx.x; p < group_pieces; p += kThreads) {
          float v[kPiece], gate[kPiece];
          values(m, c0 + p * kPiece, v, gate);
#pragma unroll
          for (int i = 0; i < kPiece; ++i) sum_sq += v[i] * v[i];
        }
        const float inv_rms = 1.0f / sqrtf(block_sum(sum_sq, reduce_slot) / float(group_size) + eps);
        for (int64_t p = threadIdx.x; p < group_pieces; p += kThreads) {
          const int64_t c = c0 + p * kPiece;
          float v[kPiece], gate[kPiece], weight[kPiece], out[kPiece];
          values(m, c, v, gate);
          load8(w + c, weight);
#pragma unroll
          for (int i = 0; i < kPiece; ++i) out[i] = v[i] * inv_rms * weight[i] * gate[i];
          store8(staged + m * K + c, out);
        }
      }
    }
  }
};

// ---- outputs ----

// y[m, n] = (accumulate ? y[m, n] : 0) + (sum + bias[n]) · column_scale[n].
template <class Y>
struct StoreOutput {
  Y* y;
  int64_t ldy;
  const float* bias;          // null: none
  const float* column_scale;  // null: none
  bool accumulate;

  struct Pending {};  // nothing to load ahead
  __device__ __forceinline__ Pending prefetch(int, int64_t) const { return {}; }
  __device__ __forceinline__ float value(int m, int64_t n, float sum) const {
    float out = sum + (bias ? bias[n] : 0.0f);
    if (column_scale) out *= column_scale[n];
    if (accumulate) out += to_float(y[m * ldy + n]);
    return out;
  }
  __device__ __forceinline__ void finish(int m, int64_t n, float sum, const Pending&) const {
    y[m * ldy + n] = from_float<Y>(value(m, n, sum));
  }
};

// StoreOutput, and for the columns [conv_offset, conv_offset + channels): the causal conv step of
// channel c = n - conv_offset over the column's value v (rounded to Y, as the unfused conv reads it):
//   y = silu(conv_bias[c] + Σ_j conv_w[c, j] · in_j),  in_0..K-2 the state rows, in_{K-1} = v;
// the state rows move up one and v becomes the last. State row (m, j) at state + (m (K-1) + j) · lds.
template <class Y>
struct ConvStepOutput {
  StoreOutput<Y> store;
  int64_t conv_offset, channels;
  const float* conv_w;  // [channels, taps]
  const float* conv_bias;  // null: none
  float* state;
  int64_t lds;
  int taps;

  struct Pending {
    float old[kMaxConvTaps - 1];
  };
  __device__ __forceinline__ bool is_conv(int64_t n) const { return n >= conv_offset && n < conv_offset + channels; }
  // The lane that finishes row m loads its old state values before the product.
  __device__ __forceinline__ Pending prefetch(int m, int64_t n) const {
    Pending p;
    if (is_conv(n)) {
      const int64_t c = n - conv_offset;
#pragma unroll
      for (int j = 0; j < kMaxConvTaps - 1; ++j)
        if (j < taps - 1) p.old[j] = state[(m * (taps - 1) + j) * lds + c];
    }
    return p;
  }
  __device__ __forceinline__ void finish(int m, int64_t n, float sum, const Pending& p) const {
    if (!is_conv(n)) return store.finish(m, n, sum, {});
    const int64_t c = n - conv_offset;
    const float v = to_float(from_float<Y>(store.value(m, n, sum)));
    float acc = conv_bias ? conv_bias[c] : 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxConvTaps - 1; ++j)
      if (j < taps - 1) acc += conv_w[c * taps + j] * p.old[j];
    acc += conv_w[c * taps + taps - 1] * v;
#pragma unroll
    for (int j = 0; j + 1 < kMaxConvTaps - 1; ++j)
      if (j + 1 < taps - 1) state[(m * (taps - 1) + j) * lds + c] = p.old[j + 1];
    if (taps > 1) state[(m * (taps - 1) + taps - 2) * lds + c] = v;
    store.y[m * store.ldy + n] = from_float<Y>(silu_value(acc));
  }
};

// ---- the kernel ----

// Shared memory a launch needs: the block sums' slot, then the staged input rows.
template <class Input>
constexpr size_t shared_bytes(int rows, int64_t K) {
  return Input::kStaged ? size_t(kReduceBytes) + size_t(rows) * size_t(K) * sizeof(bf16) : 0;
}

// w [N, K] BF16 rows 16-byte aligned, K % kPiece == 0; rows <= kRows; blocks of kThreads with
// shared_bytes<Input>(rows, K) of dynamic shared memory, at most ceil(N / kWarps) of them (grid_for):
// a warp takes columns n, n + kWarps · gridDim.x, ..., so that a grid that fits the GPU at once stages
// its input once per block however many columns there are (a second wave of blocks would stage it
// again, and wait for the first wave's slowest block). Only w is read before the wait.
template <class Input, class Output, int kRows>
__global__ void __launch_bounds__(kThreads)
    skinny_kernel(Input in, Output out, const bf16* __restrict__ w, int64_t N, int64_t K, int rows) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = int(threadIdx.x % 32);
  const int64_t column_stride = int64_t(gridDim.x) * kWarps, pieces = K / kPiece;
  int64_t n = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  uint4 weights[kInFlight];
  auto load_weights = [&](int64_t column, int64_t p0) {
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) {
      const int64_t p = p0 + int64_t(i) * 32;
      if (p < pieces) weights[i] = load_raw(w + column * K + p * kPiece);
    }
  };
  if (n < N) load_weights(n, lane);
  pdl::wait_for_previous_grid();
  pdl::let_next_grid_start();
  bf16* staged = reinterpret_cast<bf16*>(smem + kReduceBytes);
  if constexpr (Input::kStaged) {
    in.stage(staged, reinterpret_cast<float*>(smem), rows, K);
    __syncthreads();  // the last barrier: warps go their own ways from here
  }
  for (; n < N; n += column_stride) {
    const typename Output::Pending pending = out.prefetch(lane < rows ? lane : 0, n);
    float acc[kRows] = {};
    for (int64_t p0 = lane; p0 < pieces; p0 += 32 * kInFlight) {
      if (p0 != lane) load_weights(n, p0);
#pragma unroll
      for (int i = 0; i < kInFlight; ++i) {
        const int64_t p = p0 + int64_t(i) * 32;
        if (p >= pieces) break;
        float weight[kPiece];
        unpack8(weights[i], weight);
#pragma unroll
        for (int m = 0; m < kRows; ++m) {
          if (m >= rows) break;
          float x[kPiece];
          load8(in.row(m, staged, K) + p * kPiece, x);
#pragma unroll
          for (int e = 0; e < kPiece; ++e) acc[m] = fmaf(weight[e], x[e], acc[m]);
        }
      }
    }
    if (n + column_stride < N) load_weights(n + column_stride, lane);  // in flight while this one finishes
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      if (m >= rows) break;
      const float sum = warp_sum(acc[m]);
      if (lane == m) out.finish(m, n, sum, pending);
    }
  }
}

// The blocks to launch for N columns: as many as the GPU holds at once (from the kernel's registers and
// `shared` bytes, and the GPU's multiprocessors and their registers and shared memory), at most one per
// kWarps columns. `attributes` are the kernel's (cudaFuncGetAttributes).
inline unsigned grid_for(const cudaFuncAttributes& attributes, int64_t N, size_t shared, int multiprocessors,
                         size_t shared_per_multiprocessor) {
  const int64_t wanted = (N + kWarps - 1) / kWarps;
  const int registers_per_warp = (attributes.numRegs * 32 + 255) / 256 * 256;
  int64_t per_multiprocessor = std::min<int64_t>(65536 / (registers_per_warp * kWarps), 2048 / kThreads);
  if (shared > 0)  // the runtime reserves 1 KB a block
    per_multiprocessor = std::min<int64_t>(per_multiprocessor, int64_t(shared_per_multiprocessor / (shared + 1024)));
  return unsigned(std::clamp<int64_t>(std::max<int64_t>(per_multiprocessor, 1) * multiprocessors, 1, wanted));
}

}  // namespace ssm::ops::cuda::skinny
