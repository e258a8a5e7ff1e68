// Block-wide products of 64 x 64 F32 tiles in shared memory on the CUDA cores, shared by the backward
// kernels that build everything from such tiles (ssd_backward_kernels.cuh, attention_backward_kernels.cuh).
// A block of kThreads = 256 threads is 16 x 16: thread (ty, tx) holds the 4 x 4 piece of rows
// ty + 16 i, columns tx + 16 j of a 64 x 64 result. Tiles are [kTile][kLd] with kLd = kTile + 1, so
// that the 16 rows a column read touches fall in 16 banks. No engine headers: the host checks of
// dev/cuda/ run these on the CPU.
#pragma once
#include <cuda_runtime.h>

namespace ssm::ops::cuda::tile_mac {

constexpr int kTile = 64;
constexpr int kLd = kTile + 1;
constexpr int kTileFloats = kTile * kLd;
constexpr int kThreads = 256;

__device__ __forceinline__ int thread_row() { return int(threadIdx.x) / 16; }
__device__ __forceinline__ int thread_col() { return int(threadIdx.x) % 16; }

// acc[i][j] += Σ_{k < kTile} a(ty + 16 i, k) b(k, tx + 16 j).
template <class FA, class FB>
__device__ __forceinline__ void mac(float (&acc)[4][4], FA&& a, FB&& b) {
  const int ty = thread_row(), tx = thread_col();
#pragma unroll 4
  for (int k = 0; k < kTile; ++k) {
    float av[4], bv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) av[i] = a(ty + 16 * i, k);
#pragma unroll
    for (int j = 0; j < 4; ++j) bv[j] = b(k, tx + 16 * j);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
  }
}

// Operands of mac: element (r, c) of a matrix stored row-major (tile[r * ld + c]) or column-major
// (tile[c * ld + r]) in shared memory.
__device__ __forceinline__ auto row_major(const float* tile, int ld) {
  return [=](int r, int c) { return tile[r * ld + c]; };
}
__device__ __forceinline__ auto col_major(const float* tile, int ld) {
  return [=](int r, int c) { return tile[c * ld + r]; };
}

// Calls f(i, j, r, c) for each element of the thread's 4 x 4 piece at (r, c) = (ty + 16 i, tx + 16 j).
template <class F>
__device__ __forceinline__ void for_piece(F&& f) {
  const int ty = thread_row(), tx = thread_col();
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) f(i, j, ty + 16 * i, tx + 16 * j);
}

// tile[r * kLd + c] = value(r, c) for r < rows and c < cols, 0 elsewhere in [kTile][kTile].
template <class F>
__device__ __forceinline__ void fill_tile(float* tile, int rows, int cols, F&& value) {
  for (int i = int(threadIdx.x); i < kTile * kTile; i += kThreads) {
    const int r = i / kTile, c = i % kTile;
    tile[r * kLd + c] = r < rows && c < cols ? value(r, c) : 0.0f;
  }
}

// The sum over the 16 threads of a row (same ty): every one of them gets it. Fixed order.
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
  for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace ssm::ops::cuda::tile_mac
