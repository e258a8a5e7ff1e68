// The kernels of ops::cuda::attention_backward (launched from attention_backward.cu). No engine
// headers: dev/cuda/attention_backward_host_check.cpp runs them on the CPU.
//
// Flash-attention 2, as the CPU op (ops/cpu/attention_backward.cpp): the probabilities are recomputed
// tile by tile from q, k and the forward's lse, never stored. With S = scale q kᵀ over the visible
// pairs, P = exp(S − lse) and D_i = Σ_c dout_ic o_ic:
//   dv_j = Σ_i P_ij dout_i,   dS_ij = P_ij (dout_i·v_j − D_i),
//   dk_j = scale Σ_i dS_ij q_i,   dq_i = scale Σ_j dS_ij k_j.
// Three launches; every output element has exactly one writer and every sum a fixed order (no
// atomics), so two runs give the same bits:
//   1. delta_kernel  (a warp per query row and head): D into an F32 scratch [B, n_heads, T].
//   2. dkdv_kernel   (a block per batch, kv head and tile of 64 keys): K and V of the tile stay in
//      shared memory; for each query head of the group in order, and each tile of 64 queries that
//      sees some of the keys: Sᵀ = K Qᵀ, dPᵀ = V doutᵀ, then Pᵀ and dSᵀ; dV += Pᵀ dout and
//      dK += dSᵀ Q in registers.
//   3. dq_kernel     (a block per batch, head and tile of 64 queries): Q and dout stay in shared
//      memory; for each tile of keys the queries see: S = Q Kᵀ, dP = dout Vᵀ, then dS; dQ += dS K.
// S and dP are computed twice (in 2 and in 3): the price of a dQ without atomics or partial copies,
// as on the CPU. The products are the 64 x 64 x 64 steps of tile_mac.cuh on the CUDA cores, F32
// throughout from F32 or BF16 inputs. The head dim is taken in kChunks slices of 64 channels (up to
// 256): the operand a kernel walks over (Q and dout in 2, K and V in 3) passes through shared memory
// one 64 x 64 slice at a time, while its accumulators hold every slice.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "element.cuh"
#include "flash_common.cuh"
#include "tile_mac.cuh"

namespace ssm::ops::cuda::attention_backward_kernels {

using namespace tile_mac;
using flash::SeqPtr;

constexpr int kMaxChunks = 4;  // head dims up to kMaxChunks * kTile = 256

template <class E>
struct Args {
  SeqPtr<const E> q, o, dout;  // [B, T, n_heads * head_dim]
  SeqPtr<const E> k, v;        // [B, S, n_kv_heads * head_dim]; query head h reads kv head h / group
  SeqPtr<E> dq;                // like q
  SeqPtr<E> dk, dv;            // like k
  const float* lse;            // [B, n_heads, T]: the forward's log Σ exp(scale q·k) (natural log)
  float* delta;                // [B, n_heads, T]: D, written by delta_kernel
  int batch, T, S, n_heads, n_kv_heads, head_dim;
  float scale;                 // the softmax scale
  int64_t window;              // sliding window, 0: none
  __host__ __device__ int group() const { return n_heads / n_kv_heads; }
  __host__ __device__ flash::CausalWindow mask() const { return {int64_t(S) - T, window}; }
};

// The head-dim slices a head dim takes.
__host__ __device__ constexpr int chunks_for(int head_dim) { return (head_dim + kTile - 1) / kTile; }
// The row stride of a tile that holds every slice of 64 rows (resident K, V or Q, dout): odd, so that
// two rows read at one column fall in different banks.
template <int kChunks>
constexpr int kWideLd = kChunks * kTile + 1;

// ---------------------------------------------------------------------------------------------------
// Block helpers.

// Rows [row0, row0 + rows) of batch b of src, columns [col, col + width), into tile[r * ld + c] as F32;
// zeros past `rows` and `width` up to kTile rows and `fill_width` columns.
template <class T>
__device__ __forceinline__ void load_rows(float* tile, int ld, int fill_width, const SeqPtr<const T>& src, int b,
                                          int64_t row0, int rows, int64_t col, int width) {
  for (int i = int(threadIdx.x); i < kTile * fill_width; i += kThreads) {
    const int r = i / fill_width, c = i % fill_width;
    tile[r * ld + c] = r < rows && c < width ? to_float(src.row(b, row0 + r)[col + c]) : 0.0f;
  }
}

// Slice `chunk` (channels [64 chunk, 64 chunk + 64) of the head at column `col`) of rows [row0,
// row0 + rows) into a [kTile][kLd] tile.
template <class T>
__device__ __forceinline__ void load_slice(float* tile, const SeqPtr<const T>& src, int b, int64_t row0, int rows,
                                           int64_t col, int head_dim, int chunk) {
  load_rows(tile, kLd, kTile, src, b, row0, rows, col + chunk * kTile, min(kTile, head_dim - chunk * kTile));
}

// The lse (times log2 e, for exp2) and D of queries [t0, t0 + rows) of head (b, h) into shared
// vectors; 0 past `rows` (those queries are masked).
template <class T>
__device__ __forceinline__ void load_row_stats(const Args<T>& a, int b, int h, int64_t t0, int rows, float* lse2,
                                               float* delta) {
  const int64_t at = (int64_t(b) * a.n_heads + h) * a.T + t0;
  for (int i = int(threadIdx.x); i < kTile; i += kThreads) {
    lse2[i] = i < rows ? a.lse[at + i] * flash::kLog2e : 0.0f;
    delta[i] = i < rows ? a.delta[at + i] : 0.0f;
  }
}

// P and dS of one pair: p = exp(s scale − lse) where query t sees key j (else 0), ds = p (dp − D).
__device__ __forceinline__ void softmax_grad(const flash::CausalWindow& mask, bool in_tiles, int64_t t, int64_t j,
                                             float s, float dp, float scale_log2, float lse2, float delta, float& p,
                                             float& ds) {
  const bool seen = in_tiles && j >= mask.first(0, t) && j <= mask.last(0, t);
  p = seen ? exp2f(s * scale_log2 - lse2) : 0.0f;
  ds = p * (dp - delta);
}

// Writes acc[chunk] (the thread's pieces of a [64 rows][64 kChunks channels] result) times `factor`
// to rows [row0, row0 + rows) of batch b of dst, columns [col, col + head_dim).
template <class T, int kChunks>
__device__ __forceinline__ void store_rows(const float (&acc)[kChunks][4][4], float factor, const SeqPtr<T>& dst,
                                           int b, int64_t row0, int rows, int64_t col, int head_dim) {
#pragma unroll
  for (int chunk = 0; chunk < kChunks; ++chunk)
    for_piece([&](int i, int j, int r, int c) {
      const int channel = chunk * kTile + c;
      if (r < rows && channel < head_dim)
        dst.row(b, row0 + r)[col + channel] = from_float<T>(acc[chunk][i][j] * factor);
    });
}

// ---------------------------------------------------------------------------------------------------
// 1. A warp per (b, t, h), kDeltaWarps warps a block: D = Σ_c dout_c o_c.

constexpr int kDeltaWarps = 8;

template <class T>
__global__ void __launch_bounds__(32 * kDeltaWarps) delta_kernel(Args<T> a) {
  const int64_t item = int64_t(blockIdx.x) * kDeltaWarps + int(threadIdx.x) / 32;  // (b * T + t) * n_heads + h
  if (item >= int64_t(a.batch) * a.T * a.n_heads) return;  // the whole warp
  const int lane = int(threadIdx.x) % 32, h = int(item % a.n_heads);
  const int64_t bt = item / a.n_heads, t = bt % a.T;
  const int b = int(bt / a.T);
  const T* o = a.o.row(b, t) + int64_t(h) * a.head_dim;
  const T* dout = a.dout.row(b, t) + int64_t(h) * a.head_dim;
  float sum = 0.0f;
  for (int c = lane; c < a.head_dim; c += 32) sum = fmaf(to_float(o[c]), to_float(dout[c]), sum);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) a.delta[(int64_t(b) * a.n_heads + h) * a.T + t] = sum;
}

// ---------------------------------------------------------------------------------------------------
// 2. A block per (key tile, kv head, batch) in (x, y, z): dK and dV of the tile's keys.

template <int kChunks>
constexpr size_t dkdv_smem_bytes() {
  return (2 * kTile * kWideLd<kChunks> + 4 * kTileFloats + 2 * kTile) * sizeof(float);
}

template <class T, int kChunks>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(Args<T> a) {
  constexpr int kLdW = kWideLd<kChunks>;
  extern __shared__ __align__(16) unsigned char smem[];
  float* const ks = reinterpret_cast<float*>(smem);  // [key][kLdW]: K of the tile's keys
  float* const vs = ks + kTile * kLdW;                // [key][kLdW]: V
  float* const qs = vs + kTile * kLdW;                // [query][kLd]: a slice of Q
  float* const dos = qs + kTileFloats;                // [query][kLd]: the same slice of dout
  float* const pt = dos + kTileFloats;                // [key][kLd]: Pᵀ
  float* const dst = pt + kTileFloats;                // [key][kLd]: dSᵀ
  float* const lse2 = dst + kTileFloats;              // [query]
  float* const delta = lse2 + kTile;                  // [query]

  const int d = a.head_dim, kvh = int(blockIdx.y), b = int(blockIdx.z);
  const int64_t k0 = int64_t(blockIdx.x) * kTile, kv_col = int64_t(kvh) * d;
  const int nk = int(min(int64_t(kTile), int64_t(a.S) - k0));
  load_rows(ks, kLdW, kChunks * kTile, a.k, b, k0, nk, kv_col, d);
  load_rows(vs, kLdW, kChunks * kTile, a.v, b, k0, nk, kv_col, d);

  // The queries that see some of the keys: [t_begin, t_end) (none for keys of a prefix beyond every
  // window: their gradients are 0).
  const flash::CausalWindow mask = a.mask();
  const int64_t k_last = k0 + nk - 1;
  const int64_t t_begin = max(int64_t(0), k0 - mask.offset);
  const int64_t t_end = a.window > 0 ? min(int64_t(a.T), k_last + a.window - mask.offset) : int64_t(a.T);
  const float scale_log2 = a.scale * flash::kLog2e;

  float dk[kChunks][4][4] = {}, dv[kChunks][4][4] = {};
  for (int h = kvh * a.group(); h < (kvh + 1) * a.group(); ++h) {
    const int64_t q_col = int64_t(h) * d;
    for (int64_t t0 = t_begin; t0 < t_end; t0 += kTile) {
      const int nq = int(min(int64_t(kTile), t_end - t0));
      float s[4][4] = {}, dp[4][4] = {};
#pragma unroll
      for (int chunk = 0; chunk < kChunks; ++chunk) {
        __syncthreads();  // the slices (and at chunk 0 the previous tile's Pᵀ, dSᵀ, lse2, delta) are read
        if (chunk == 0) load_row_stats(a, b, h, t0, nq, lse2, delta);
        load_slice(qs, a.q, b, t0, nq, q_col, d, chunk);
        load_slice(dos, a.dout, b, t0, nq, q_col, d, chunk);
        __syncthreads();
        mac(s, row_major(ks + chunk * kTile, kLdW), col_major(qs, kLd));  // K Qᵀ
        mac(dp, row_major(vs + chunk * kTile, kLdW), col_major(dos, kLd));  // V doutᵀ
      }
      // Element (r, col): key k0 + r seen from query t0 + col.
      for_piece([&](int i, int j, int r, int col) {
        float p, ds;
        softmax_grad(mask, r < nk && col < nq, t0 + col, k0 + r, s[i][j], dp[i][j], scale_log2, lse2[col],
                     delta[col], p, ds);
        pt[r * kLd + col] = p;
        dst[r * kLd + col] = ds;
      });
      // dV += Pᵀ dout and dK += dSᵀ Q, slice by slice: the last slice, still loaded, first.
#pragma unroll
      for (int chunk = kChunks - 1; chunk >= 0; --chunk) {
        __syncthreads();  // Pᵀ, dSᵀ written; before a reload, the slices read
        if (chunk < kChunks - 1) {
          load_slice(qs, a.q, b, t0, nq, q_col, d, chunk);
          load_slice(dos, a.dout, b, t0, nq, q_col, d, chunk);
          __syncthreads();
        }
        mac(dv[chunk], row_major(pt, kLd), row_major(dos, kLd));  // Pᵀ dout
        mac(dk[chunk], row_major(dst, kLd), row_major(qs, kLd));  // dSᵀ Q
      }
    }
  }
  store_rows(dk, a.scale, a.dk, b, k0, nk, kv_col, d);
  store_rows(dv, 1.0f, a.dv, b, k0, nk, kv_col, d);
}

// ---------------------------------------------------------------------------------------------------
// 3. A block per (query tile, head, batch) in (x, y, z), the tiles of the longest causal rows first:
// dQ of the tile's queries.

template <int kChunks>
constexpr size_t dq_smem_bytes() {
  return (2 * kTile * kWideLd<kChunks> + 3 * kTileFloats + 2 * kTile) * sizeof(float);
}

template <class T, int kChunks>
__global__ void __launch_bounds__(kThreads) dq_kernel(Args<T> a) {
  constexpr int kLdW = kWideLd<kChunks>;
  extern __shared__ __align__(16) unsigned char smem[];
  float* const qs = reinterpret_cast<float*>(smem);  // [query][kLdW]: Q of the tile's queries
  float* const dos = qs + kTile * kLdW;               // [query][kLdW]: dout
  float* const ks = dos + kTile * kLdW;               // [key][kLd]: a slice of K
  float* const vs = ks + kTileFloats;                 // [key][kLd]: the same slice of V
  float* const ds = vs + kTileFloats;                 // [query][kLd]: dS
  float* const lse2 = ds + kTileFloats;               // [query]
  float* const delta = lse2 + kTile;                  // [query]

  const int d = a.head_dim, h = int(blockIdx.y), b = int(blockIdx.z), kvh = h / a.group();
  const int n_tiles = (a.T + kTile - 1) / kTile;
  const int64_t t0 = int64_t(n_tiles - 1 - int(blockIdx.x)) * kTile;
  const int nq = int(min(int64_t(kTile), int64_t(a.T) - t0));
  const int64_t q_col = int64_t(h) * d, kv_col = int64_t(kvh) * d;
  load_rows(qs, kLdW, kChunks * kTile, a.q, b, t0, nq, q_col, d);
  load_rows(dos, kLdW, kChunks * kTile, a.dout, b, t0, nq, q_col, d);
  load_row_stats(a, b, h, t0, nq, lse2, delta);

  const flash::CausalWindow mask = a.mask();
  const int64_t key_last = mask.last(b, t0 + nq - 1);
  const float scale_log2 = a.scale * flash::kLog2e;

  float dq[kChunks][4][4] = {};
  for (int64_t k0 = mask.first(b, t0); k0 <= key_last; k0 += kTile) {
    const int nk = int(min(int64_t(kTile), key_last + 1 - k0));
    float s[4][4] = {}, dp[4][4] = {};
#pragma unroll
    for (int chunk = 0; chunk < kChunks; ++chunk) {
      __syncthreads();  // the slices (and at chunk 0 the previous tile's dS) are read
      load_slice(ks, a.k, b, k0, nk, kv_col, d, chunk);
      load_slice(vs, a.v, b, k0, nk, kv_col, d, chunk);
      __syncthreads();
      mac(s, row_major(qs + chunk * kTile, kLdW), col_major(ks, kLd));  // Q Kᵀ
      mac(dp, row_major(dos + chunk * kTile, kLdW), col_major(vs, kLd));  // dout Vᵀ
    }
    // Element (r, col): key k0 + col seen from query t0 + r.
    for_piece([&](int i, int j, int r, int col) {
      float p, dsv;
      softmax_grad(mask, r < nq && col < nk, t0 + r, k0 + col, s[i][j], dp[i][j], scale_log2, lse2[r], delta[r], p,
                   dsv);
      ds[r * kLd + col] = dsv;
    });
    // dQ += dS K, slice by slice: the last slice, still loaded, first.
#pragma unroll
    for (int chunk = kChunks - 1; chunk >= 0; --chunk) {
      __syncthreads();  // dS written; before a reload, the slice read
      if (chunk < kChunks - 1) {
        load_slice(ks, a.k, b, k0, nk, kv_col, d, chunk);
        __syncthreads();
      }
      mac(dq[chunk], row_major(ds, kLd), row_major(ks, kLd));  // dS K
    }
  }
  store_rows(dq, a.scale, a.dq, b, t0, nq, q_col, d);
}

}  // namespace ssm::ops::cuda::attention_backward_kernels
