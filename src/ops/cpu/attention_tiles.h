// Shared by the attention kernels (attention.cpp, attention_backward.cpp): the checked dimensions of
// q, k, v, and the 64-lane tiles every pass is built from.
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
#include "ops/cpu/op_util.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

using vec::f32x16;
constexpr int64_t kTile = 64;
constexpr int kTileVecs = int(kTile / vec::kLanes);
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- tensors ----

// An F32 tensor of `dims` dims ([B,T,W] or [B,W]) whose last dim is contiguous; other strides free.
inline bool is_f32_seq(const Tensor& t, int64_t dims) {
  return t.defined() && t.dtype() == DType::F32 && t.dim() == dims && (t.stride(-1) == 1 || t.size(-1) <= 1);
}

// Row t of batch b of such a tensor ([B,W]: t = 0).
struct SeqRows {
  float* data;
  int64_t batch_stride, row_stride;
  float* row(int64_t b, int64_t t) const { return data + b * batch_stride + t * row_stride; }
};
inline SeqRows seq_rows(const Tensor& t) { return {t.data<float>(), t.stride(0), t.dim() == 3 ? t.stride(1) : 0}; }

struct AttentionDims {
  int64_t batch, T, S, n_heads, n_kv_heads, head_dim, window;
  float scale;
  int64_t group() const { return n_heads / n_kv_heads; }  // query heads per kv head
  int64_t offset() const { return S - T; }                // position of query 0
};

// Validates the head counts against the widths of q and k/v; returns the head dim.
inline int64_t check_heads(const char* op, const AttentionParams& p, int64_t q_width, int64_t kv_width) {
  SSM_CHECK(p.n_heads > 0 && p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0,
            "{}: n_heads {} must be a positive multiple of n_kv_heads {}", op, p.n_heads, p.n_kv_heads);
  SSM_CHECK(q_width > 0 && q_width % p.n_heads == 0, "{}: q width {} is not n_heads {} x head_dim", op, q_width,
            p.n_heads);
  const int64_t head_dim = q_width / p.n_heads;
  SSM_CHECK(kv_width == p.n_kv_heads * head_dim, "{}: k/v width {} != n_kv_heads {} x head_dim {}", op, kv_width,
            p.n_kv_heads, head_dim);
  SSM_CHECK(p.window >= 0, "{}: window {} is negative", op, p.window);
  SSM_CHECK(std::isfinite(p.scale), "{}: scale {} is not finite", op, p.scale);
  return head_dim;
}

inline float softmax_scale(const AttentionParams& p, int64_t head_dim) {
  return p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(float(head_dim));
}

// q [B,T,Hq*d], k and v [B,S,Hkv*d] with S >= T.
inline AttentionDims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                                     const AttentionParams& p) {
  SSM_CHECK(is_f32_seq(q, 3), "{}: q must be F32 [B,T,n_heads*head_dim] with a contiguous last dim, got {}", op,
            describe(q));
  SSM_CHECK(is_f32_seq(k, 3) && k.size(0) == q.size(0) && k.size(1) >= q.size(1),
            "{}: k must be F32 [B,S,n_kv_heads*head_dim] with B {} and S >= T {}, got {}", op, q.size(0), q.size(1),
            describe(k));
  SSM_CHECK(is_f32_seq(v, 3) && v.shape() == k.shape(), "{}: v must be F32 of k's shape {}, got {}", op,
            shape_str(k.shape()), describe(v));
  const int64_t head_dim = check_heads(op, p, q.size(2), k.size(2));
  return {q.size(0), q.size(1), k.size(1), p.n_heads, p.n_kv_heads, head_dim, p.window, softmax_scale(p, head_dim)};
}

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
