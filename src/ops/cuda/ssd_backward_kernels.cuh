// The kernels of ops::cuda::ssd_backward (Mamba-2 SSD, chunked), launched from ssd_backward_launch.cuh.
// No engine headers: dev/cuda/ssd_backward_host_check.cpp runs them on the CPU.
//
// The CPU op's algorithm (ops/cpu/ssd_backward.cpp) in chunks of Q = 64 tokens (the forward's), per
// (batch b, head h, chunk; group g = h / (H/G)), a_l the in-chunk inclusive cumsum of dt·A, S the
// state entering the chunk, dS the gradient at the state leaving it, E[l,s] = exp(a_l − a_s) (s <= l),
// M = C Bᵀ ⊙ E ⊙ dt_s, dM = dY Xᵀ, w_s = exp(a_last − a_s) dt_s. Eight steps in six launches (2 with 5
// and 6 with 7 share one, see "The launches" below):
//   1. chunk_values_kernel  (warp per b, h, chunk): dt after bias, softplus and clamp, and a_l, as the
//      forward computes them (ssd_kernels::scan_chunk).
//   2-4. state_walk_block (sums), segment_pass_kernel, state_walk_kernel (walk): S entering and dS
//      leaving every chunk, and dstate0, from what each chunk alone adds to the state, Σ_s w_s X_s B_sᵀ,
//      and to the state gradient, Σ_l exp(a_l) dY_lᵀ C_l, walked in segments of chunks (see below).
//   5. group_block          (b, g, chunk): d(C Bᵀ) = Σ_h dM ⊙ E ⊙ dt_s over the group's heads (and C Bᵀ
//      when head_kernel runs).
//   6. head_mma_block       (b, h, chunk; P <= 64, N <= 128): dX = Mᵀ dY + D dY + diag(w) B dSᵀ; the
//      gradient of every a_l and dt_s; their reverse cumsum into ddt (through clamp and softplus); the
//      chunk's dA, dD and ddt_bias terms into partials. head_kernel, the same on the CUDA cores over
//      F32 tiles (tile_mac.cuh), for larger P or N.
//   7. dbc_block            (b, g, chunk, 64 columns of N): dC = Σ_h diag(exp(a)) dY S + d(C Bᵀ) B,
//      dB = Σ_h diag(w) X dS + d(C Bᵀ)ᵀ C, the heads of the group in order.
//   8. param_kernel         (block per parameter and head): the partials summed over (batch, chunk) in a
//      fixed order, added to dA, dD, ddt_bias.
// dY Xᵀ is computed twice (kernels 5 and 6), so that d(C Bᵀ) needs no per-head scratch.
// Deterministic: every sum has a fixed order (no atomics). Arithmetic in F32 from F32 or BF16
// activations. The products of kernels 2, 4, 5, 6 and 7 run on the tensor cores (mma.sync, the forward's
// WarpMma): BF16 operands with F32 accumulators for BF16 activations (F32 intermediates — M, the
// states, d(C Bᵀ), the decays folded into operands — rounded to BF16 as operands, as mamba_ssm
// does), 3xTF32 for F32 activations (~1e-6 relative).
#pragma once
#include "ssd_backward_mma.cuh"
#include "ssd_kernels.cuh"
#include "tile_mac.cuh"

namespace ssm::ops::cuda::ssd_backward_kernels {

using ssd_kernels::Args;  // the forward's inputs (y unused)
using ssd_kernels::kChunk;

// Shared tiles (tile_mac.cuh): 64 columns, a slice of P or N or a chunk's tokens; 256 threads as 16 x 16,
// thread (ty, tx) holding rows ty + 16 i, columns tx + 16 j.
using namespace tile_mac;
static_assert(kChunk == kTile, "a chunk's tokens fill one tile");

// The gradients: activation gradients of type T (null: not asked for), the rest F32.
template <class T>
struct Grads {
  const T* dy;
  int64_t lddy;
  T *dx, *ddt, *dB, *dC;
  int64_t lddx, ldddt, lddB, lddC;
  float *dA, *dD, *ddt_bias;  // [H], accumulated
  float* dstate0;             // [B,H,P,N], written
  const float *state0, *dfinal;  // [B,H,P,N] inputs; null when absent
};

// The scratch of one call (carve_scratch; its size in make_plan). The per-chunk states and state
// gradients are of the activations' type: BF16 for BF16 activations (half the memory and traffic;
// the products round them to BF16 anyway), F32 for F32 ones; every sum over chunks runs in F32.
template <class T>
struct Scratch {
  float* dt;       // [B*H, T]: dt after bias, softplus and clamp
  float* acum;     // [B*H, T]: a, the in-chunk inclusive cumsum of dt A
  T* states;       // [B*H, chunks, P*N]: the state entering each chunk (null when no chunk has one)
  T* dstates;      // [B*H, chunks, P*N]: the gradient at the state leaving each chunk (null when none)
  float* cb;       // [B*G, chunks, Q*Q]: C Bᵀ, for head_kernel (null for head_mma_block)
  float* dcb;      // [B*G, chunks, Q*Q]: d(C Bᵀ), summed over the group's heads
  float* parts;    // [3, B*chunks, H]: the dA, dD, ddt_bias terms of each (batch, chunk)
  float* bounds;     // [2, B*H, segments, P*N]: per walk, each segment's own sum, then its entering state
  float* seg_decay;  // [2, B*H, segments]: per walk, each segment's decay Π exp(a_last,c)
};

__host__ __device__ inline int chunk_count(int length) { return (length + kChunk - 1) / kChunk; }

__device__ __forceinline__ float softplus_grad(float v) { return v > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-v)); }

// Where a chunk is: its tokens [t0, t0 + rows) of sequence b, as rows row0 + [0, rows) of the inputs.
struct ChunkAt {
  int c, t0, rows;
  int64_t row0;
};
template <class T>
__device__ __forceinline__ ChunkAt chunk_at(const Args<T>& a, int b, int c) {
  const int t0 = c * kChunk;
  return {c, t0, min(kChunk, a.length - t0), int64_t(b) * a.length + t0};
}

// The chunk's dt and a of head (b, h) into shared vectors (0 past the chunk's rows).
template <class T>
__device__ __forceinline__ void load_chunk_values(const Args<T>& a, const Scratch<T>& s, int64_t bh, const ChunkAt& ch,
                                                  float* dt, float* acum) {
  for (int i = int(threadIdx.x); i < kChunk; i += kThreads) {
    const bool in = i < ch.rows;
    dt[i] = in ? s.dt[bh * a.length + ch.t0 + i] : 0.0f;
    acum[i] = in ? s.acum[bh * a.length + ch.t0 + i] : 0.0f;
  }
}

// ---------------------------------------------------------------------------------------------------
// 1. Warp per (b, h, chunk), 8 warps a block: dt and a into s.dt, s.acum.

template <class T>
__global__ void __launch_bounds__(kThreads) chunk_values_kernel(Args<T> a, Scratch<T> s) {
  extern __shared__ __align__(16) unsigned char smem[];
  ssd_kernels::ChunkScan* const scans = reinterpret_cast<ssd_kernels::ChunkScan*>(smem);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, chunks = chunk_count(a.length);
  const int64_t item = int64_t(blockIdx.x) * (kThreads / 32) + warp;  // (b * H + h) * chunks + c
  if (item >= int64_t(a.batch) * a.heads * chunks) return;
  const int c = int(item % chunks);
  const int64_t bh = item / chunks;
  const int h = int(bh % a.heads), b = int(bh / a.heads);
  const ssd_kernels::BlockCoords bc{b, h, h / (a.heads / a.groups), 0, bh};
  float raw[2];
  ssd_kernels::load_raw_dt(a, bc, c, raw);
  const int rows = ssd_kernels::chunk_rows(a.length, c);
  ssd_kernels::ChunkScan& sc = scans[warp];
  ssd_kernels::scan_chunk(sc, raw, rows, a, h);
  for (int i = 2 * lane; i < 2 * lane + 2 && i < rows; ++i) {  // the lane's own two tokens
    s.dt[bh * a.length + c * kChunk + i] = sc.dt[i];
    s.acum[bh * a.length + c * kChunk + i] = sc.acum[i];
  }
}

constexpr size_t chunk_values_smem() { return (kThreads / 32) * sizeof(ssd_kernels::ChunkScan); }

// ---------------------------------------------------------------------------------------------------
// 2-4. The state entering every chunk (s.states) and the state gradient leaving it (s.dstates), walked
// in segments of seg.chunks chunks so that no pass reads and writes every chunk's state twice. Walk
// d = 0 (s.states) runs the chunks forward: S_0 = state0 or 0, S_{c+1} = exp(a_last,c) S_c + own_c with
// own_c = Σ_s w_s X_s B_sᵀ; walk d = 1 (s.dstates) runs them backward: dS_last = dfinal or 0,
// dS_{c-1} = exp(a_last,c) dS_c + own_c with own_c = Σ_l exp(a_l) dY_lᵀ C_l, and dstate0 =
// exp(a_last,0) dS_0 + own_0. Three steps:
//   2. state_walk_block<T, false>, block per (d, segment, 64 x 64 tile of P x N, b, h): the state the
//      segment alone leaves (from zero, in walk order) into s.bounds and its decay Π exp(a_last,c) into
//      s.seg_decay; not for the segment each walk reaches last (nothing needs its sum).
//   3. segment_pass_kernel, thread per (d, b, h, state element): s.bounds from the segments' own sums
//      to the state entering each segment in walk order (F32).
//   4. state_walk_kernel, the same blocks from s.bounds: every chunk's state (of type T) into
//      s.states / s.dstates; the block of d = 1 that walks chunk 0 last writes dstate0.
// The own states are products on the tensor cores (the forward's update_state): warp w computes rows p
// 16 (w / 2) + [0, 16), columns n 32 (w % 2) + [0, 32) of the tile; the running state stays in F32
// registers in the accumulators' layout. The next chunk's tiles are copied in (cp.async) while the
// current one is computed; the states go out through a shared tile in 16-byte pieces.

struct Segments {
  int chunks;     // per segment (at most kMaxSegmentChunks), the last may have fewer
  int count;      // per (b, h)
  int first_dir;  // the first walk run: 1 when the forward kept the states (s.states given), else 0
  int pass_vec;   // state elements per thread of the segment pass: 4 (16-byte accesses) where aligned, else 1
};
constexpr int kMaxSegmentChunks = 32;

// Shared memory: two buffers of the chunk's [kChunk][64] tiles (X or dY, B or C), the segment's scale
// vectors (w_s or exp(a_l)) and decays exp(a_last) in walk order, then (writing walk only) the [64][64]
// tile of the state going out.
template <class T>
__host__ __device__ constexpr size_t state_walk_vectors_offset() { return 4 * size_t(kChunk) * 64 * sizeof(T); }
constexpr size_t kStateWalkVectorBytes = kMaxSegmentChunks * (kChunk + 1) * sizeof(float);
template <class T, bool kWrite>
constexpr size_t state_walk_smem() {
  return state_walk_vectors_offset<T>() + kStateWalkVectorBytes + (kWrite ? size_t(kChunk) * 64 * sizeof(T) : 0);
}

template <class T, bool kWrite>
__device__ __forceinline__ void state_walk_block(const Args<T>& a, const Grads<T>& g, const Scratch<T>& s,
                                                 const Segments& seg, unsigned block) {
  using Lay = Tile64<T>;
  using M = WarpMma<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* const tiles = reinterpret_cast<T*>(smem);  // [buffer][left, right][kChunk * 64]
  float* const scale = reinterpret_cast<float*>(smem + state_walk_vectors_offset<T>());  // [i][kChunk]
  float* const decay = scale + kMaxSegmentChunks * kChunk;                                // [i]
  T* const stage = reinterpret_cast<T*>(smem + state_walk_vectors_offset<T>() + kStateWalkVectorBytes);

  const int P = a.head_dim, N = a.state_dim, chunks = chunk_count(a.length);
  const int p_tiles = (P + kTile - 1) / kTile, n_tiles = (N + kTile - 1) / kTile;
  const int64_t BH = int64_t(a.batch) * a.heads, PN = int64_t(P) * N;
  int64_t rest = block;  // heads fastest: the heads of a group read the same B and C rows together
  const int64_t bh = rest % BH;
  rest /= BH;
  const int tile = int(rest % (p_tiles * n_tiles));
  rest /= p_tiles * n_tiles;
  const int segment = int(rest % seg.count), dir = seg.first_dir + int(rest / seg.count);
  T* const out = dir == 0 ? s.states : s.dstates;
  const int walked_last = dir == 0 ? seg.count - 1 : 0;
  if (!out || (!kWrite && segment == walked_last)) return;

  const int h = int(bh % a.heads), b = int(bh / a.heads), grp = h / (a.heads / a.groups);
  const int p0 = (tile / n_tiles) * kTile, n0 = (tile % n_tiles) * kTile;
  const int pw = min(kTile, P - p0), nw = min(kTile, N - n0);
  const int first = segment * seg.chunks, count = min(seg.chunks, chunks - first);
  auto chunk_of = [&](int i) { return dir == 0 ? first + i : first + count - 1 - i; };
  const T* const left = dir == 0 ? a.x + int64_t(h) * P + p0 : g.dy + int64_t(h) * P + p0;
  const int64_t ldl = dir == 0 ? a.ldx : g.lddy;
  const T* const right = (dir == 0 ? a.B : a.C) + int64_t(grp) * N + n0;
  const int64_t ldr = dir == 0 ? a.ldB : a.ldC;
  const int tid = int(threadIdx.x), warp = tid >> 5, m0 = 16 * (warp >> 1), w0 = 32 * (warp & 1);

  // Chunk chunk_of(i)'s tiles into buffer buf (cp.async, committed).
  auto prefetch = [&](int i, int buf) {
    const ChunkAt ch = chunk_at(a, b, chunk_of(i));
    T* const dst = tiles + buf * 2 * kChunk * 64;
    load_chunk_tile<T, Lay>(dst, left + ch.row0 * ldl, ldl, ch.rows, pw);
    load_chunk_tile<T, Lay>(dst + kChunk * 64, right + ch.row0 * ldr, ldr, ch.rows, nw);
    ptx::cp_async_commit();
  };
  // The segment's vectors at once (their loads in flight together, not one chunk's each step).
  for (int e = tid; e < count * kChunk; e += kThreads) {
    const int i = e / kChunk, r = e % kChunk;
    const ChunkAt ch = chunk_at(a, b, chunk_of(i));
    const float* const acum = s.acum + bh * a.length + ch.t0;
    const float alast = acum[ch.rows - 1];
    float v = 0.0f;
    if (r < ch.rows) v = dir == 0 ? expf(alast - acum[r]) * s.dt[bh * a.length + ch.t0 + r] : expf(acum[r]);
    scale[e] = v;
    if (r == 0) decay[i] = expf(alast);
  }

  // The running state (F32, the accumulators' layout): from the segment's entering state, or zero.
  float run[4][4] = {};
  const int64_t bound = ((int64_t(dir) * BH + bh) * seg.count + segment) * PN;
  if (kWrite)
    for_fragment(m0, w0, [&](int j, int i, int p, int n) {
      if (p < pw && n < nw) run[j][i] = s.bounds[bound + int64_t(p0 + p) * N + n0 + n];
    });
  float segment_decay = 1.0f;
  prefetch(0, 0);
  for (int i = 0; i < count; ++i) {
    const int buf = i & 1;
    if (kWrite)  // the state at chunk_of(i), out below (the stage was read before the last barrier)
      for_fragment(m0, w0, [&](int j, int k, int p, int n) {
        if (!(k & 1)) ssd_kernels::store_pair(stage + Lay::at(p, n), run[j][k], run[j][k + 1]);
      });
    if (i + 1 < count) {
      prefetch(i + 1, buf ^ 1);
      ptx::cp_async_wait_all_but_last();
    } else {
      ptx::cp_async_wait_all();
    }
    __syncthreads();  // buffer buf and the stage complete
    if (kWrite) {
      T* const slot = out + (bh * chunks + chunk_of(i)) * PN + int64_t(p0) * N + n0;
      constexpr int kVec = Lay::kVec, kPieces = 64 / kVec;
      if (N % kVec == 0) {  // 16-byte pieces (the scratch part starts 16-byte aligned)
        for (int e = tid; e < kChunk * kPieces; e += kThreads) {
          const int r = e / kPieces, c = (e % kPieces) * kVec;
          if (r < pw && c < nw)
            *reinterpret_cast<float4*>(slot + int64_t(r) * N + c) =
                *reinterpret_cast<const float4*>(stage + Lay::at(r, c));
        }
      } else {
        for (int e = tid; e < kChunk * 64; e += kThreads) {
          const int r = e / 64, c = e % 64;
          if (r < pw && c < nw) slot[int64_t(r) * N + c] = stage[Lay::at(r, c)];
        }
      }
    }
    const T* const lt = tiles + buf * 2 * kChunk * 64;
    const float* const w = scale + i * kChunk;
    float own[4][4] = {};
    warp_product<T>(
        own, 0, kChunk, [&](auto& f, int k0) { M::load_a_t_scaled(f, lt, Lay{}, m0, k0, w); },
        [&](auto& f, int k0, int j) { M::load_b_t(f, lt + kChunk * 64, Lay{}, k0, w0 + 8 * j); }, no_skip);
    const float d = decay[i];
    segment_decay *= d;
    for_fragment(m0, w0, [&](int j, int k, int, int) { run[j][k] = d * run[j][k] + own[j][k]; });
    __syncthreads();  // buffer buf and the stage read
  }
  if (!kWrite) {
    for_fragment(m0, w0, [&](int j, int i, int p, int n) {
      if (p < pw && n < nw) s.bounds[bound + int64_t(p0 + p) * N + n0 + n] = run[j][i];
    });
    if (tile == 0 && tid == 0) s.seg_decay[(int64_t(dir) * BH + bh) * seg.count + segment] = segment_decay;
  } else if (dir == 1 && segment == 0 && g.dstate0) {
    for_fragment(m0, w0, [&](int j, int i, int p, int n) {
      if (p < pw && n < nw) g.dstate0[bh * PN + int64_t(p0 + p) * N + n0 + n] = run[j][i];
    });
  }
}

// 3. Thread per (d, b, h, kVec state elements), walking the segments in walk order: each segment's bound
// is read (its sum) and overwritten with the value entering it. The loads of the next kAhead segments
// are issued before the current ones' updates and stores, so that a thread's loads are always in flight
// (one batch at a time, it waited for each batch: 32 us at 16K tokens for ~67 MB, ncu).
template <int kVec, class T>
__device__ __forceinline__ void segment_pass(const Args<T>& a, const Grads<T>& g, const Scratch<T>& s,
                                             const Segments& seg) {
  const int64_t PN = int64_t(a.head_dim) * a.state_dim, BH = int64_t(a.batch) * a.heads, per_dir = BH * PN / kVec;
  const int64_t index = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (index >= (2 - seg.first_dir) * per_dir) return;
  const int dir = seg.first_dir + int(index / per_dir);
  const int64_t bh = index % per_dir / (PN / kVec), e = index % (PN / kVec) * kVec;
  if (!(dir == 0 ? s.states : s.dstates)) return;
  auto load = [](const float* from, float(&to)[kVec]) {
    if constexpr (kVec == 4) {
      const float4 v = *reinterpret_cast<const float4*>(from);
      to[0] = v.x, to[1] = v.y, to[2] = v.z, to[3] = v.w;
    } else {
      to[0] = *from;
    }
  };
  const float* const start = dir == 0 ? g.state0 : g.dfinal;
  float V[kVec] = {};
  if (start) load(start + bh * PN + e, V);
  float* const bounds = s.bounds + (int64_t(dir) * BH + bh) * seg.count * PN + e;
  const float* const decays = s.seg_decay + (int64_t(dir) * BH + bh) * seg.count;
  auto segment_at = [&](int k) { return dir == 0 ? k : seg.count - 1 - k; };
  constexpr int kAhead = 8;
  float sum[kAhead][kVec], decay[kAhead], next_sum[kAhead][kVec], next_decay[kAhead];
  auto load_batch = [&](int k0) {
#pragma unroll
    for (int k = 0; k < kAhead; ++k) {
      const bool has_sum = k0 + k + 1 < seg.count;  // the segment walked last has none
      next_decay[k] = has_sum ? decays[segment_at(k0 + k)] : 0.0f;
      if (has_sum) {
        load(bounds + int64_t(segment_at(k0 + k)) * PN, next_sum[k]);
      } else {
#pragma unroll
        for (int v = 0; v < kVec; ++v) next_sum[k][v] = 0.0f;
      }
    }
  };
  load_batch(0);
  for (int k0 = 0; k0 < seg.count; k0 += kAhead) {
#pragma unroll
    for (int k = 0; k < kAhead; ++k) {
      decay[k] = next_decay[k];
#pragma unroll
      for (int v = 0; v < kVec; ++v) sum[k][v] = next_sum[k][v];
    }
    if (k0 + kAhead < seg.count) load_batch(k0 + kAhead);
#pragma unroll
    for (int k = 0; k < kAhead; ++k) {
      if (k0 + k >= seg.count) break;
      float* const bound = bounds + int64_t(segment_at(k0 + k)) * PN;
      if constexpr (kVec == 4)
        *reinterpret_cast<float4*>(bound) = make_float4(V[0], V[1], V[2], V[3]);
      else
        *bound = V[0];
#pragma unroll
      for (int v = 0; v < kVec; ++v) V[v] = decay[k] * V[v] + sum[k][v];
    }
  }
}
template <class T>
__global__ void __launch_bounds__(kThreads) segment_pass_kernel(Args<T> a, Grads<T> g, Scratch<T> s, Segments seg) {
  if (seg.pass_vec == 4)
    segment_pass<4>(a, g, s, seg);
  else
    segment_pass<1>(a, g, s, seg);
}
// ---------------------------------------------------------------------------------------------------
// 5. Block per (b, g, chunk): C Bᵀ into s.cb (when head_kernel needs it); d(C Bᵀ) = Σ_h (dY_h X_hᵀ) ⊙
// E_h ⊙ dt_h (lower triangle, the group's heads in order) into s.dcb. On the tensor cores over
// [64][64] tiles of T, the blocks above the diagonal left out; warp w computes rows 16 (w / 2) + [0, 16),
// columns 32 (w % 2) + [0, 32).

template <class T>
constexpr size_t group_smem() { return 4 * size_t(kChunk) * 64 * sizeof(T); }

template <class T>
__device__ __forceinline__ void group_block(const Args<T>& a, const Grads<T>& g, const Scratch<T>& s, unsigned block) {
  using Lay = Tile64<T>;
  using M = WarpMma<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  // Two buffers of [l][k] and [s][k] tiles: C and B (buffer 0), then dY and X of each (head, tile of
  // P), the next one's copied in while the current one is used.
  T* const left = reinterpret_cast<T*>(smem);
  T* const right = left + kChunk * 64;

  const int P = a.head_dim, N = a.state_dim, chunks = chunk_count(a.length), per_group = a.heads / a.groups;
  const int c = int(block % unsigned(chunks));
  const int bg = int(block / unsigned(chunks)), grp = bg % a.groups, b = bg / a.groups;
  const ChunkAt ch = chunk_at(a, b, c);
  const int rows = ch.rows, warp = int(threadIdx.x) >> 5, m0 = 16 * (warp >> 1), w0 = 32 * (warp & 1);
  const int64_t slot = (int64_t(bg) * chunks + c) * kChunk * kChunk;
  auto above_diagonal = [&](int j) { return w0 + 8 * j > m0 + 15; };
  // acc += L Rᵀ over the `width` columns of the chunk's rows of L and R.
  auto gram = [&](float(&acc)[4][4], const T* L, int64_t ldl, const T* R, int64_t ldr, int width) {
    for (int k0 = 0; k0 < width; k0 += 64) {
      load_chunk_tile<T, Lay>(left, L + k0, ldl, rows, min(64, width - k0));
      load_chunk_tile<T, Lay>(right, R + k0, ldr, rows, min(64, width - k0));
      ptx::cp_async_commit();
      ptx::cp_async_wait_all();
      __syncthreads();
      warp_product<T>(
          acc, 0, 64, [&](auto& f, int k) { M::load_a(f, left, Lay{}, m0, k); },
          [&](auto& f, int k, int j) { M::load_b(f, right, Lay{}, k, w0 + 8 * j); }, above_diagonal);
      __syncthreads();  // the tiles are read
    }
  };
  auto store = [&](float* dst, const float(&acc)[4][4]) {
    for_fragment(m0, w0, [&](int j, int i, int l, int t) { dst[slot + l * kChunk + t] = acc[j][i]; });
  };

  if (s.cb) {
    float cb[4][4] = {};
    gram(cb, a.C + ch.row0 * a.ldC + int64_t(grp) * N, a.ldC, a.B + ch.row0 * a.ldB + int64_t(grp) * N, a.ldB, N);
    store(s.cb, cb);
  }
  if (!g.dB && !g.dC) return;  // d(C Bᵀ) feeds only dB and dC

  // Item i: head grp * per_group + i / p_tiles, columns k0 = 64 (i % p_tiles) of P.
  const int p_tiles = (P + 63) / 64, items = per_group * p_tiles, lane = int(threadIdx.x) & 31;
  auto prefetch = [&](int item, int buf) {
    const int h = grp * per_group + item / p_tiles, k0 = (item % p_tiles) * 64, width = min(64, P - k0);
    T* const t = left + buf * 2 * kChunk * 64;
    load_chunk_tile<T, Lay>(t, g.dy + ch.row0 * g.lddy + int64_t(h) * P + k0, g.lddy, rows, width);
    load_chunk_tile<T, Lay>(t + kChunk * 64, a.x + ch.row0 * a.ldx + int64_t(h) * P + k0, a.ldx, rows, width);
    ptx::cp_async_commit();
  };
  float dcb[4][4] = {}, dm[4][4] = {};
  prefetch(0, 0);
  for (int item = 0; item < items; ++item) {
    const int buf = item & 1;
    // The head's a at the thread's rows l and a, dt at its columns t, loaded here so that they arrive
    // during the product.
    const int64_t bh = int64_t(b) * a.heads + grp * per_group + item / p_tiles;
    const float* const acum = s.acum + bh * a.length + ch.t0;
    const float* const dt = s.dt + bh * a.length + ch.t0;
    float a_l[2], a_t[4][2], dt_t[4][2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int l = m0 + (lane >> 2) + 8 * half;
      a_l[half] = l < rows ? acum[l] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int t = w0 + 8 * j + 2 * (lane & 3) + e;
        a_t[j][e] = t < rows ? acum[t] : 0.0f;
        dt_t[j][e] = t < rows ? dt[t] : 0.0f;
      }
    if (item + 1 < items) {
      prefetch(item + 1, buf ^ 1);
      ptx::cp_async_wait_all_but_last();
    } else {
      ptx::cp_async_wait_all();
    }
    __syncthreads();  // buffer buf complete
    const T* const L = left + buf * 2 * kChunk * 64;
    warp_product<T>(
        dm, 0, 64, [&](auto& f, int k) { M::load_a(f, L, Lay{}, m0, k); },
        [&](auto& f, int k, int j) { M::load_b(f, L + kChunk * 64, Lay{}, k, w0 + 8 * j); }, above_diagonal);
    __syncthreads();  // buffer buf read
    if (item % p_tiles != p_tiles - 1) continue;
    // The head's dM complete: its term, dM ⊙ E ⊙ dt_s.
    for_fragment(m0, w0, [&](int j, int i, int l, int t) {
      if (t <= l && l < rows) dcb[j][i] += dm[j][i] * expf(a_l[i >> 1] - a_t[j][i & 1]) * dt_t[j][i & 1];
      dm[j][i] = 0.0f;
    });
  }
  store(s.dcb, dcb);
}

// ---------------------------------------------------------------------------------------------------
// 6. Block per (b, h, chunk): dx; the gradients of a and dt, reverse-summed into ddt; the partials.

template <class T>
__global__ void __launch_bounds__(kThreads) head_kernel(Args<T> a, Grads<T> g, Scratch<T> s) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* const dt = reinterpret_cast<float*>(smem);
  float* const acum = dt + kChunk;
  float* const decay_in = acum + kChunk;   // exp(a_l)
  float* const decay_out = decay_in + kChunk;  // exp(a_last − a_s)
  float* const weight = decay_out + kChunk;  // w_s = exp(a_last − a_s) dt_s
  float* const dt_grad = weight + kChunk;    // d softplus-and-clamp / d raw dt
  float* const da = dt_grad + kChunk;        // gradient of a_l
  float* const ddt = da + kChunk;            // gradient of dt_s (but through a)
  float* const dw = ddt + kChunk;            // X_s · (B dSᵀ)_s, then the raw dt's gradient
  float* const partial = dw + kChunk;        // [2][kThreads]: each thread's <dS, S> and dD terms
  float* const Ms = partial + 2 * kThreads;  // [l][s] M, later dM ⊙ M
  float* const CBs = Ms + kTileFloats;       // [l][s] C Bᵀ, later dM ⊙ E ⊙ C Bᵀ
  float* const Xs = CBs + kTileFloats;       // [s][p]
  float* const dYs = Xs + kTileFloats;       // [l][p]
  float* const Bn = dYs + kTileFloats;       // [s][n]
  float* const Cn = Bn + kTileFloats;        // [l][n]
  float* const dSs = Cn + kTileFloats;       // [p][n]
  float* const Ss = dSs + kTileFloats;       // [p][n]

  const int P = a.head_dim, N = a.state_dim, chunks = chunk_count(a.length);
  // Heads fastest: the heads of a group read the chunk's B and C rows together (from L2, not once a head).
  const unsigned heads_total = unsigned(a.batch) * unsigned(a.heads);
  const int c = int(blockIdx.x / heads_total);
  const int64_t bh = blockIdx.x % heads_total;
  const int h = int(bh % a.heads), b = int(bh / a.heads), grp = h / (a.heads / a.groups);
  const ChunkAt ch = chunk_at(a, b, c);
  const int L = ch.rows, tid = int(threadIdx.x);
  const int64_t PN = int64_t(P) * N, state_slot = (bh * chunks + c) * PN;
  const bool has_prev = s.states != nullptr && (c > 0 || g.state0 != nullptr);
  const bool has_ds = s.dstates != nullptr && (c + 1 < chunks || g.dfinal != nullptr);
  const T* const S = has_prev ? s.states + state_slot : nullptr;
  const T* const dS = has_ds ? s.dstates + state_slot : nullptr;
  const float bias = a.dt_bias ? a.dt_bias[h] : 0.0f, D = a.D ? a.D[h] : 0.0f;

  load_chunk_values(a, s, bh, ch, dt, acum);
  __syncthreads();
  const float alast = acum[L - 1];
  for (int i = tid; i < kChunk; i += kThreads) {
    const bool in = i < L;
    decay_in[i] = in ? expf(acum[i]) : 0.0f;
    decay_out[i] = in ? expf(alast - acum[i]) : 0.0f;
    weight[i] = decay_out[i] * dt[i];
    float grad = 0.0f;
    if (in) {
      const float raw = to_float(a.dt[(ch.row0 + i) * a.lddt + h]) + bias;
      const float sp = ssd_kernels::softplus(raw);
      grad = sp >= a.dt_min && sp <= a.dt_max ? softplus_grad(raw) : 0.0f;
    }
    dt_grad[i] = grad;
    da[i] = ddt[i] = dw[i] = 0.0f;
  }
  {
    const float* const cb = s.cb + (int64_t(b * a.groups + grp) * chunks + c) * kChunk * kChunk;
    for (int i = tid; i < kChunk * kChunk; i += kThreads) {
      const int l = i / kChunk, t = i % kChunk;
      const float v = cb[i];
      CBs[l * kLd + t] = v;
      Ms[l * kLd + t] = t <= l && l < L ? v * expf(acum[l] - acum[t]) * dt[t] : 0.0f;
    }
  }
  // The state term of a_last: exp(a_last) <dS, S>, summed per thread, then over threads in order.
  float dot = 0.0f;
  if (has_ds && has_prev)
    for (int64_t e = tid; e < PN; e += kThreads) dot += to_float(dS[e]) * to_float(S[e]);
  partial[tid] = dot;
  __syncthreads();

  float dm[4][4] = {};
  float dD_sum = 0.0f;
  for (int p0 = 0; p0 < P; p0 += kTile) {
    const int pw = min(kTile, P - p0);
    const T* const x = a.x + ch.row0 * a.ldx + int64_t(h) * P + p0;
    const T* const dy = g.dy + ch.row0 * g.lddy + int64_t(h) * P + p0;
    fill_tile(Xs, L, pw, [&](int r, int col) { return to_float(x[r * a.ldx + col]); });
    fill_tile(dYs, L, pw, [&](int r, int col) { return to_float(dy[r * g.lddy + col]); });
    __syncthreads();
    for (int i = tid; i < kTile * kTile; i += kThreads) {
      const int e = (i / kTile) * kLd + i % kTile;
      dD_sum += dYs[e] * Xs[e];
    }
    mac(dm, [&](int l, int k) { return dYs[l * kLd + k]; }, [&](int k, int t) { return Xs[t * kLd + k]; });
    // dX = Mᵀ dY + D dY (+ diag(w) B dSᵀ below): rows s, columns p.
    float dx[4][4] = {};
    mac(dx, [&](int t, int k) { return Ms[k * kLd + t]; }, [&](int k, int p) { return dYs[k * kLd + p]; });
    for_piece([&](int i, int j, int t, int p) { dx[i][j] += D * dYs[t * kLd + p]; });
    // B dSᵀ (rows s) and C Sᵀ (rows l), columns p, over the tiles of N.
    float bds[4][4] = {}, cs[4][4] = {};
    if (has_ds || has_prev) {
      for (int n0 = 0; n0 < N; n0 += kTile) {
        const int nw = min(kTile, N - n0);
        if (has_ds) {
          const T* const B = a.B + ch.row0 * a.ldB + int64_t(grp) * N + n0;
          fill_tile(Bn, L, nw, [&](int r, int col) { return to_float(B[r * a.ldB + col]); });
          fill_tile(dSs, pw, nw, [&](int r, int col) { return to_float(dS[int64_t(p0 + r) * N + n0 + col]); });
        }
        if (has_prev) {
          const T* const C = a.C + ch.row0 * a.ldC + int64_t(grp) * N + n0;
          fill_tile(Cn, L, nw, [&](int r, int col) { return to_float(C[r * a.ldC + col]); });
          fill_tile(Ss, pw, nw, [&](int r, int col) { return to_float(S[int64_t(p0 + r) * N + n0 + col]); });
        }
        __syncthreads();
        if (has_ds)
          mac(bds, [&](int t, int k) { return Bn[t * kLd + k]; }, [&](int k, int p) { return dSs[p * kLd + k]; });
        if (has_prev)
          mac(cs, [&](int l, int k) { return Cn[l * kLd + k]; }, [&](int k, int p) { return Ss[p * kLd + k]; });
        __syncthreads();
      }
    }
    // Per row: dw_s += X_s · (B dSᵀ)_s and da_l += exp(a_l) dY_l · (C Sᵀ)_l (each row owned by the
    // 16 threads of one ty, summed in a fixed order; tx 0 adds).
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = thread_row() + 16 * i;
      float xb = 0.0f, ycs = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int p = thread_col() + 16 * j;
        xb += Xs[r * kLd + p] * bds[i][j];
        ycs += dYs[r * kLd + p] * cs[i][j];
      }
      xb = row_sum(xb);
      ycs = row_sum(ycs);
      if (thread_col() == 0) {
        dw[r] += xb;
        da[r] += decay_in[r] * ycs;
      }
    }
    if (g.dx) {
      T* const out = g.dx + ch.row0 * g.lddx + int64_t(h) * P + p0;
      for_piece([&](int i, int j, int t, int p) {
        if (t < L && p < pw) out[t * g.lddx + p] = from_float<T>(dx[i][j] + weight[t] * bds[i][j]);
      });
    }
    __syncthreads();  // Xs and dYs are read; the next tile may overwrite them
  }


  // From dM: da_l += Σ_s dM⊙M [l,s] − Σ_s dM⊙M [s,l];  ddt_s += Σ_l dM⊙E⊙C Bᵀ [l,s]. Each thread
  // replaces its own elements of Ms and CBs by the products, then row l / column s is summed in order.
  for_piece([&](int i, int j, int l, int t) {
    const bool in = t <= l && l < L;
    const float m = Ms[l * kLd + t], cb = CBs[l * kLd + t];
    Ms[l * kLd + t] = in ? dm[i][j] * m : 0.0f;
    CBs[l * kLd + t] = in ? dm[i][j] * expf(acum[l] - acum[t]) * cb : 0.0f;
  });
  partial[kThreads + tid] = dD_sum;
  __syncthreads();
  if (tid < kChunk) {
    float row = 0.0f, column = 0.0f, column_dt = 0.0f;
    for (int k = 0; k < kChunk; ++k) {
      row += Ms[tid * kLd + k];
      column += Ms[k * kLd + tid];
      column_dt += CBs[k * kLd + tid];
    }
    da[tid] += row - column;
    ddt[tid] += column_dt;
  }
  __syncthreads();

  // One thread: the state terms at s and at a_last, then the reverse cumsum of da (a = cumsum(dt A))
  // into ddt and dA, through the clamp and softplus into the raw dt (into dw), and the partials.
  if (tid == 0) {
    if (has_ds) {
      float da_last = 0.0f;
      for (int t = 0; t < L; ++t) {
        const float v = dw[t] * weight[t];
        ddt[t] += dw[t] * decay_out[t];
        da_last += v;
        da[t] -= v;
      }
      if (has_prev) {
        float dot_sum = 0.0f;
        for (int i = 0; i < kThreads; ++i) dot_sum += partial[i];
        da_last += expf(alast) * dot_sum;
      }
      da[L - 1] += da_last;
    }
    const float A = a.A[h];
    float r = 0.0f, dA_sum = 0.0f, bias_sum = 0.0f, dD_total = 0.0f;
    for (int l = L - 1; l >= 0; --l) {
      r += da[l];
      const float raw_grad = (ddt[l] + A * r) * dt_grad[l];
      dA_sum += dt[l] * r;
      bias_sum += raw_grad;
      dw[l] = raw_grad;
    }
    for (int i = 0; i < kThreads; ++i) dD_total += partial[kThreads + i];
    const int64_t items = int64_t(a.batch) * chunks, item = int64_t(b) * chunks + c;
    s.parts[item * a.heads + h] = dA_sum;
    s.parts[(items + item) * a.heads + h] = a.D ? dD_total : 0.0f;
    s.parts[(2 * items + item) * a.heads + h] = bias_sum;
  }
  __syncthreads();
  if (g.ddt)
    for (int i = tid; i < L; i += kThreads) g.ddt[(ch.row0 + i) * g.ldddt + h] = from_float<T>(dw[i]);
}

constexpr size_t head_smem() { return (9 * kChunk + 2 * kThreads + 8 * size_t(kTileFloats)) * sizeof(float); }

// ---------------------------------------------------------------------------------------------------
// 6 (v2). head_kernel for P <= 64 and N <= kN (64 or 128) with the products on the tensor cores: block per
// (b, h, chunk), warp w computing rows 16 (w / 2) + [0, 16), columns 32 (w % 2) + [0, 32) of each
// 64 x 64 result. C Bᵀ is recomputed here (no scratch); the row and column sums go through per-warp
// partials added in a fixed order, the reverse cumsum through one warp's shuffles.

// The per-token vectors and the per-warp partial sums of head_mma_block.
struct HeadVectors {
  float dt[kChunk], acum[kChunk];
  float decay_in[kChunk];   // exp(a_l)
  float decay_out[kChunk];  // exp(a_last − a_s)
  float weight[kChunk];     // w_s = exp(a_last − a_s) dt_s
  float dt_grad[kChunk];    // d softplus-and-clamp / d raw dt
  float row_mm[2][kChunk];  // Σ_s dM⊙M [l, s], over each half of s
  float col_mm[4][kChunk];  // Σ_l dM⊙M [l, s], over each quarter of l
  float col_cb[4][kChunk];  // Σ_l dM⊙E⊙C Bᵀ [l, s], over each quarter of l
  float row_xb[2][kChunk];  // X_s · (B dSᵀ)_s, over each half of p
  float row_ycs[2][kChunk];  // dY_l · (C Sᵀ)_l, over each half of p
  float warp_dot[kThreads / 32], warp_dD[kThreads / 32];  // <dS, S> and Σ dY ⊙ X
};

template <class T, int kN>
constexpr size_t head_mma_smem() {
  using L = ssd_kernels::Tiles<T, kN>;
  return (2 * size_t(L::kX) + L::kM + 2 * L::kBC + 2 * L::kS) * sizeof(T) + sizeof(HeadVectors);
}

// Two BF16 blocks a multiprocessor (at most 128 registers a thread, ~93 KB of shared memory each); one F32.
template <class T, int kN>
__device__ __forceinline__ void head_mma_block(const Args<T>& a, const Grads<T>& g, const Scratch<T>& s,
                                               unsigned block) {
  using L = ssd_kernels::Tiles<T, kN>;
  using M = WarpMma<T>;
  using XL = typename L::X;
  using BCL = typename L::BC;
  using SL = typename L::S;
  using ML = typename L::M;
  extern __shared__ __align__(16) unsigned char smem[];
  T* const Xs = reinterpret_cast<T*>(smem);  // [s][p]
  T* const dYs = Xs + L::kX;                 // [l][p]
  T* const Ms = dYs + L::kX;                 // [l][s]: M
  T* const Bs = Ms + L::kM;                  // [s][n]
  T* const Cs = Bs + L::kBC;                 // [l][n]
  T* const Ss = Cs + L::kBC;                 // [p][n]: S
  T* const dSs = Ss + L::kS;                 // [p][n]: dS
  HeadVectors& v = *reinterpret_cast<HeadVectors*>(dSs + L::kS);

  const int P = a.head_dim, N = a.state_dim, chunks = chunk_count(a.length);
  // Heads fastest: the heads of a group read the chunk's B and C rows together (from L2, not once a head).
  const unsigned heads_total = unsigned(a.batch) * unsigned(a.heads);
  const int c = int(block / heads_total);
  const int64_t bh = block % heads_total;
  const int h = int(bh % a.heads), b = int(bh / a.heads), grp = h / (a.heads / a.groups);
  const ChunkAt ch = chunk_at(a, b, c);
  const int rows = ch.rows, tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const int64_t PN = int64_t(P) * N, state_slot = (bh * chunks + c) * PN;
  const bool has_prev = s.states != nullptr && (c > 0 || g.state0 != nullptr);
  const bool has_ds = s.dstates != nullptr && (c + 1 < chunks || g.dfinal != nullptr);
  const T* const S = has_prev ? s.states + state_slot : nullptr;
  const T* const dS = has_ds ? s.dstates + state_slot : nullptr;

  load_chunk_tile<T, XL>(Xs, a.x + ch.row0 * a.ldx + int64_t(h) * P, a.ldx, rows, P);
  load_chunk_tile<T, XL>(dYs, g.dy + ch.row0 * g.lddy + int64_t(h) * P, g.lddy, rows, P);
  load_chunk_tile<T, BCL>(Bs, a.B + ch.row0 * a.ldB + int64_t(grp) * N, a.ldB, rows, N);
  load_chunk_tile<T, BCL>(Cs, a.C + ch.row0 * a.ldC + int64_t(grp) * N, a.ldC, rows, N);
  ptx::cp_async_commit();
  // The states in a second group: they arrive while C Bᵀ and dY Xᵀ are computed.
  auto load_state = [&](T* tile, const T* state) {
    if (state) load_chunk_tile<T, SL>(tile, state, N, P, N);
    else ssd_kernels::zero_shared(tile, L::kS * sizeof(T));
  };
  load_state(Ss, S);
  load_state(dSs, dS);
  ptx::cp_async_commit();
  {
    const float bias = a.dt_bias ? a.dt_bias[h] : 0.0f;
    const float* const acum = s.acum + bh * a.length + ch.t0;
    const float alast = acum[rows - 1];
    for (int i = tid; i < kChunk; i += kThreads) {
      const bool in = i < rows;
      const float dt = in ? s.dt[bh * a.length + ch.t0 + i] : 0.0f, ai = in ? acum[i] : 0.0f;
      float grad = 0.0f;
      if (in) {
        const float raw = to_float(a.dt[(ch.row0 + i) * a.lddt + h]) + bias;
        const float sp = ssd_kernels::softplus(raw);
        grad = sp >= a.dt_min && sp <= a.dt_max ? softplus_grad(raw) : 0.0f;
      }
      v.dt[i] = dt;
      v.acum[i] = ai;
      v.decay_in[i] = in ? expf(ai) : 0.0f;
      v.decay_out[i] = in ? expf(alast - ai) : 0.0f;
      v.weight[i] = in ? expf(alast - ai) * dt : 0.0f;
      v.dt_grad[i] = grad;
    }
  }
  ptx::cp_async_wait_all_but_last();
  __syncthreads();  // the chunk's tiles and the vectors in

  const int m0 = 16 * (warp >> 1), n0 = 32 * (warp & 1);
  auto above_diagonal = [&](int nt) { return n0 + 8 * nt > m0 + 15; };
  // C Bᵀ and dM = dY Xᵀ on and below the diagonal; M = C Bᵀ ⊙ E ⊙ dt_s into Ms (T; zero above the
  // diagonal and past the chunk); the row and column sums of dM⊙M and dM⊙E⊙C Bᵀ.
  {
    float cb[4][4] = {}, dm[4][4] = {};
    warp_product<T>(
        cb, 0, kN, [&](auto& f, int k0) { M::load_a(f, Cs, BCL{}, m0, k0); },
        [&](auto& f, int k0, int nt) { M::load_b(f, Bs, BCL{}, k0, n0 + 8 * nt); }, above_diagonal);
    warp_product<T>(
        dm, 0, kHeadDimTile, [&](auto& f, int k0) { M::load_a(f, dYs, XL{}, m0, k0); },
        [&](auto& f, int k0, int nt) { M::load_b(f, Xs, XL{}, k0, n0 + 8 * nt); }, above_diagonal);
    float row[2] = {}, col_mm[4][2] = {}, col_cb[4][2] = {}, m[4][4];
    for_fragment(m0, n0, [&](int nt, int i, int l, int t) {
      const bool in = t <= l && l < rows;
      const float e = in ? ssd_kernels::decay_exp<T>(v.acum[l] - v.acum[t]) : 0.0f;
      m[nt][i] = cb[nt][i] * e * v.dt[t];
      const float mm = dm[nt][i] * m[nt][i];
      row[i >> 1] += mm;
      col_mm[nt][i & 1] += mm;
      col_cb[nt][i & 1] += dm[nt][i] * e * cb[nt][i];
    });
    for_fragment(m0, n0, [&](int nt, int i, int l, int t) {
      if (!(i & 1)) ssd_kernels::store_pair(Ms + ML::at(l, t), m[nt][i], m[nt][i + 1]);
    });
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float r = fragment_row_sum(row[half]);
      if ((lane & 3) == 0) v.row_mm[warp & 1][m0 + (lane >> 2) + 8 * half] = r;
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float cm = fragment_column_sum(col_mm[nt][j]), cc = fragment_column_sum(col_cb[nt][j]);
        if ((lane >> 2) == 0) {
          v.col_mm[warp >> 1][n0 + 8 * nt + 2 * lane + j] = cm;
          v.col_cb[warp >> 1][n0 + 8 * nt + 2 * lane + j] = cc;
        }
      }
  }
  ptx::cp_async_wait_all();
  __syncthreads();  // Ms and the states complete
  if (S && dS) {  // <dS, S> for the gradient of a_last
    float dot = 0.0f;
    constexpr int kVec = 16 / int(sizeof(T));  // in 16-byte pieces (an element at a time was 5% of the kernel)
    // Read as an aggregate of T (not as uint4 then T*: that breaks strict aliasing, and g++ in the host
    // check reads garbage for it).
    struct alignas(16) Piece {
      T v[kVec];
    };
    for (int i = tid * kVec; i < L::kS; i += kThreads * kVec) {
      const Piece s_piece = *reinterpret_cast<const Piece*>(Ss + i);
      const Piece ds_piece = *reinterpret_cast<const Piece*>(dSs + i);
#pragma unroll
      for (int j = 0; j < kVec; ++j) dot += to_float(s_piece.v[j]) * to_float(ds_piece.v[j]);
    }
    dot = warp_sum(dot);
    if (lane == 0) v.warp_dot[warp] = dot;
  }

  // dX = Mᵀ dY + D dY + diag(w) B dSᵀ (rows s, columns p), C Sᵀ (rows l); the row sums X_s · (B dSᵀ)_s
  // and dY_l · (C Sᵀ)_l, and Σ dY ⊙ X.
  {
    float bds[4][4] = {}, cs[4][4] = {}, dx[4][4] = {};
    if (S)
      warp_product<T>(
          cs, 0, kN, [&](auto& f, int k0) { M::load_a(f, Cs, BCL{}, m0, k0); },
          [&](auto& f, int k0, int nt) { M::load_b(f, Ss, SL{}, k0, n0 + 8 * nt); }, no_skip);
    if (dS)
      warp_product<T>(
          bds, 0, kN, [&](auto& f, int k0) { M::load_a(f, Bs, BCL{}, m0, k0); },
          [&](auto& f, int k0, int nt) { M::load_b(f, dSs, SL{}, k0, n0 + 8 * nt); }, no_skip);
    warp_product<T>(  // M is zero above the diagonal: rows s take l >= m0 only
        dx, m0, kChunk, [&](auto& f, int k0) { M::load_a_t(f, Ms, ML{}, m0, k0); },
        [&](auto& f, int k0, int nt) { M::load_b_t(f, dYs, XL{}, k0, n0 + 8 * nt); }, no_skip);
    const float D = a.D ? a.D[h] : 0.0f;
    float xb[2] = {}, ycs[2] = {}, dD = 0.0f;
    for_fragment(m0, n0, [&](int nt, int i, int r, int p) {
      const float x = to_float(Xs[XL::at(r, p)]), y = to_float(dYs[XL::at(r, p)]);
      xb[i >> 1] += x * bds[nt][i];
      ycs[i >> 1] += y * cs[nt][i];
      dD += x * y;
      dx[nt][i] += D * y + v.weight[r] * bds[nt][i];
    });
    if (g.dx) {
      T* const out = g.dx + ch.row0 * g.lddx + int64_t(h) * P;
      for_fragment(m0, n0, [&](int nt, int i, int r, int p) {
        if (r < rows && p < P) out[r * g.lddx + p] = from_float<T>(dx[nt][i]);
      });
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float x = fragment_row_sum(xb[half]), y = fragment_row_sum(ycs[half]);
      if ((lane & 3) == 0) {
        v.row_xb[warp & 1][m0 + (lane >> 2) + 8 * half] = x;
        v.row_ycs[warp & 1][m0 + (lane >> 2) + 8 * half] = y;
      }
    }
    dD = warp_sum(dD);
    if (lane == 0) v.warp_dD[warp] = dD;
  }
  __syncthreads();  // the partials complete
  if (warp != 0) return;

  // Warp 0, lane holding tokens 2 lane and 2 lane + 1: the gradients of a_l and dt_s, the state terms at
  // s and at a_last, the reverse cumsum of da (a = cumsum(dt A)) into ddt and dA, through the clamp and
  // softplus into the raw dt, and the partials.
  float da[2], ddt[2], last = 0.0f;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int i = 2 * lane + j;
    da[j] = v.row_mm[0][i] + v.row_mm[1][i] - (v.col_mm[0][i] + v.col_mm[1][i] + v.col_mm[2][i] + v.col_mm[3][i]) +
            v.decay_in[i] * (v.row_ycs[0][i] + v.row_ycs[1][i]);
    ddt[j] = v.col_cb[0][i] + v.col_cb[1][i] + v.col_cb[2][i] + v.col_cb[3][i];
    if (has_ds) {
      const float dw = v.row_xb[0][i] + v.row_xb[1][i], term = dw * v.weight[i];
      ddt[j] += dw * v.decay_out[i];
      da[j] -= term;
      last += term;
    }
  }
  if (has_ds) {
    float da_last = warp_sum(last);
    if (has_prev) {
      float dot_sum = 0.0f;
      for (int w = 0; w < kThreads / 32; ++w) dot_sum += v.warp_dot[w];  // written when S and dS exist
      da_last += expf(v.acum[rows - 1]) * dot_sum;
    }
    if (2 * lane == rows - 1) da[0] += da_last;
    if (2 * lane + 1 == rows - 1) da[1] += da_last;
  }
  // r_l = Σ_{l' >= l} da_l': the pair sums scanned from the last lane down.
  const float pair = da[0] + da[1];
  float run = pair;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const float other = __shfl_sync(0xffffffffu, run, min(lane + offset, 31));
    if (lane + offset < 32) run += other;
  }
  float after = __shfl_sync(0xffffffffu, run, min(lane + 1, 31));
  if (lane == 31) after = 0.0f;
  const float A = a.A[h];
  float r[2], raw_grad[2];
  r[1] = after + da[1];
  r[0] = r[1] + da[0];
  float dA_part = 0.0f, bias_part = 0.0f;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int i = 2 * lane + j;
    raw_grad[j] = (ddt[j] + A * r[j]) * v.dt_grad[i];
    dA_part += v.dt[i] * r[j];
    bias_part += raw_grad[j];
    if (g.ddt && i < rows) g.ddt[(ch.row0 + i) * g.ldddt + h] = from_float<T>(raw_grad[j]);
  }
  const float dA_sum = warp_sum(dA_part), bias_sum = warp_sum(bias_part);
  if (lane == 0) {
    float dD_total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) dD_total += v.warp_dD[w];
    const int64_t items = int64_t(a.batch) * chunks, item = int64_t(b) * chunks + c;
    s.parts[item * a.heads + h] = dA_sum;
    s.parts[(items + item) * a.heads + h] = a.D ? dD_total : 0.0f;
    s.parts[(2 * items + item) * a.heads + h] = bias_sum;
  }
}

// ---------------------------------------------------------------------------------------------------
// 7. Block per (b, g, chunk, 64 columns of N): dC = Σ_h diag(exp(a)) dY S + d(C Bᵀ) B and
// dB = Σ_h diag(w) X dS + d(C Bᵀ)ᵀ C, the group's heads in order (each output when asked for), on the
// tensor cores over [64][64] tiles of T; warp w computes rows 16 (w / 2) + [0, 16), columns
// 32 (w % 2) + [0, 32) of the block's 64 x 64 pieces of dC and dB.

template <class T>
constexpr size_t dbc_smem() { return 8 * size_t(kChunk) * 64 * sizeof(T); }

template <class T>
__device__ __forceinline__ void dbc_block(const Args<T>& a, const Grads<T>& g, const Scratch<T>& s, unsigned block) {
  using Lay = Tile64<T>;
  using M = WarpMma<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  // Two buffers of four tiles: [l][p] dY, [s][p] X, [p][n] S, [p][n] dS of one (head, tile of P), the
  // next one's copied in while the current one is used; then [l][s] d(C Bᵀ), [s][n] B, [l][n] C.
  T* const tiles = reinterpret_cast<T*>(smem);
  constexpr int kTileElems = kChunk * 64;
  T* const left = tiles;                // d(C Bᵀ)
  T* const right = tiles + kTileElems;  // B
  T* const Sp = right + kTileElems;     // C

  const int P = a.head_dim, N = a.state_dim, chunks = chunk_count(a.length), per_group = a.heads / a.groups;
  const int n_tiles = (N + kTile - 1) / kTile;
  const int nt = int(block % unsigned(n_tiles));
  const int c = int(block / unsigned(n_tiles) % unsigned(chunks));
  const int bg = int(block / unsigned(n_tiles) / unsigned(chunks)), grp = bg % a.groups, b = bg / a.groups;
  const ChunkAt ch = chunk_at(a, b, c);
  const int rows = ch.rows, warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int n0 = nt * kTile, nw = min(kTile, N - n0), m0 = 16 * (warp >> 1), w0 = 32 * (warp & 1);
  const int64_t PN = int64_t(P) * N;
  const bool has_prev = g.dC && s.states != nullptr && (c > 0 || g.state0 != nullptr);
  const bool has_ds = g.dB && s.dstates != nullptr && (c + 1 < chunks || g.dfinal != nullptr);

  float dc[4][4] = {}, db[4][4] = {};  // rows l (dC) or s (dB), columns n
  const int p_tiles = (P + kTile - 1) / kTile, items = has_prev || has_ds ? per_group * p_tiles : 0;
  // Item i: head grp * per_group + i / p_tiles, columns p0 = kTile (i % p_tiles) of P.
  auto prefetch = [&](int item, int buf) {
    const int h = grp * per_group + item / p_tiles, p0 = (item % p_tiles) * kTile, pw = min(kTile, P - p0);
    const int64_t state_at = ((int64_t(b) * a.heads + h) * chunks + c) * PN + n0 + int64_t(p0) * N;
    T* const t = tiles + buf * 4 * kTileElems;
    if (has_prev) {
      load_chunk_tile<T, Lay>(t, g.dy + ch.row0 * g.lddy + int64_t(h) * P + p0, g.lddy, rows, pw);
      load_chunk_tile<T, Lay>(t + 2 * kTileElems, s.states + state_at, N, pw, nw);
    }
    if (has_ds) {
      load_chunk_tile<T, Lay>(t + kTileElems, a.x + ch.row0 * a.ldx + int64_t(h) * P + p0, a.ldx, rows, pw);
      load_chunk_tile<T, Lay>(t + 3 * kTileElems, s.dstates + state_at, N, pw, nw);
    }
    ptx::cp_async_commit();
  };
  float ys[4][4] = {}, xds[4][4] = {};  // dY S and X dS of the current head
  if (items > 0) prefetch(0, 0);
  for (int item = 0; item < items; ++item) {
    const int buf = item & 1;
    // The head's a and dt at the thread's rows r, loaded here so that they arrive during the products.
    const int64_t bh = int64_t(b) * a.heads + grp * per_group + item / p_tiles;
    const float* const acum = s.acum + bh * a.length + ch.t0;
    const float* const dt = s.dt + bh * a.length + ch.t0;
    const float alast = acum[rows - 1];
    float a_r[2], dt_r[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = m0 + (lane >> 2) + 8 * half;
      a_r[half] = r < rows ? acum[r] : 0.0f;
      dt_r[half] = r < rows ? dt[r] : 0.0f;
    }
    if (item + 1 < items) {
      prefetch(item + 1, buf ^ 1);
      ptx::cp_async_wait_all_but_last();
    } else {
      ptx::cp_async_wait_all();
    }
    __syncthreads();  // buffer buf complete
    const T* const t = tiles + buf * 4 * kTileElems;
    if (has_prev)
      warp_product<T>(
          ys, 0, kTile, [&](auto& f, int k0) { M::load_a(f, t, Lay{}, m0, k0); },
          [&](auto& f, int k0, int j) { M::load_b_t(f, t + 2 * kTileElems, Lay{}, k0, w0 + 8 * j); }, no_skip);
    if (has_ds)
      warp_product<T>(
          xds, 0, kTile, [&](auto& f, int k0) { M::load_a(f, t + kTileElems, Lay{}, m0, k0); },
          [&](auto& f, int k0, int j) { M::load_b_t(f, t + 3 * kTileElems, Lay{}, k0, w0 + 8 * j); }, no_skip);
    __syncthreads();  // buffer buf read
    if (item % p_tiles != p_tiles - 1) continue;
    // The head's last tile of P: its terms, scaled by exp(a_r) and w_r = exp(a_last − a_r) dt_r of the
    // thread's rows r (0 past the chunk).
    float decay_in[2], weight[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const bool in = m0 + (lane >> 2) + 8 * half < rows;
      decay_in[half] = in ? ssd_kernels::decay_exp<T>(a_r[half]) : 0.0f;
      weight[half] = in ? ssd_kernels::decay_exp<T>(alast - a_r[half]) * dt_r[half] : 0.0f;
    }
    for_fragment(m0, w0, [&](int j, int i, int, int) {
      dc[j][i] += decay_in[i >> 1] * ys[j][i];
      db[j][i] += weight[i >> 1] * xds[j][i];
      ys[j][i] = xds[j][i] = 0.0f;
    });
  }

  // The group's term through C Bᵀ (d(C Bᵀ) is zero above the diagonal).
  const float* const dcb = s.dcb + (int64_t(bg) * chunks + c) * kChunk * kChunk;
  load_f32_tile<T, Lay>(left, dcb, kChunk, kChunk, kChunk);
  load_chunk_tile<T, Lay>(right, a.B + ch.row0 * a.ldB + int64_t(grp) * N + n0, a.ldB, rows, nw);
  load_chunk_tile<T, Lay>(Sp, a.C + ch.row0 * a.ldC + int64_t(grp) * N + n0, a.ldC, rows, nw);
  ptx::cp_async_commit();
  ptx::cp_async_wait_all();
  __syncthreads();
  auto store = [&](T* out, int64_t ld, const float (&acc)[4][4]) {
    for_fragment(m0, w0, [&](int j, int i, int r, int n) {
      if (r < rows && n < nw) out[r * ld + n] = from_float<T>(acc[j][i]);
    });
  };
  if (g.dC) {
    warp_product<T>(  // rows l take s <= l only
        dc, 0, m0 + 16, [&](auto& f, int k0) { M::load_a(f, left, Lay{}, m0, k0); },
        [&](auto& f, int k0, int j) { M::load_b_t(f, right, Lay{}, k0, w0 + 8 * j); }, no_skip);
    store(g.dC + ch.row0 * g.lddC + int64_t(grp) * N + n0, g.lddC, dc);
  }
  if (g.dB) {
    warp_product<T>(  // rows s take l >= s only
        db, m0, kChunk, [&](auto& f, int k0) { M::load_a_t(f, left, Lay{}, m0, k0); },
        [&](auto& f, int k0, int j) { M::load_b_t(f, Sp, Lay{}, k0, w0 + 8 * j); }, no_skip);
    store(g.dB + ch.row0 * g.lddB + int64_t(grp) * N + n0, g.lddB, db);
  }
}

// ---------------------------------------------------------------------------------------------------
// The launches. Kernels 2 and 5 need only kernel 1's values, and 6 and 7 only what 4 and 5 leave, so
// each pair is one launch: the first kernel's blocks, then the second's. At short lengths one kernel
// alone leaves most of the GPU empty (4K tokens at H 32: kernel 5 has 64 blocks, kernel 7 128, each
// as long as a whole wave of the other), and the other's blocks fill it. Either count may be 0.

// 5 (group_blocks of them), then 2 (the rest).
template <class T>
constexpr size_t group_and_sums_smem() {
  return group_smem<T>() > state_walk_smem<T, false>() ? group_smem<T>() : state_walk_smem<T, false>();
}
template <class T>
__global__ void __launch_bounds__(kThreads, 2)
    group_and_sums_kernel(Args<T> a, Grads<T> g, Scratch<T> s, Segments seg, unsigned group_blocks) {
  if (blockIdx.x < group_blocks)
    group_block(a, g, s, blockIdx.x);
  else
    state_walk_block<T, false>(a, g, s, seg, blockIdx.x - group_blocks);
}

// 4.
template <class T>
__global__ void __launch_bounds__(kThreads, 2) state_walk_kernel(Args<T> a, Grads<T> g, Scratch<T> s, Segments seg) {
  state_walk_block<T, true>(a, g, s, seg, blockIdx.x);
}

// 7 (dbc_blocks of them), then 6 on the tensor cores (the rest).
template <class T, int kN>
constexpr size_t dbc_and_head_smem() {
  return dbc_smem<T>() > head_mma_smem<T, kN>() ? dbc_smem<T>() : head_mma_smem<T, kN>();
}
template <class T, int kN>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 2 ? 2 : 1)
    dbc_and_head_kernel(Args<T> a, Grads<T> g, Scratch<T> s, unsigned dbc_blocks) {
  if (blockIdx.x < dbc_blocks)
    dbc_block(a, g, s, blockIdx.x);
  else
    head_mma_block<T, kN>(a, g, s, blockIdx.x - dbc_blocks);
}

// 7 alone, after head_kernel (P > 64 or N > 128).
template <class T>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 2 ? 2 : 1) dbc_kernel(Args<T> a, Grads<T> g, Scratch<T> s) {
  dbc_block(a, g, s, blockIdx.x);
}

// ---------------------------------------------------------------------------------------------------
// 8. Block per (parameter, head): the (batch, chunk) partials summed in a fixed order (thread t over
// items t, t + kThreads, ..., then over the lanes and the warps) and added to dA, dD or ddt_bias.

constexpr size_t param_smem() { return (kThreads / 32) * sizeof(float); }

__global__ void __launch_bounds__(kThreads) param_kernel(int heads, int64_t items, const float* __restrict__ parts,
                                                        float* dA, float* dD, float* ddt_bias) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* const warp_sums = reinterpret_cast<float*>(smem);
  const int k = int(blockIdx.x) / heads, h = int(blockIdx.x) % heads;
  float* const out = k == 0 ? dA : k == 1 ? dD : ddt_bias;
  if (!out) return;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < items; i += kThreads) sum += parts[(k * items + i) * heads + h];
  sum = warp_sum(sum);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    out[h] += total;
  }
}

// ---------------------------------------------------------------------------------------------------
// Host side: which intermediates a call needs, its scratch, the launches' grids and shared memory.

struct Plan {
  int chunks, p_tiles, n_tiles;
  Segments segments;     // of the state walks
  bool states, dstates;  // whether s.states / s.dstates exist
  bool states_given;     // s.states is the forward's (ssd_forward_saving_chunk_states): no walk makes it
  bool dbc;              // whether dB or dC is asked for
  int head_tiles;        // kN of head_mma_block (64 or 128); 0: head_kernel (P > 64 or N > 128)
  size_t scratch_floats;
  unsigned values_blocks, walk_blocks, pass_blocks, group_blocks, head_blocks, dbc_blocks, param_blocks;
};

// The floats each part of the scratch takes (Scratch's members in order; 0: absent), each part starting
// 16-byte aligned.
struct ScratchParts {
  int64_t floats[9];
};
template <class T>
ScratchParts scratch_parts(const Args<T>& a, const Plan& p) {
  const int64_t bh = int64_t(a.batch) * a.heads, bg = int64_t(a.batch) * a.groups;
  const int64_t state_floats = (bh * p.chunks * int64_t(a.head_dim) * a.state_dim * int64_t(sizeof(T)) + 3) / 4;
  const int64_t cb = bg * p.chunks * kChunk * kChunk;
  const bool walks = p.states || p.dstates;
  const int64_t bounds = walks ? 2 * bh * p.segments.count * int64_t(a.head_dim) * a.state_dim : 0;
  ScratchParts parts{{bh * a.length, bh * a.length, p.states && !p.states_given ? state_floats : 0,
                      p.dstates ? state_floats : 0, p.head_tiles ? 0 : cb, cb,
                      3 * int64_t(a.batch) * p.chunks * a.heads, bounds, walks ? 2 * bh * p.segments.count : 0}};
  for (int64_t& n : parts.floats) n = (n + 3) / 4 * 4;
  return parts;
}

// states_given: the caller has the state entering every chunk (then g.state0 is null).
template <class T>
Plan make_plan(const Args<T>& a, const Grads<T>& g, bool states_given = false) {
  Plan p{};
  const int64_t bh = int64_t(a.batch) * a.heads, bg = int64_t(a.batch) * a.groups;
  const int64_t PN = int64_t(a.head_dim) * a.state_dim;
  p.chunks = chunk_count(a.length);
  p.p_tiles = (a.head_dim + kTile - 1) / kTile;
  p.n_tiles = (a.state_dim + kTile - 1) / kTile;
  p.states = g.state0 != nullptr || p.chunks > 1;
  p.dstates = p.chunks > 1 || g.dfinal != nullptr || g.dstate0 != nullptr;
  p.states_given = states_given && p.states;
  p.dbc = g.dB != nullptr || g.dC != nullptr;
  p.head_tiles = a.head_dim > kHeadDimTile || a.state_dim > 128 ? 0 : a.state_dim <= 64 ? 64 : 128;
  // Segments of 4 to 32 chunks, as many as give the walks ~2048 blocks.
  p.segments.first_dir = p.states_given ? 1 : 0;
  const int64_t blocks_per_segment = (2 - p.segments.first_dir) * bh * p.p_tiles * p.n_tiles;
  const int64_t wanted = (2048 + blocks_per_segment - 1) / blocks_per_segment;
  p.segments.chunks = int(std::clamp<int64_t>((p.chunks + wanted - 1) / wanted, 4, kMaxSegmentChunks));
  p.segments.count = (p.chunks + p.segments.chunks - 1) / p.segments.chunks;
  p.scratch_floats = 0;
  for (int64_t n : scratch_parts(a, p).floats) p.scratch_floats += size_t(n);
  auto blocks = [](int64_t n) { return unsigned(n); };
  p.values_blocks = blocks((bh * p.chunks + kThreads / 32 - 1) / (kThreads / 32));
  p.walk_blocks = blocks(blocks_per_segment * p.segments.count);
  const auto aligned = [](const float* x) { return reinterpret_cast<uintptr_t>(x) % 16 == 0; };
  p.segments.pass_vec = PN % 4 == 0 && aligned(g.state0) && aligned(g.dfinal) ? 4 : 1;
  p.pass_blocks = blocks(((2 - p.segments.first_dir) * bh * PN / p.segments.pass_vec + kThreads - 1) / kThreads);
  p.group_blocks = blocks(bg * p.chunks);
  p.head_blocks = blocks(bh * p.chunks);
  p.dbc_blocks = blocks(bg * p.chunks * p.n_tiles);
  p.param_blocks = blocks(3 * int64_t(a.heads));
  return p;
}

// The scratch of `plan` carved from `base` (plan.scratch_floats floats, 16-byte aligned); s.states is
// `given` when the plan says so.
template <class T>
Scratch<T> carve_scratch(const Args<T>& a, const Plan& plan, float* base, T* given) {
  const ScratchParts parts = scratch_parts(a, plan);
  float* next = base;
  float* ptrs[9];
  for (int i = 0; i < 9; ++i) {
    ptrs[i] = parts.floats[i] ? next : nullptr;
    next += parts.floats[i];
  }
  T* const states = plan.states_given ? given : reinterpret_cast<T*>(ptrs[2]);
  return {ptrs[0], ptrs[1], states, reinterpret_cast<T*>(ptrs[3]), ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8]};
}

}  // namespace ssm::ops::cuda::ssd_backward_kernels
