// Shared by the attention kernels (attention.cpp, attention_backward.cpp): the 64-lane tiles every
// pass is built from (the checks of q, k, v are in attention_checks.h).
//
// A tile is a block of rows of kTile = 64 floats (4 vectors of 16). Its lanes are queries in the
// forward and dq passes and keys in the dk/dv pass, so the softmax statistics are per lane and need
// no horizontal sums. tile_product computes C[r, :] (+)= Σ_k A(r, k) B[k, :] with A read through any
// two strides (rows of q/k/v/dout as they lie, or transposed) and B a packed tile, so k and v are
// never copied: only the operand that stays fixed for a whole pass item is packed (transposed) once.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/cpu/attention_checks.h"
#include "ops/cpu/op_util.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

using vec::f32x16;
constexpr int64_t kTile = 64;
constexpr int kTileVecs = int(kTile / vec::kLanes);
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- tensors ----

// Row t of batch b of an F32 sequence tensor ([B,W]: t = 0).
struct SeqRows {
  float* data;
  int64_t batch_stride, row_stride;
  float* row(int64_t b, int64_t t) const { return data + b * batch_stride + t * row_stride; }
};
inline SeqRows seq_rows(const Tensor& t) { return {t.data<float>(), t.stride(0), t.dim() == 3 ? t.stride(1) : 0}; }

// ---- visibility ----

// Key positions [first, last] visible from some query in [q_lo, q_hi]: [first, q_hi].
inline int64_t first_visible_key(int64_t q_lo, int64_t window) {
  return window > 0 ? std::max<int64_t>(0, q_lo - window + 1) : 0;
}
// Query positions below `end` that see some key in [k_lo, k_hi]: [k_lo, returned value).
inline int64_t seeing_queries_end(int64_t k_hi, int64_t window, int64_t end) {
  return window > 0 ? std::min(end, k_hi + window) : end;
}
// Whether every key in [k_lo, k_hi] is visible from every query in [q_lo, q_hi].
inline bool all_visible(int64_t q_lo, int64_t q_hi, int64_t k_lo, int64_t k_hi, int64_t window) {
  return k_hi <= q_lo && (window == 0 || q_hi - k_lo < window);
}

// Sets to -inf the entries of a tile (`rows` rows of kTile lanes) whose key is not visible from its
// query. Row r is at position row_pos0 + r and lane i at lane_pos0 + i; rows_are_keys says which
// axis holds the keys.
inline void mask_tile(float* tile, int64_t rows, int64_t row_pos0, int64_t lane_pos0, bool rows_are_keys,
                      int64_t window) {
  using I = vec::i32x16;
  const I lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const int64_t max_window = std::numeric_limits<int32_t>::max();
  const I win = I{} + int32_t(window > 0 ? std::min(window, max_window) : max_window);
  const f32x16 neg_inf = vec::splat<f32x16>(kNegInf);
  for (int64_t r = 0; r < rows; ++r) {
    for (int v = 0; v < kTileVecs; ++v) {
      // Positions relative to row_pos0 keep them in int32 range.
      const I lane_pos = lane + int32_t(lane_pos0 - row_pos0 - r + v * vec::kLanes);  // lane − row
      const I q_minus_k = rows_are_keys ? lane_pos : -lane_pos;
      const auto visible = (q_minus_k >= 0) & (q_minus_k < win);
      float* t = tile + r * kTile + v * vec::kLanes;
      vec::store(t, visible ? vec::load(t) : neg_inf);
    }
  }
}

// ---- tile products ----

template <int R>
inline void tile_product_rows(const float* a, int64_t a_row, int64_t a_col, int64_t depth, const float* b, float* c,
                              bool accumulate) {
  f32x16 acc[R][kTileVecs];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kTileVecs; ++v) acc[r][v] = accumulate ? vec::load(c + r * kTile + v * vec::kLanes) : f32x16{};
  for (int64_t k = 0; k < depth; ++k) {
    const float* bk = b + k * kTile;
    f32x16 bv[kTileVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kTileVecs; ++v) bv[v] = vec::load(bk + v * vec::kLanes);
    const float* ak = a + k * a_col;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const f32x16 ar = vec::splat<f32x16>(ak[r * a_row]);
#pragma GCC unroll 4
      for (int v = 0; v < kTileVecs; ++v) acc[r][v] += ar * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kTileVecs; ++v) vec::store(c + r * kTile + v * vec::kLanes, acc[r][v]);
}

// Rows r < kRowsPerKernel at once: 6 x 4 accumulators + 4 B vectors fill 28 of the 32 AVX-512
// registers.
constexpr int kRowsPerKernel = 6;

// The last rows % kRowsPerKernel rows, by the kernel of exactly that many rows.
template <int R = kRowsPerKernel - 1>
inline void tile_product_tail(int64_t rows, const float* a, int64_t a_row, int64_t a_col, int64_t depth, const float* b,
                              float* c, bool accumulate) {
  if constexpr (R > 0) {
    if (rows == R) return tile_product_rows<R>(a, a_row, a_col, depth, b, c, accumulate);
    tile_product_tail<R - 1>(rows, a, a_row, a_col, depth, b, c, accumulate);
  }
}

// C[r, :] (+)= Σ_{k < depth} A(r, k) B[k, :] for r < rows, A(r, k) = a[r * a_row + k * a_col];
// B and C are tiles (rows of kTile floats).
inline void tile_product(int64_t rows, int64_t depth, const float* a, int64_t a_row, int64_t a_col, const float* b,
                         float* c, bool accumulate) {
  int64_t r = 0;
  for (; r + kRowsPerKernel <= rows; r += kRowsPerKernel)
    tile_product_rows<kRowsPerKernel>(a + r * a_row, a_row, a_col, depth, b, c + r * kTile, accumulate);
  tile_product_tail(rows - r, a + r * a_row, a_row, a_col, depth, b, c + r * kTile, accumulate);
}

// dst[c, i] = src[i * ld + c] * scale for c < width, i < n, and 0 for lanes i >= n: `width` tile rows.
inline void pack_transposed(const float* src, int64_t ld, int64_t n, int64_t width, float scale, float* dst) {
  std::fill(dst, dst + width * kTile, 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < width; ++c) dst[c * kTile + i] = src[i * ld + c] * scale;
}

// dst[i * ld + c] = src[c, i] * lane_scale[i] for c < width, i < n.
inline void unpack_transposed(const float* src, int64_t n, int64_t width, const float* lane_scale, float* dst,
                              int64_t ld) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < width; ++c) dst[i * ld + c] = src[c * kTile + i] * lane_scale[i];
}

// Per-thread scratch of whole vectors (64-byte aligned), grown on demand and kept between calls.
// Slots are separate buffers (the thread calling an op is also OpenMP's thread 0).
template <int Slot>
inline float* thread_scratch(int64_t floats) {
  thread_local std::vector<f32x16> buffer;
  const size_t vectors = size_t((floats + vec::kLanes - 1) / vec::kLanes);
  if (buffer.size() < vectors) buffer.resize(vectors);
  return reinterpret_cast<float*>(buffer.data());
}

}  // namespace ssm::ops::detail
