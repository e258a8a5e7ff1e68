// The tensor-core pieces of the SSD backward kernels (ssd_backward_kernels.cuh): tile loads into the
// forward's swizzled shared-memory layouts and one warp's share of a product through the forward's
// WarpMma (ssd_kernels.cuh). No engine headers: dev/cuda/ssd_backward_host_check.cpp runs them on the CPU.
#pragma once
#include <cstdint>

#include "ssd_kernels.cuh"

namespace ssm::ops::cuda::ssd_backward_kernels {

using ssd_kernels::kChunk;
using ssd_kernels::kThreads;

// BF16 operands with F32 accumulators for BF16 activations (F32 intermediates such as M and the states
// rounded to BF16 as operands, as mamba_ssm does), 3xTF32 for F32 ones. Tiles of T in shared memory,
// the forward's swizzled layouts: a chunk of x or dy [kChunk][64], of B or C [kChunk][kN], a state
// [64][kN], M [kChunk][kChunk].

using ssd_kernels::kHeadDimTile;
using ssd_kernels::WarpMma;
using ssd_kernels::warp_sum;
template <class T>
using Tile64 = ssd_kernels::SwizzledRows<T, 64>;  // a [kChunk][64] tile of T

// Rows [0, rows) and columns [0, cols) of `src` (row stride ld) into the [kChunk][Lay::kWidth] tile
// `dst`, zeros elsewhere: 16-byte cp.async pieces when the rows allow them (the caller commits and
// waits), else element by element.
template <class T, class Lay>
__device__ __forceinline__ void load_chunk_tile(T* dst, const T* src, int64_t ld, int rows, int cols) {
  constexpr int kVec = Lay::kVec;
  const bool pieces = (reinterpret_cast<uintptr_t>(src) | uintptr_t(ld * int64_t(sizeof(T)))) % 16 == 0 &&
                      cols % kVec == 0;
  if (pieces) {
    ssd_kernels::copy_chunk_async(dst, Lay{}, src, ld, 0, rows, cols);
  } else {
    for (int i = int(threadIdx.x); i < kChunk * Lay::kWidth; i += kThreads) {
      const int r = i / Lay::kWidth, c = i % Lay::kWidth;
      dst[Lay::at(r, c)] = r < rows && c < cols ? src[r * ld + c] : from_float<T>(0.0f);
    }
  }
}

// Elements (r, c .. c + 3) of an F32 matrix with row stride ld, zeros past `rows` and `cols`: one
// 16-byte load when ld % 4 == 0 (src 16-byte aligned then: the scratch's parts start so, c % 4 == 0).
__device__ __forceinline__ float4 f32_quad(const float* src, int64_t ld, int r, int c, int rows, int cols) {
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (r >= rows) return v;
  const float* const row = src + r * ld;
  if (ld % 4 == 0 && cols % 4 == 0) {
    if (c < cols) v = *reinterpret_cast<const float4*>(row + c);
  } else {
    v.x = c < cols ? row[c] : 0.0f;
    v.y = c + 1 < cols ? row[c + 1] : 0.0f;
    v.z = c + 2 < cols ? row[c + 2] : 0.0f;
    v.w = c + 3 < cols ? row[c + 3] : 0.0f;
  }
  return v;
}
__device__ __forceinline__ void store_quad(float* dst, float4 v) { *reinterpret_cast<float4*>(dst) = v; }
__device__ __forceinline__ void store_quad(bf16* dst, float4 v) {
  dst[0] = from_float<bf16>(v.x);
  dst[1] = from_float<bf16>(v.y);
  dst[2] = from_float<bf16>(v.z);
  dst[3] = from_float<bf16>(v.w);
}

// Rows [0, rows) and columns [0, cols) of an F32 matrix (row stride ld; see f32_quad) rounded to T
// into the [kChunk][Lay::kWidth] tile dst, zeros elsewhere.
template <class T, class Lay>
__device__ __forceinline__ void load_f32_tile(T* dst, const float* src, int64_t ld, int rows, int cols) {
  constexpr int kQuads = Lay::kWidth / 4, kPerThread = kChunk * kQuads / kThreads;
  static_assert(kChunk * kQuads % kThreads == 0, "whole quads a thread");
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int i = int(threadIdx.x) + k * kThreads, r = i / kQuads, c = 4 * (i % kQuads);
    store_quad(dst + Lay::at(r, c), f32_quad(src, ld, r, c, rows, cols));
  }
}

// One warp's 16 x 32 piece of a product on the tensor cores: acc[nt] += Σ_{k0 <= k < k_end} A(·, k) B(k, ·)
// over n-tiles nt of 8 columns, `load_a(frag, k0)` and `load_b(frag, k0, nt)` reading the fragments;
// n-tiles with skip(nt) are left out.
template <class T, class LoadA, class LoadB, class Skip>
__device__ __forceinline__ void warp_product(float (&acc)[4][4], int k0, int k_end, LoadA&& load_a, LoadB&& load_b,
                                             Skip&& skip) {
  using M = WarpMma<T>;
#pragma unroll 4
  for (; k0 < k_end; k0 += M::kK) {
    typename M::FragA fa;
    load_a(fa, k0);
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      if (skip(nt)) continue;
      typename M::FragB fb;
      load_b(fb, k0, nt);
      M::mma(acc[nt], fa, fb);
    }
  }
}
__device__ __forceinline__ bool no_skip(int) { return false; }

// Calls f(nt, i, r, col) for each accumulator element acc[nt][i] of a warp's 16 x 32 piece at rows
// m0 + [0, 16), columns n0 + [0, 32): (r, col) = (m0 + lane / 4 + 8 (i / 2), n0 + 8 nt + 2 (lane % 4) + i % 2).
template <class F>
__device__ __forceinline__ void for_fragment(int m0, int n0, F&& f) {
  const int lane = int(threadIdx.x) & 31;
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) f(nt, i, m0 + (lane >> 2) + 8 * (i >> 1), n0 + 8 * nt + 2 * (lane & 3) + (i & 1));
}
// Sums over the lanes that hold the same row (the 4 of one lane / 4), or the same column (the 8 of one lane % 4).
__device__ __forceinline__ float fragment_row_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float fragment_column_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 8);
  return v + __shfl_xor_sync(0xffffffffu, v, 16);
}

}  // namespace ssm::ops::cuda::ssd_backward_kernels
