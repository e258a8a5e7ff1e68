// The kernels of ops::cuda::rat_backward (launched from rat_backward.cu). No engine headers, so that
// dev/cuda/rat_backward_host_check.cpp runs them on the CPU (one-dimensional grids and blocks,
// dynamic shared memory only, for its execution model).
//
// The backward of ops/cpu/rat_backward.cpp. Per sequence b and head h: Q_t = λ R_c q_t (c = ⌊t/L⌋),
// K_e, V_e the rotated key and the value at the end of chunk e, seen by the queries of later chunks;
// S = Q Kᵀ, U = dY Vᵀ over the visible ends, with the running pair s_run = λ q_t·k̃_t and
// u_run = dy_t·ṽ_t; P the softmax over both, D_t = dy_t·y_t = Σ P U, dS = P (U − D).
// Kernels, in launch order (each sum in a fixed order, so two runs give the same bits):
//   0. rope_table: cos and sin of every chunk index's angle per channel pair, rounded as the CPU's.
//   1. states: block per (b, h, chunk), a thread per channel pair (j, j + dh/2): the in-chunk
//      recurrence, k̃ and ṽ after every token into scratch, the rotated key and the value at every
//      chunk end.
//   2. query_stats: block per (b, h, 32 queries): S and U over the ends in 32 x 32 tiles (an online
//      softmax per query), then the running pair: per query the log-sum-exp, D, P_run and dS_run.
//   3. end_grads: block per (b, h, 32 ends): over the later queries in tiles, dK = dSᵀ Q, dV = Pᵀ dY.
//   4. query_grads: block per (b, h, 32 queries): Σ_e dS K_e, the rotated queries' gradient.
//   5. recurrence: blocks as 1, walking each chunk back: each head's dq (rotated back, plus the
//      running term), the direct state gradients, the reverse recurrence: dv, dg, each head's dk,
//      the gate_bias partial sums of (b, chunk).
//   6. group_sums: dq and dk summed over the heads of each q/k group, in head order.
// rat_backward.cu then adds the gate_bias partials with add_column_sums.
// The attention kernels (2-4) compute their 32 x 32 tiles with 256 threads, 4 entries each (rows
// ty, ty + 8, ..., column tx), from slices of 32 channels staged in shared memory.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "element.cuh"

namespace ssm::ops::cuda::rat_backward_kernels {

constexpr int kTile = 32;                         // queries and chunk ends per attention tile
constexpr int kPad = kTile + 1;                   // a tile row in shared memory (no bank conflicts)
constexpr int kTileFloats = kTile * kPad;
constexpr int kTileThreads = 256;
constexpr int kRowsPerThread = kTile * kTile / kTileThreads;  // 4
constexpr int kRowStep = kTileThreads / kTile;                // 8
constexpr int kMaxHalf = 256;                     // channel pairs per head: head sizes up to 512

// The rotation's frequency per channel pair, computed on the host as the CPU computes it.
struct Freqs {
  float inv_freq[kMaxHalf];
};

// Row b·length + t of each sequence tensor at row · ld. Gradients not wanted are null.
template <class E>
struct Args {
  const E *q, *k, *v, *g, *dy;  // q, k [B, T, G·dh]; v, g, dy [B, T, W]
  int64_t ldq, ldk, ldv, ldg, lddy;
  const float* gate_bias;  // [W]
  E *dq, *dk, *dv, *dg;
  int64_t lddq, lddk, lddv, lddg;
  int batch, length, heads, groups, head_dim, chunk;
  float scale;  // λ
  __host__ __device__ int half() const { return head_dim / 2; }
  __host__ __device__ int chunks() const { return (length + chunk - 1) / chunk; }
  __host__ __device__ int ends() const { return length / chunk; }  // chunks that finish
  __host__ __device__ int64_t width() const { return int64_t(heads) * head_dim; }
  __host__ __device__ int query_tiles() const { return (length + kTile - 1) / kTile; }
  __host__ __device__ int end_tiles() const { return (ends() + kTile - 1) / kTile; }
};

// F32 scratch; parts whose results are not wanted are null.
struct Scratch {
  float *cos, *sin;                     // [chunks, dh/2]
  float *ks, *vs;                       // [B·T, W]: k̃ and ṽ after every token
  float *end_k, *end_v;                 // [B·ends, W]: K_e (rotated) and V_e
  float *dend_k, *dend_v;               // [B·ends, W]: their gradients (dK in the rotated frame)
  float *lse, *delta, *p_run, *ds_run;  // [B·H, T]
  float *dq_heads, *dk_heads;           // [B·T, W]: each head's dq (Σ dS K, then final) and dk
  float* dbias_part;                    // [B·chunks, W]
};

struct Wanted {
  bool dq, dk, dv, dg, dbias;
  bool recurrence() const { return dk || dv || dg || dbias; }
  bool any() const { return dq || recurrence(); }
};

// Carves the scratch out of `base` (null: only counts); returns the floats it takes.
template <class E>
int64_t carve_scratch(const Args<E>& a, const Wanted& w, float* base, Scratch& s) {
  int64_t used = 0;
  auto take = [&](bool wanted, int64_t n) -> float* {
    if (!wanted) return nullptr;
    float* p = base ? base + used : nullptr;
    used += n;
    return p;
  };
  const int64_t table = int64_t(a.chunks()) * a.half(), tokens = int64_t(a.batch) * a.length * a.width();
  const int64_t ends = int64_t(a.batch) * a.ends() * a.width(), queries = int64_t(a.batch) * a.heads * a.length;
  s.cos = take(true, table);
  s.sin = take(true, table);
  s.ks = take(true, tokens);
  s.vs = take(true, tokens);
  s.end_k = take(true, ends);
  s.end_v = take(true, ends);
  s.dend_k = take(w.recurrence(), ends);
  s.dend_v = take(w.recurrence(), ends);
  s.lse = take(true, queries);
  s.delta = take(true, queries);
  s.p_run = take(true, queries);
  s.ds_run = take(true, queries);
  s.dq_heads = take(w.dq, tokens);
  s.dk_heads = take(w.dk, tokens);
  s.dbias_part = take(w.dbias, int64_t(a.batch) * a.chunks() * a.width());
  return used;
}

// Shared memory of the attention kernels, in floats: the four channel-slice tiles, then their own.
constexpr int kStatsFloats = 6 * kTileFloats;      // + S, U
constexpr int kEndGradsFloats = 6 * kTileFloats;   // + P, dS
constexpr int kQueryGradsFloats = 5 * kTileFloats;  // + dS

// ---- helpers ----

// The forget gate a = σ(x) and 1 − a (without the cancellation), as the CPU's rat_gate.
__device__ __forceinline__ void gate(float x, float& a, float& one_minus_a) {
  const float e = expf(-x);
  a = 1.0f / (1.0f + e);
  one_minus_a = e * a;
}

// Head h's channel pair (j, j + dh/2): its columns in the W-wide tensors and in the G·dh-wide q, k.
struct Pair {
  int64_t col1, col2, qk1, qk2;
};
template <class E>
__device__ __forceinline__ Pair pair_of(const Args<E>& a, int h, int j) {
  const int64_t col = int64_t(h) * a.head_dim + j, qk = int64_t(h % a.groups) * a.head_dim + j;
  return {col, col + a.half(), qk, qk + a.half()};
}

// The (b, h, chunk c) of a per-chunk block, blockIdx.x = (b·H + h)·chunks + c, and its tokens.
struct ChunkBlock {
  int b, h, c;
  int64_t t0, t1;
};
template <class E>
__device__ __forceinline__ ChunkBlock chunk_block(const Args<E>& a) {
  const int chunks = a.chunks();
  const int64_t bh = blockIdx.x / chunks;
  ChunkBlock blk;
  blk.c = int(blockIdx.x % chunks);
  blk.h = int(bh % a.heads);
  blk.b = int(bh / a.heads);
  blk.t0 = int64_t(blk.c) * a.chunk;
  blk.t1 = blk.t0 + a.chunk < a.length ? blk.t0 + a.chunk : a.length;
  return blk;
}

// The (b, h, first row) of an attention block, blockIdx.x = (b·H + h)·tiles + tile.
struct TileBlock {
  int b, h;
  int64_t bh, first;
};
__device__ __forceinline__ TileBlock tile_block(int heads, int tiles) {
  const int64_t bh = blockIdx.x / tiles;
  return {int(bh / heads), int(bh % heads), bh, int64_t(blockIdx.x % tiles) * kTile};
}

// Channel j of the rotated, scaled query Q_t of the q/k group starting at column qk0.
template <class E>
__device__ __forceinline__ float rotated_query(const Args<E>& a, const Scratch& s, int b, int64_t t, int64_t qk0,
                                               int j) {
  const int half = a.half(), jp = j < half ? j : j - half;
  const E* q = a.q + (int64_t(b) * a.length + t) * a.ldq + qk0;
  const float x1 = to_float(q[jp]), x2 = to_float(q[jp + half]);
  const int64_t at = t / a.chunk * half + jp;
  const float cs = s.cos[at], sn = s.sin[at];
  return j < half ? a.scale * (x1 * cs - x2 * sn) : a.scale * (x2 * cs + x1 * sn);
}

// Rows [0, 32) x channels [j0, j0 + 32) of a tile in shared memory: value(i, j) for i < rows and
// j < head_dim, zero elsewhere.
template <class F>
__device__ __forceinline__ void load_tile(float* tile, int j0, int head_dim, int rows, F&& value) {
  for (int idx = int(threadIdx.x); idx < kTile * kTile; idx += kTileThreads) {
    const int i = idx / kTile, jj = idx % kTile, j = j0 + jj;
    tile[i * kPad + jj] = i < rows && j < head_dim ? value(i, j) : 0.0f;
  }
}

// The rows of queries [t0, t0 + 32) and chunk ends [e0, e0 + 32) of head h of sequence b that exist.
template <class E>
__device__ __forceinline__ int query_rows(const Args<E>& a, int64_t t0) {
  return a.length - t0 < kTile ? int(a.length - t0) : kTile;
}
template <class E>
__device__ __forceinline__ int end_rows(const Args<E>& a, int e0) {
  return a.ends() - e0 < kTile ? a.ends() - e0 : kTile;
}

template <class E>
__device__ __forceinline__ void load_queries(const Args<E>& a, const Scratch& s, int b, int h, int64_t t0, int j0,
                                             float* tile) {
  const int64_t qk0 = int64_t(h % a.groups) * a.head_dim;
  load_tile(tile, j0, a.head_dim, query_rows(a, t0),
            [&](int i, int j) { return rotated_query(a, s, b, t0 + i, qk0, j); });
}
template <class E>
__device__ __forceinline__ void load_dy(const Args<E>& a, int b, int h, int64_t t0, int j0, float* tile) {
  const E* dy = a.dy + (int64_t(b) * a.length + t0) * a.lddy + int64_t(h) * a.head_dim;
  load_tile(tile, j0, a.head_dim, query_rows(a, t0), [&](int i, int j) { return to_float(dy[i * a.lddy + j]); });
}
__device__ __forceinline__ void load_ends(const float* ends, int64_t first_row, int64_t width, int64_t col0, int rows,
                                          int head_dim, int j0, float* tile) {
  const float* base = ends + first_row * width + col0;
  load_tile(tile, j0, head_dim, rows, [&](int i, int j) { return base[i * width + j]; });
}

// This thread's entries (rows ty + 8r, column tx) of S = Q Kᵀ and U = dY Vᵀ for the queries
// [t0, t0 + 32) and the ends [e0, e0 + 32) of head h of sequence b (zero past T and the ends). Uses
// the first four tiles of `tiles`; starts with a barrier, so the caller's earlier reads of them are done.
template <class E>
__device__ void score_tile(const Args<E>& a, const Scratch& s, int b, int h, int64_t t0, int e0, float* tiles,
                           float (&S)[kRowsPerThread], float (&U)[kRowsPerThread]) {
  float* const Qs = tiles;
  float* const DYs = Qs + kTileFloats;
  float* const Ks = DYs + kTileFloats;
  float* const Vs = Ks + kTileFloats;
  const int tx = int(threadIdx.x) % kTile, ty = int(threadIdx.x) / kTile;
  const int64_t W = a.width(), col0 = int64_t(h) * a.head_dim, first_end = int64_t(b) * a.ends() + e0;
  const int ends = end_rows(a, e0);
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) S[r] = U[r] = 0.0f;
  for (int j0 = 0; j0 < a.head_dim; j0 += kTile) {
    __syncthreads();
    load_queries(a, s, b, h, t0, j0, Qs);
    load_dy(a, b, h, t0, j0, DYs);
    load_ends(s.end_k, first_end, W, col0, ends, a.head_dim, j0, Ks);
    load_ends(s.end_v, first_end, W, col0, ends, a.head_dim, j0, Vs);
    __syncthreads();
    for (int jj = 0; jj < kTile; ++jj) {
      const float key = Ks[tx * kPad + jj], value = Vs[tx * kPad + jj];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        S[r] += Qs[(ty + r * kRowStep) * kPad + jj] * key;
        U[r] += DYs[(ty + r * kRowStep) * kPad + jj] * value;
      }
    }
  }
}

// ---- 0. the rotation's table ----

__global__ void rope_table_kernel(Freqs f, int chunks, int half, float* cos_table, float* sin_table) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(chunks) * half) return;
  const float angle = float(i / half) * f.inv_freq[i % half];
  cos_table[i] = float(cos(double(angle)));
  sin_table[i] = float(sin(double(angle)));
}

// ---- 1. states and chunk ends ----

// Block per (b, h, chunk), a thread per channel pair (blockDim ≥ dh/2).
template <class E>
__global__ void states_kernel(Args<E> a, Scratch s) {
  const ChunkBlock blk = chunk_block(a);
  const int j = int(threadIdx.x);
  if (j >= a.half()) return;
  const Pair p = pair_of(a, blk.h, j);
  const int64_t W = a.width();
  const float bias1 = a.gate_bias[p.col1], bias2 = a.gate_bias[p.col2];
  float k1 = 0.0f, k2 = 0.0f, v1 = 0.0f, v2 = 0.0f;
  for (int64_t t = blk.t0; t < blk.t1; ++t) {
    const int64_t row = int64_t(blk.b) * a.length + t;
    float a1, om1, a2, om2;
    gate(to_float(a.g[row * a.ldg + p.col1]) + bias1, a1, om1);
    gate(to_float(a.g[row * a.ldg + p.col2]) + bias2, a2, om2);
    k1 = a1 * k1 + om1 * to_float(a.k[row * a.ldk + p.qk1]);
    k2 = a2 * k2 + om2 * to_float(a.k[row * a.ldk + p.qk2]);
    v1 = a1 * v1 + om1 * to_float(a.v[row * a.ldv + p.col1]);
    v2 = a2 * v2 + om2 * to_float(a.v[row * a.ldv + p.col2]);
    s.ks[row * W + p.col1] = k1;
    s.ks[row * W + p.col2] = k2;
    s.vs[row * W + p.col1] = v1;
    s.vs[row * W + p.col2] = v2;
  }
  if (blk.t1 - blk.t0 < a.chunk) return;  // the last chunk, unfinished
  const int64_t at = (int64_t(blk.b) * a.ends() + blk.c) * W, angle = int64_t(blk.c) * a.half() + j;
  const float cs = s.cos[angle], sn = s.sin[angle];
  s.end_k[at + p.col1] = k1 * cs - k2 * sn;
  s.end_k[at + p.col2] = k2 * cs + k1 * sn;
  s.end_v[at + p.col1] = v1;
  s.end_v[at + p.col2] = v2;
}

// ---- 2. per query: log-sum-exp, D, P_run, dS_run ----

template <class E>
__global__ void __launch_bounds__(kTileThreads) query_stats_kernel(Args<E> a, Scratch s) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* const tiles = reinterpret_cast<float*>(smem);
  float* const Ss = tiles + 4 * kTileFloats;
  float* const Us = Ss + kTileFloats;
  const TileBlock blk = tile_block(a.heads, a.query_tiles());
  const int tx = int(threadIdx.x) % kTile, ty = int(threadIdx.x) / kTile;
  const int rows = query_rows(a, blk.first);
  const int visible = int((blk.first + rows - 1) / a.chunk);  // ends seen by the tile's last query
  // Thread i < 32 owns query first + i: its running max, Σ e^(s - m) and Σ e^(s - m) u.
  const int own = int(threadIdx.x);
  const bool owner = own < rows;
  const int own_visible = owner ? int((blk.first + own) / a.chunk) : 0;
  float m = -INFINITY, l = 0.0f, w = 0.0f;
  for (int e0 = 0; e0 < visible; e0 += kTile) {
    float S[kRowsPerThread], U[kRowsPerThread];
    score_tile(a, s, blk.b, blk.h, blk.first, e0, tiles, S, U);
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      Ss[(ty + r * kRowStep) * kPad + tx] = S[r];
      Us[(ty + r * kRowStep) * kPad + tx] = U[r];
    }
    __syncthreads();
    if (owner) {
      const int n = own_visible - e0 < kTile ? own_visible - e0 : kTile;
      for (int e = 0; e < n; ++e) {
        const float score = Ss[own * kPad + e], m_new = fmaxf(m, score);
        const float old = expf(m - m_new), p = expf(score - m_new);
        l = l * old + p;
        w = w * old + p * Us[own * kPad + e];
        m = m_new;
      }
    }
  }
  if (!owner) return;
  const int64_t t = blk.first + own, row = int64_t(blk.b) * a.length + t, W = a.width();
  const int64_t col0 = int64_t(blk.h) * a.head_dim, qk0 = int64_t(blk.h % a.groups) * a.head_dim;
  const E* q = a.q + row * a.ldq + qk0;
  const E* dy = a.dy + row * a.lddy + col0;
  const float* key = s.ks + row * W + col0;
  const float* value = s.vs + row * W + col0;
  float qk = 0.0f, dyv = 0.0f;
  for (int j = 0; j < a.head_dim; ++j) {
    qk += to_float(q[j]) * key[j];
    dyv += to_float(dy[j]) * value[j];
  }
  const float s_run = qk * a.scale, m_all = fmaxf(m, s_run);
  const float old = expf(m - m_all), p = expf(s_run - m_all);
  const float l_all = l * old + p, D = (w * old + p * dyv) / l_all, p_run = p / l_all;
  const int64_t at = blk.bh * a.length + t;
  s.lse[at] = m_all + logf(l_all);
  s.delta[at] = D;
  s.p_run[at] = p_run;
  s.ds_run[at] = p_run * (dyv - D);
}

// P and dS of this thread's tile entries (rows first + ty + 8r, end e0 + tx): zero where the query
// does not see the end (or either does not exist).
template <class E>
__device__ __forceinline__ void probabilities(const Args<E>& a, const Scratch& s, int64_t bh, int64_t first, int e0,
                                              const float (&S)[kRowsPerThread], const float (&U)[kRowsPerThread],
                                              float (&P)[kRowsPerThread], float (&dS)[kRowsPerThread]) {
  const int tx = int(threadIdx.x) % kTile, ty = int(threadIdx.x) / kTile;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int64_t t = first + ty + r * kRowStep;
    P[r] = dS[r] = 0.0f;
    if (t < a.length && e0 + tx < t / a.chunk) {  // t / L ≤ ends: the end exists
      const int64_t at = bh * a.length + t;
      P[r] = expf(S[r] - s.lse[at]);
      dS[r] = P[r] * (U[r] - s.delta[at]);
    }
  }
}

// ---- 3. the chunk ends' gradients ----

template <class E>
__global__ void __launch_bounds__(kTileThreads) end_grads_kernel(Args<E> a, Scratch s) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* const Qs = reinterpret_cast<float*>(smem);
  float* const DYs = Qs + kTileFloats;
  float* const Ps = Qs + 4 * kTileFloats;
  float* const dSs = Ps + kTileFloats;
  const TileBlock blk = tile_block(a.heads, a.end_tiles());
  const int e0 = int(blk.first);
  const int tx = int(threadIdx.x) % kTile, ty = int(threadIdx.x) / kTile;
  const int64_t W = a.width(), col0 = int64_t(blk.h) * a.head_dim;
  const int ends = end_rows(a, e0);
  // This thread's entries of dK and dV: ends e0 + ty + 8r, channels j0 + tx of every slice j0.
  auto at = [&](int r, int j0) { return (int64_t(blk.b) * a.ends() + e0 + ty + r * kRowStep) * W + col0 + j0 + tx; };
  auto mine = [&](int r, int j0) { return ty + r * kRowStep < ends && j0 + tx < a.head_dim; };
  for (int j0 = 0; j0 < a.head_dim; j0 += kTile) {
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      if (!mine(r, j0)) continue;
      s.dend_k[at(r, j0)] = 0.0f;
      s.dend_v[at(r, j0)] = 0.0f;
    }
  }
  for (int64_t t0 = int64_t(e0 + 1) * a.chunk; t0 < a.length; t0 += kTile) {  // the queries that see end e0 on
    float S[kRowsPerThread], U[kRowsPerThread], P[kRowsPerThread], dS[kRowsPerThread];
    score_tile(a, s, blk.b, blk.h, t0, e0, Qs, S, U);
    probabilities(a, s, blk.bh, t0, e0, S, U, P, dS);
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      Ps[(ty + r * kRowStep) * kPad + tx] = P[r];
      dSs[(ty + r * kRowStep) * kPad + tx] = dS[r];
    }
    for (int j0 = 0; j0 < a.head_dim; j0 += kTile) {
      __syncthreads();  // P and dS written; the previous tiles read
      load_queries(a, s, blk.b, blk.h, t0, j0, Qs);
      load_dy(a, blk.b, blk.h, t0, j0, DYs);
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int e = ty + r * kRowStep;
        float dk = 0.0f, dv = 0.0f;
        for (int i = 0; i < kTile; ++i) {
          dk += dSs[i * kPad + e] * Qs[i * kPad + tx];
          dv += Ps[i * kPad + e] * DYs[i * kPad + tx];
        }
        if (!mine(r, j0)) continue;
        s.dend_k[at(r, j0)] += dk;
        s.dend_v[at(r, j0)] += dv;
      }
    }
  }
}

// ---- 4. the rotated queries' gradient over the ends ----

template <class E>
__global__ void __launch_bounds__(kTileThreads) query_grads_kernel(Args<E> a, Scratch s) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* const tiles = reinterpret_cast<float*>(smem);
  float* const Ks = tiles;  // free once score_tile is done
  float* const dSs = tiles + 4 * kTileFloats;
  const TileBlock blk = tile_block(a.heads, a.query_tiles());
  const int tx = int(threadIdx.x) % kTile, ty = int(threadIdx.x) / kTile;
  const int64_t W = a.width(), col0 = int64_t(blk.h) * a.head_dim;
  const int rows = query_rows(a, blk.first);
  const int visible = int((blk.first + rows - 1) / a.chunk);
  // This thread's entries of Σ dS K: queries first + ty + 8r, channels j0 + tx of every slice j0.
  auto at = [&](int r, int j0) {
    return (int64_t(blk.b) * a.length + blk.first + ty + r * kRowStep) * W + col0 + j0 + tx;
  };
  auto mine = [&](int r, int j0) { return ty + r * kRowStep < rows && j0 + tx < a.head_dim; };
  for (int j0 = 0; j0 < a.head_dim; j0 += kTile) {
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r)
      if (mine(r, j0)) s.dq_heads[at(r, j0)] = 0.0f;
  }
  for (int e0 = 0; e0 < visible; e0 += kTile) {
    float S[kRowsPerThread], U[kRowsPerThread], P[kRowsPerThread], dS[kRowsPerThread];
    score_tile(a, s, blk.b, blk.h, blk.first, e0, tiles, S, U);
    probabilities(a, s, blk.bh, blk.first, e0, S, U, P, dS);
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) dSs[(ty + r * kRowStep) * kPad + tx] = dS[r];
    const int ends = end_rows(a, e0);
    for (int j0 = 0; j0 < a.head_dim; j0 += kTile) {
      __syncthreads();  // dS written; the previous tiles read
      load_ends(s.end_k, int64_t(blk.b) * a.ends() + e0, W, col0, ends, a.head_dim, j0, Ks);
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int i = ty + r * kRowStep;
        float acc = 0.0f;
        for (int e = 0; e < kTile; ++e) acc += dSs[i * kPad + e] * Ks[e * kPad + tx];
        if (mine(r, j0)) s.dq_heads[at(r, j0)] += acc;
      }
    }
  }
}

// ---- 5. back through the recurrence ----

// Blocks as states_kernel. Per token, last to first: dq of the head (λ R_cᵀ Σ dS K + λ dS_run k̃),
// the state gradients (direct: λ dS_run q, P_run dy, and at a chunk end R_cᵀ dK, dV; plus the carry
// a_{t+1} G_{t+1}), then dv = (1 − a) G^v, dk = (1 − a) G^k,
// dg = (G^v (ṽ_{t-1} − v) + G^k (k̃_{t-1} − k)) a (1 − a).
template <class E>
__global__ void recurrence_kernel(Args<E> a, Scratch s) {
  const ChunkBlock blk = chunk_block(a);
  const int j = int(threadIdx.x);
  if (j >= a.half()) return;
  const Pair p = pair_of(a, blk.h, j);
  const int64_t W = a.width(), bh = int64_t(blk.b) * a.heads + blk.h;
  const float bias1 = a.gate_bias[p.col1], bias2 = a.gate_bias[p.col2];
  const int64_t angle = int64_t(blk.c) * a.half() + j;
  const float cs = s.cos[angle], sn = s.sin[angle], scale = a.scale;
  const bool finished = blk.t1 - blk.t0 == a.chunk;
  float carry_k1 = 0.0f, carry_k2 = 0.0f, carry_v1 = 0.0f, carry_v2 = 0.0f, dbias1 = 0.0f, dbias2 = 0.0f;
  for (int64_t t = blk.t1 - 1; t >= blk.t0; --t) {
    const int64_t row = int64_t(blk.b) * a.length + t;
    const float ds_run = s.ds_run[bh * a.length + t], p_run = s.p_run[bh * a.length + t];
    if (a.dq) {
      float* dq = s.dq_heads + row * W;
      const float x1 = dq[p.col1], x2 = dq[p.col2];
      dq[p.col1] = scale * (x1 * cs + x2 * sn) + scale * ds_run * s.ks[row * W + p.col1];
      dq[p.col2] = scale * (x2 * cs - x1 * sn) + scale * ds_run * s.ks[row * W + p.col2];
    }
    if (!s.dend_k) continue;  // nothing of the recurrence wanted
    float gk1 = scale * ds_run * to_float(a.q[row * a.ldq + p.qk1]);
    float gk2 = scale * ds_run * to_float(a.q[row * a.ldq + p.qk2]);
    float gv1 = p_run * to_float(a.dy[row * a.lddy + p.col1]);
    float gv2 = p_run * to_float(a.dy[row * a.lddy + p.col2]);
    if (finished && t == blk.t1 - 1) {  // the chunk's end, seen by later chunks
      const int64_t at = (int64_t(blk.b) * a.ends() + blk.c) * W;
      const float y1 = s.dend_k[at + p.col1], y2 = s.dend_k[at + p.col2];
      gk1 += y1 * cs + y2 * sn;
      gk2 += y2 * cs - y1 * sn;
      gv1 += s.dend_v[at + p.col1];
      gv2 += s.dend_v[at + p.col2];
    }
    float a1, om1, a2, om2;
    gate(to_float(a.g[row * a.ldg + p.col1]) + bias1, a1, om1);
    gate(to_float(a.g[row * a.ldg + p.col2]) + bias2, a2, om2);
    const float tk1 = gk1 + carry_k1, tk2 = gk2 + carry_k2, tv1 = gv1 + carry_v1, tv2 = gv2 + carry_v2;
    float kprev1 = 0.0f, kprev2 = 0.0f, vprev1 = 0.0f, vprev2 = 0.0f;  // the states before t (zero at the chunk's start)
    if (t > blk.t0) {
      const float* kprev = s.ks + (row - 1) * W;
      const float* vprev = s.vs + (row - 1) * W;
      kprev1 = kprev[p.col1], kprev2 = kprev[p.col2], vprev1 = vprev[p.col1], vprev2 = vprev[p.col2];
    }
    const float draw1 = (tv1 * (vprev1 - to_float(a.v[row * a.ldv + p.col1])) +
                         tk1 * (kprev1 - to_float(a.k[row * a.ldk + p.qk1]))) * a1 * om1;
    const float draw2 = (tv2 * (vprev2 - to_float(a.v[row * a.ldv + p.col2])) +
                         tk2 * (kprev2 - to_float(a.k[row * a.ldk + p.qk2]))) * a2 * om2;
    if (s.dk_heads) {
      s.dk_heads[row * W + p.col1] = om1 * tk1;
      s.dk_heads[row * W + p.col2] = om2 * tk2;
    }
    if (a.dv) {
      a.dv[row * a.lddv + p.col1] = from_float<E>(om1 * tv1);
      a.dv[row * a.lddv + p.col2] = from_float<E>(om2 * tv2);
    }
    if (a.dg) {
      a.dg[row * a.lddg + p.col1] = from_float<E>(draw1);
      a.dg[row * a.lddg + p.col2] = from_float<E>(draw2);
    }
    dbias1 += draw1;
    dbias2 += draw2;
    carry_k1 = a1 * tk1;
    carry_k2 = a2 * tk2;
    carry_v1 = a1 * tv1;
    carry_v2 = a2 * tv2;
  }
  if (!s.dbias_part) return;
  float* part = s.dbias_part + (int64_t(blk.b) * a.chunks() + blk.c) * W;
  part[p.col1] = dbias1;
  part[p.col2] = dbias2;
}

// ---- 6. sums over the heads of a group ----

// A thread per element of dq / dk [B·T, G·dh]: head h = group + m·G adds in the order of m.
template <class E>
__global__ void group_sums_kernel(Args<E> a, Scratch s) {
  const int64_t qk_width = int64_t(a.groups) * a.head_dim, W = a.width();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(a.batch) * a.length * qk_width) return;
  const int64_t row = i / qk_width, col = i % qk_width;
  const int per_group = a.heads / a.groups;
  if (a.dq) {
    float sum = 0.0f;
    for (int m = 0; m < per_group; ++m) sum += s.dq_heads[row * W + m * qk_width + col];
    a.dq[row * a.lddq + col] = from_float<E>(sum);
  }
  if (a.dk) {
    float sum = 0.0f;
    for (int m = 0; m < per_group; ++m) sum += s.dk_heads[row * W + m * qk_width + col];
    a.dk[row * a.lddk + col] = from_float<E>(sum);
  }
}

}  // namespace ssm::ops::cuda::rat_backward_kernels
