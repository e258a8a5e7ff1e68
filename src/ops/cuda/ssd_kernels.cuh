// The Mamba-2 SSD kernels of ops::cuda::ssd and ssd_step (launched from ssd_launch.cuh). No engine
// headers: dev/cuda/ssd.cu times exactly these, and dev/cuda/ssd_host_check.cpp runs them on the CPU.
//
// Per (batch b, head h; group g = h / (H/G)), with dt_t = clamp(softplus(dt_t + dt_bias), dt_min, dt_max):
//   h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ,   y_t = h_t C_t + D x_t   (state h: [P, N], F32).
//
// Two algorithms:
//  - recurrent: one warp per (batch, head, channel p) runs the recurrence token by token over its state
//    row (F32, in global memory). ssd_step is one token of it; the forward uses it for the shapes the
//    chunked kernels do not take.
//  - chunked (the forward for P <= 64, N <= 128, 16-byte aligned rows): chunks of Q = 64 tokens with the
//    CPU op's formulas and rounding points (ops/cpu/ssd.cpp): a_l = the cumsum of dt A inside the chunk
//    (in double, rounded to F32), and per chunk
//      y = exp(a_l) ⊙ C Sᵀ + (C Bᵀ ⊙ L + D I) X,   L[l,s] = exp(a_l - a_s) dt_s (s <= l),
//      S = exp(a_last) S + (w ⊙ X)ᵀ B,             w_s = exp(a_last - a_s) dt_s.
//    The chunks of each (batch, head) are cut into `segments` runs of whole chunks, so that
//    batch * heads * segments blocks fill the GPU, in three launches:
//      0. chunk_prep_kernel, per (batch, chunk), fully parallel: what does not depend on the state, out
//         of the per-chunk chains of the passes: every head's dt scan (ChunkScan) and every group's raw
//         C Bᵀ on and below the diagonal (once per group, not per head), into scratch.
//      1. piece_state_kernel, per (batch, head, piece of a segment but the last; pieces are shorter
//         than segments so that this lighter pass fills the GPU too): the state the piece alone leaves
//         (from zero) and its total log-decay.
//      2. chunk_scan_kernel, per (batch, head, segment, slice of the head's P rows): the state entering
//         the segment composed from the initial state and the pieces before, then the segment's chunks
//         in order, writing y; the last segment writes the final state. Its chain per chunk: store the
//         state, mask C Bᵀ (read from scratch a chunk ahead) into Ms, barrier, C Sᵀ + Ms X, update the
//         state. A block holds all 64 rows of the state, or, when batch * heads * segments blocks leave
//         the GPU under-filled (short sequences), a slice of 32 or 16 rows (its state, its y channels);
//         each element's products are the same either way, so the results are the same bit for bit.
//    The passes' blocks of 8 warps walk their chunks with the next chunks' x, B, C and scans copied
//    in (cp.async) while the current one is computed. The four products per chunk run on the tensor
//    cores (mma.sync): BF16 operands with F32 accumulators for BF16 activations (C Bᵀ ⊙ L and the state
//    operand rounded to BF16, as mamba_ssm does, and the raw C Bᵀ in scratch too); for F32 activations
//    3xTF32 — each operand split into a TF32 part and a TF32 remainder, three products — which keeps
//    F32 accuracy (~1e-6 relative) at a third of the TF32 rate.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "element.cuh"
#ifndef SSM_SSD_HOST_CHECK  // dev/cuda/ssd_host_check.cpp brings its own CPU versions of these
#include "pdl.cuh"
#include "ptx.cuh"
#endif

namespace ssm::ops::cuda::ssd_kernels {

// The op's arguments as the kernels see them: activations of type T (float or bf16), rows with strides.
template <class T>
struct Args {
  const T *x, *dt, *B, *C;  // x [B,T,H*P], dt [B,T,H] (raw), B/C [B,T,G*N]
  T* y;                     // [B,T,H*P]
  const float *A, *dt_bias, *D;  // [H]; dt_bias and D null when absent
  int64_t ldx, lddt, ldB, ldC, ldy;  // row strides in elements
  int batch, length, heads, head_dim, groups, state_dim;
  float dt_min, dt_max;
};

__device__ __forceinline__ float softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
__device__ __forceinline__ float dt_value(float raw, float bias, float lo, float hi) {
  return fminf(fmaxf(softplus(raw + bias), lo), hi);
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Recurrent: warp per (batch, head, p); lanes over n. `state` [B,H,P,N] F32, read and overwritten.

template <class T>
__global__ void __launch_bounds__(256) recurrent_kernel(Args<T> a, float* __restrict__ state) {
  const int lane = threadIdx.x & 31;
  const int64_t row_id = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;  // (b * H + h) * P + p
  if (row_id >= int64_t(a.batch) * a.heads * a.head_dim) return;
  const int p = int(row_id % a.head_dim);
  const int64_t bh = row_id / a.head_dim;
  const int h = int(bh % a.heads), b = int(bh / a.heads), g = h / (a.heads / a.groups);
  const int N = a.state_dim;
  float* __restrict__ S = state + row_id * N;
  const float A = a.A[h], bias = a.dt_bias ? a.dt_bias[h] : 0.0f, D = a.D ? a.D[h] : 0.0f;
  for (int t = 0; t < a.length; ++t) {
    const int64_t row = int64_t(b) * a.length + t;
    const float dt = dt_value(to_float(a.dt[row * a.lddt + h]), bias, a.dt_min, a.dt_max);
    const float decay = expf(dt * A);
    const float xv = to_float(a.x[row * a.ldx + int64_t(h) * a.head_dim + p]);
    const float coef = dt * xv;
    const T* __restrict__ Bv = a.B + row * a.ldB + int64_t(g) * N;
    const T* __restrict__ Cv = a.C + row * a.ldC + int64_t(g) * N;
    float acc = 0.0f;
    for (int n = lane; n < N; n += 32) {
      const float s = S[n] * decay + coef * to_float(Bv[n]);
      S[n] = s;
      acc += s * to_float(Cv[n]);
    }
    acc = warp_sum(acc);
    if (lane == 0) a.y[row * a.ldy + int64_t(h) * a.head_dim + p] = from_float<T>(acc + D * xv);
  }
}

// One token (decoding): a warp per group of kStepRows rows of p of one (batch, head), lanes over n in
// 4-float pieces (kPieces a lane: 1 for N <= 128, 2 up to 256). The grid is one wave (as many warps as
// fit); each warp walks its groups with the next group's state loaded before the current one is
// updated and stored, so its loads are always in flight (dev/cuda/ssd_step.cu: at batch 64 one group a
// warp in many waves reached 2.8-3.1 TB/s, this 3.4-3.8 against 3.6-3.9 for a bare copy in place). The
// state is touched once a step: streaming loads and stores (evict first). B and C are read once for
// the group's rows. Needs N % 4 == 0, N <= 4 · 32 · kPieces and a 16-byte aligned state. Launched to
// overlap the kernel before it (pdl.cuh): x, B, C and dt come from that kernel (decoding: in_proj's),
// so it waits before reading them.
constexpr int kStepRows = 4;

// Four elements of a B or C row, element by element: those rows are column slices of the layer's
// projection, not always 16-byte aligned.
template <class T>
__device__ __forceinline__ float4 load4(const T* p) {
  return make_float4(to_float(p[0]), to_float(p[1]), to_float(p[2]), to_float(p[3]));
}

// Where group w's rows lie: (batch, head) w / row_groups, rows p0 = w % row_groups · kStepRows on; this
// lane's first piece of its first row (one division a group: the pieces are offsets from it).
struct StepGroup {
  int64_t bh;
  int p0;
  float* first;
  __device__ __forceinline__ StepGroup(int64_t w, int row_groups, int head_dim, int state_dim, float* state, int lane)
      : bh(w / row_groups), p0(int(w - bh * row_groups) * kStepRows),
        first(state + (bh * head_dim + p0) * state_dim + lane * 4) {}
};

template <class T, int kPieces = 1>
__global__ void __launch_bounds__(256) step_kernel(Args<T> a, float* __restrict__ state) {
  const int lane = threadIdx.x & 31;
  const int row_groups = (a.head_dim + kStepRows - 1) / kStepRows, pieces = a.state_dim / 4;
  const int64_t groups = int64_t(a.batch) * a.heads * row_groups, warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  auto has = [&](const StepGroup& g, int r, int k) { return g.p0 + r < a.head_dim && lane + 32 * k < pieces; };
  auto at = [&](const StepGroup& g, int r, int k) { return g.first + r * a.state_dim + 128 * k; };
  if (warp >= groups) {
    pdl::wait_for_previous_grid();
    pdl::let_next_grid_start();
    return;
  }
  StepGroup group(warp, row_groups, a.head_dim, a.state_dim, state, lane);
  // The first group's lines are fetched into L2 before the wait (pdl.cuh), their latency overlapping
  // the previous kernel's tail. Only into L2, where every write is seen: a previous kernel may have
  // written the state (ssd_step called twice in a row), so registers are loaded after the wait.
#pragma unroll
  for (int r = 0; r < kStepRows; ++r)
#pragma unroll
    for (int k = 0; k < kPieces; ++k)
      if (has(group, r, k)) pdl::prefetch_l2(at(group, r, k));
  pdl::wait_for_previous_grid();
  pdl::let_next_grid_start();
  float4 next[kStepRows][kPieces];
  auto load_group = [&](const StepGroup& g) {
#pragma unroll
    for (int r = 0; r < kStepRows; ++r)
#pragma unroll
      for (int k = 0; k < kPieces; ++k)
        if (has(g, r, k)) next[r][k] = __ldcs(reinterpret_cast<const float4*>(at(g, r, k)));
  };
  load_group(group);
  for (;;) {
    float4 S[kStepRows][kPieces], Bv[kPieces], Cv[kPieces];
#pragma unroll
    for (int r = 0; r < kStepRows; ++r)
#pragma unroll
      for (int k = 0; k < kPieces; ++k) S[r][k] = next[r][k];
    const int64_t next_warp = warp + warps;
    const StepGroup following(next_warp < groups ? next_warp : warp, row_groups, a.head_dim, a.state_dim, state, lane);
    if (next_warp < groups) load_group(following);
    const int p0 = group.p0, h = int(group.bh % a.heads), b = int(group.bh / a.heads);
    const int g = h / (a.heads / a.groups);
    float xv[kStepRows];
#pragma unroll
    for (int r = 0; r < kStepRows; ++r)
      xv[r] = p0 + r < a.head_dim ? to_float(a.x[b * a.ldx + int64_t(h) * a.head_dim + p0 + r]) : 0.0f;
#pragma unroll
    for (int k = 0; k < kPieces; ++k) {
      const int piece = lane + 32 * k;
      if (piece < pieces) {
        Bv[k] = load4(a.B + b * a.ldB + int64_t(g) * a.state_dim + piece * 4);
        Cv[k] = load4(a.C + b * a.ldC + int64_t(g) * a.state_dim + piece * 4);
      }
    }
    const float dt = dt_value(to_float(a.dt[b * a.lddt + h]), a.dt_bias ? a.dt_bias[h] : 0.0f, a.dt_min, a.dt_max);
    const float decay = expf(dt * a.A[h]), D = a.D ? a.D[h] : 0.0f;
#pragma unroll
    for (int r = 0; r < kStepRows; ++r) {
      if (p0 + r >= a.head_dim) break;
      const float coef = dt * xv[r];
      float acc = 0.0f;
#pragma unroll
      for (int k = 0; k < kPieces; ++k) {
        if (lane + 32 * k >= pieces) break;
        float4 v = S[r][k];
        v.x = v.x * decay + coef * Bv[k].x;
        v.y = v.y * decay + coef * Bv[k].y;
        v.z = v.z * decay + coef * Bv[k].z;
        v.w = v.w * decay + coef * Bv[k].w;
        __stcs(reinterpret_cast<float4*>(at(group, r, k)), v);
        acc += v.x * Cv[k].x + v.y * Cv[k].y + v.z * Cv[k].z + v.w * Cv[k].w;
      }
      acc = warp_sum(acc);
      if (lane == 0) a.y[b * a.ldy + int64_t(h) * a.head_dim + p0 + r] = from_float<T>(acc + D * xv[r]);
    }
    if (next_warp >= groups) break;
    warp = next_warp;
    group = following;
  }
}

// ---------------------------------------------------------------------------------------------------
// Tensor-core building blocks: one warp's fragments of mma.sync tiles read from shared memory.
// Tiles: A 16 x kK at (m0, k0), B kK x 8 at (k0, n0), accumulators float[4] of a 16 x 8 tile holding
// (row g, cols 2t, 2t+1) and (row g + 8, same cols), g = lane / 4, t = lane % 4.

template <class T>
struct WarpMma;

// BF16 operands, m16n8k16; fragments through ldmatrix (rows of 16 bytes, 16-byte aligned).
template <>
struct WarpMma<bf16> {
  static constexpr int kK = 16;
  struct FragA {
    uint32_t r[4];
  };
  struct FragB {
    uint32_t r[2];
  };

  // A with element (m, k) at s[L::at(m, k)].
  template <class L>
  static __device__ __forceinline__ void load_a(FragA& f, const bf16* s, L, int m0, int k0) {
    const int lane = threadIdx.x & 31, q = lane >> 3, r = lane & 7;
    ptx::ldmatrix_x4(f.r, s + L::at(m0 + r + 8 * (q & 1), k0 + 8 * (q >> 1)));
  }
  // A with element (m, k) at s[L::at(k, m)].
  template <class L>
  static __device__ __forceinline__ void load_a_t(FragA& f, const bf16* s, L, int m0, int k0) {
    const int lane = threadIdx.x & 31, q = lane >> 3, r = lane & 7;
    ptx::ldmatrix_x4_trans(f.r, s + L::at(k0 + r + 8 * (q >> 1), m0 + 8 * (q & 1)));
  }
  // A with element (m, k) at s[L::at(k, m)], column k multiplied by w[k].
  template <class L>
  static __device__ __forceinline__ void load_a_t_scaled(FragA& f, const bf16* s, L, int m0, int k0, const float* w) {
    const int t = threadIdx.x & 3;
    load_a_t(f, s, L{}, m0, k0);
    const float w0 = w[k0 + 2 * t], w1 = w[k0 + 2 * t + 1], w8 = w[k0 + 8 + 2 * t], w9 = w[k0 + 9 + 2 * t];
    f.r[0] = scale(f.r[0], w0, w1);
    f.r[1] = scale(f.r[1], w0, w1);
    f.r[2] = scale(f.r[2], w8, w9);
    f.r[3] = scale(f.r[3], w8, w9);
  }
  // B with element (k, n) at s[L::at(n, k)].
  template <class L>
  static __device__ __forceinline__ void load_b(FragB& f, const bf16* s, L, int k0, int n0) {
    const int lane = threadIdx.x & 31, q = (lane >> 3) & 1, r = lane & 7;
    ptx::ldmatrix_x2(f.r, s + L::at(n0 + r, k0 + 8 * q));
  }
  // B with element (k, n) at s[L::at(k, n)].
  template <class L>
  static __device__ __forceinline__ void load_b_t(FragB& f, const bf16* s, L, int k0, int n0) {
    const int lane = threadIdx.x & 31, q = (lane >> 3) & 1, r = lane & 7;
    ptx::ldmatrix_x2_trans(f.r, s + L::at(k0 + r + 8 * q, n0));
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const FragA& a, const FragB& b) {
    ptx::mma_bf16_16816(c, a.r, b.r);
  }

 private:
  // A pair of bf16 (low half first) times (lo, hi).
  static __device__ __forceinline__ uint32_t scale(uint32_t pair, float lo, float hi) {
    __nv_bfloat162 v;
    memcpy(&v, &pair, 4);
    const float2 f = __bfloat1622float2(v);
    v = __floats2bfloat162_rn(f.x * lo, f.y * hi);
    memcpy(&pair, &v, 4);
    return pair;
  }
};

// F32 operands as 3xTF32, m16n8k8: every value v = hi + lo with hi = tf32(v), lo = tf32(v - hi);
// a b ~ a.hi b.hi + a.hi b.lo + a.lo b.hi (the dropped a.lo b.lo is ~2^-22 of a b).
template <>
struct WarpMma<float> {
  static constexpr int kK = 8;
  struct FragA {
    uint32_t hi[4], lo[4];
  };
  struct FragB {
    uint32_t hi[2], lo[2];
  };

  template <class L>
  static __device__ __forceinline__ void load_a(FragA& f, const float* s, L, int m0, int k0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    split(s[L::at(m0 + g, k0 + t)], f.hi[0], f.lo[0]);
    split(s[L::at(m0 + g + 8, k0 + t)], f.hi[1], f.lo[1]);
    split(s[L::at(m0 + g, k0 + t + 4)], f.hi[2], f.lo[2]);
    split(s[L::at(m0 + g + 8, k0 + t + 4)], f.hi[3], f.lo[3]);
  }
  template <class L>
  static __device__ __forceinline__ void load_a_t(FragA& f, const float* s, L, int m0, int k0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    split(s[L::at(k0 + t, m0 + g)], f.hi[0], f.lo[0]);
    split(s[L::at(k0 + t, m0 + g + 8)], f.hi[1], f.lo[1]);
    split(s[L::at(k0 + t + 4, m0 + g)], f.hi[2], f.lo[2]);
    split(s[L::at(k0 + t + 4, m0 + g + 8)], f.hi[3], f.lo[3]);
  }
  template <class L>
  static __device__ __forceinline__ void load_a_t_scaled(FragA& f, const float* s, L, int m0, int k0, const float* w) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float w0 = w[k0 + t], w4 = w[k0 + t + 4];
    split(s[L::at(k0 + t, m0 + g)] * w0, f.hi[0], f.lo[0]);
    split(s[L::at(k0 + t, m0 + g + 8)] * w0, f.hi[1], f.lo[1]);
    split(s[L::at(k0 + t + 4, m0 + g)] * w4, f.hi[2], f.lo[2]);
    split(s[L::at(k0 + t + 4, m0 + g + 8)] * w4, f.hi[3], f.lo[3]);
  }
  template <class L>
  static __device__ __forceinline__ void load_b(FragB& f, const float* s, L, int k0, int n0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    split(s[L::at(n0 + g, k0 + t)], f.hi[0], f.lo[0]);
    split(s[L::at(n0 + g, k0 + t + 4)], f.hi[1], f.lo[1]);
  }
  template <class L>
  static __device__ __forceinline__ void load_b_t(FragB& f, const float* s, L, int k0, int n0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    split(s[L::at(k0 + t, n0 + g)], f.hi[0], f.lo[0]);
    split(s[L::at(k0 + t + 4, n0 + g)], f.hi[1], f.lo[1]);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const FragA& a, const FragB& b) {
    ptx::mma_tf32_1688(c, a.lo, b.hi);
    ptx::mma_tf32_1688(c, a.hi, b.lo);
    ptx::mma_tf32_1688(c, a.hi, b.hi);
  }

 private:
  static __device__ __forceinline__ void split(float v, uint32_t& hi, uint32_t& lo) {
    hi = ptx::to_tf32(v);
    float high;
    memcpy(&high, &hi, 4);
    lo = ptx::to_tf32(v - high);
  }
};

__device__ __forceinline__ void store_pair(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = {a, b}; }
__device__ __forceinline__ void store_pair(bf16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}

// ---------------------------------------------------------------------------------------------------
// Chunked: geometry.

constexpr int kChunk = 64;        // Q, tokens per chunk
constexpr int kHeadDimTile = 64;  // P padded: the chunked kernels take P <= 64
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxSegments = 16;

// A shared-memory tile of rows of kCols values of T, unpadded: the 16-byte pieces of row r are
// permuted by XOR with r % 8, so that the 8 rows one ldmatrix (or one fragment load) reads at the
// same columns fall in different banks. Element (r, c) is at at(r, c); a 16-byte piece (c a multiple
// of 16 / sizeof(T)) stays whole. Rows of at least 8 pieces (kCols * sizeof(T) a multiple of 128).
template <class T, int kCols>
struct SwizzledRows {
  static constexpr int kVec = 16 / int(sizeof(T)), kWidth = kCols;
  static_assert(kCols * int(sizeof(T)) % 128 == 0, "rows of a multiple of 8 pieces of 16 bytes");
  __host__ __device__ static constexpr int at(int r, int c) {
    return r * kCols + (((c / kVec) ^ (r & 7)) * kVec) + c % kVec;
  }
};

// The tiles of the chunked kernels, in elements of T.
template <class T, int kN>
struct Tiles {
  using X = SwizzledRows<T, kHeadDimTile>;  // a chunk of x: [s][p]
  using BC = SwizzledRows<T, kN>;           // a chunk of B or C: [s][n]
  using M = SwizzledRows<T, kChunk>;        // C Bᵀ ⊙ L + D I: [l][s]
  using S = SwizzledRows<T, kN>;            // the state entering the chunk: [p][n]
  static constexpr int kX = kChunk * kHeadDimTile, kBC = kChunk * kN, kM = kChunk * kChunk, kS = kHeadDimTile * kN;
};

// The per-token values of one chunk, written by one warp (scan_chunk).
struct ChunkScan {
  float dt[kChunk];        // dt after bias, softplus and clamp; 0 past the sequence
  float acum[kChunk];      // a_l: inclusive cumsum of dt A from the chunk start
  float decay_in[kChunk];  // exp(a_l): how the state entering the chunk reaches token l
  float weight[kChunk];    // w_s = exp(a_last - a_s) dt_s: how token s reaches the state leaving it
  float alast, decay;      // a_last and exp(a_last)
  float unused[2];
};

template <class T, int kN>
constexpr size_t chunk_scan_smem() {
  using L = Tiles<T, kN>;
  return (2 * size_t(L::kX + 2 * L::kBC) + L::kM + L::kS) * sizeof(T) + 2 * sizeof(ChunkScan);
}
static_assert(chunk_scan_smem<float, 128>() <= 227 * 1024, "pass 2 must fit one multiprocessor's shared memory");
static_assert(2 * (chunk_scan_smem<bf16, 128>() + 1024) <= 228 * 1024, "two BF16 pass-2 blocks must fit one");

// How the chunks of a (batch, head) are cut: into segments (pass 2), and every segment but the last
// into pieces (pass 1); and a head's P rows into slices (pass 2).
struct Plan {
  int chunks;              // ceil(T / kChunk)
  int chunks_per_segment;  // the last segment may have fewer
  int segments;
  int chunks_per_piece;  // the last piece of a segment may have fewer
  int pieces_per_segment;
  int state_tile;  // N padded: 64 or 128
  int slice_rows;  // rows of the state a pass-2 block holds: kHeadDimTile (the whole head), 32 or 16
  int slices;      // ceil(P / slice_rows): pass-2 blocks per (batch, head, segment)

  __host__ __device__ int pieces() const { return pieces_per_segment * (segments - 1); }  // per (batch, head)
};

struct BlockCoords {
  int b, h, g, part;  // part: the segment (pass 2) or the piece (pass 1)
  int64_t bh;         // b * H + h
};
// Blocks run head-fastest, so that the heads of one group walk the same B and C rows together.
template <class T>
__device__ __forceinline__ BlockCoords block_coords(const Args<T>& a) {
  const int h = int(blockIdx.x % unsigned(a.heads)), rest = int(blockIdx.x / unsigned(a.heads));
  const int b = rest % a.batch;
  return {b, h, h / (a.heads / a.groups), rest / a.batch, int64_t(b) * a.heads + h};
}

__device__ __forceinline__ int chunk_rows(int length, int chunk) { return min(kChunk, length - chunk * kChunk); }

// One warp: the raw dt of a chunk's tokens (lane l holds tokens 2 l and 2 l + 1), then its scan values.
template <class T>
__device__ __forceinline__ void load_raw_dt(const Args<T>& a, const BlockCoords& bc, int chunk, float (&raw)[2]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int t = chunk * kChunk + 2 * lane + i;
    raw[i] = t < a.length ? to_float(a.dt[(int64_t(bc.b) * a.length + t) * a.lddt + bc.h]) : 0.0f;
  }
}

template <class T>
__device__ __forceinline__ void scan_chunk(ChunkScan& sc, const float (&raw)[2], int rows, const Args<T>& a, int h) {
  const int lane = threadIdx.x & 31, s0 = 2 * lane, s1 = s0 + 1;
  const float A = a.A[h], bias = a.dt_bias ? a.dt_bias[h] : 0.0f;
  const float v0 = s0 < rows ? dt_value(raw[0], bias, a.dt_min, a.dt_max) : 0.0f;
  const float v1 = s1 < rows ? dt_value(raw[1], bias, a.dt_min, a.dt_max) : 0.0f;
  const double d0 = double(v0) * double(A), d1 = double(v1) * double(A);
  // Inclusive scan of the lane pairs in double (the CPU op accumulates in double too).
  double run = d0 + d1;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const double other = __shfl_up_sync(0xffffffffu, run, offset);
    if (lane >= offset) run += other;
  }
  double before = __shfl_up_sync(0xffffffffu, run, 1);
  if (lane == 0) before = 0.0;
  const double a0d = before + d0, a1d = a0d + d1;
  const float a0 = float(a0d), a1 = float(a1d);
  const int last = rows - 1;  // a_last: the cumsum at the chunk's last token, as the CPU op takes it
  const float alast = __shfl_sync(0xffffffffu, (last & 1) ? a1 : a0, last >> 1);
  sc.dt[s0] = v0;
  sc.dt[s1] = v1;
  sc.acum[s0] = a0;
  sc.acum[s1] = a1;
  sc.decay_in[s0] = expf(a0);
  sc.decay_in[s1] = expf(a1);
  sc.weight[s0] = expf(alast - a0) * v0;
  sc.weight[s1] = expf(alast - a1) * v1;
  if (lane == 0) {
    sc.alast = alast;
    sc.decay = expf(alast);
  }
}

// Queues the copy of rows [row0, row0 + rows) (cols [0, cols) from `src`) into a [kChunk][...] tile of
// layout L; rows past `rows` and columns past `cols` become zeros. Thread t copies the 16-byte piece t %
// kPerRow of rows t / kPerRow + kRowStep j: its row's XOR pattern (row % 8) is the same for every j, so
// its shared-memory addresses are one offset plus constants and its global ones one pointer plus steps
// (a runtime division per piece was a fifth of pass 2's instructions).
template <class T, class L>
__device__ __forceinline__ void copy_chunk_async(T* dst, L, const T* src, int64_t ld, int64_t row0, int rows,
                                                 int cols) {
  constexpr int kVec = 16 / int(sizeof(T)), kPerRow = L::kWidth / kVec, kRowStep = kThreads / kPerRow;
  static_assert(kThreads % kPerRow == 0 && kRowStep % 8 == 0 && kChunk % kRowStep == 0,
                "every thread copies the same pieces of rows kRowStep apart");
  const int r0 = int(threadIdx.x) / kPerRow, c = int(threadIdx.x) % kPerRow * kVec;
  const bool col_valid = c < cols;
  const T* from = src + (row0 + r0) * ld + c;
  T* const to = dst + L::at(r0, c);
#pragma unroll
  for (int j = 0; j < kChunk / kRowStep; ++j, from += kRowStep * ld) {
    const bool valid = col_valid && r0 + kRowStep * j < rows;
    ptx::cp_async_16(to + kRowStep * j * L::kWidth, valid ? from : src, valid ? 16 : 0);
  }
}

__device__ __forceinline__ void zero_shared(void* p, size_t bytes) {
  uint4* q = static_cast<uint4*>(p);
  for (size_t i = threadIdx.x; i < bytes / 16; i += kThreads) q[i] = make_uint4(0, 0, 0, 0);
}

// Rows [row0, row0 + kRows) of the state [kHeadDimTile, kN] in one block's accumulator tiles: kRows 64
// the whole head, 32 or 16 a slice of it (Plan::slice_rows; row0 a multiple of kRows). kWarpsP warps
// along p, each holding kMTiles m-tiles of 16 rows, times kWarpsN along n, each holding kNTiles n-tiles
// of 8 columns (kRows 64: warp w holds rows 32 (w % 2) + [0, 32) and columns kN/4 (w / 2) + [0, kN/4)).
// Tiles start at multiples of 16 rows and 8 columns whatever kRows, so every element keeps its place in
// its 16 x 8 tile and its products (same operands, same order): a slice's values are the whole
// block's, bit for bit.
template <int kN, int kRows>
struct StateSlice {
  static_assert(kRows == 64 || kRows == 32 || kRows == 16, "a block holds 64, 32 or 16 rows of the state");
  static constexpr int kWarpsP = kRows >= 32 ? 2 : 1, kWarpsN = kWarps / kWarpsP;
  static constexpr int kMTiles = kRows / (16 * kWarpsP), kNTiles = kN / (8 * kWarpsN);
  static_assert(kNTiles >= 1 && kN == 8 * kWarpsN * kNTiles, "the warps along n cover kN");
  // This warp's first row (of the head) and first column.
  __device__ static int warp_row0(int row0) { return row0 + 16 * kMTiles * ((threadIdx.x >> 5) % kWarpsP); }
  __device__ static int warp_col0() { return 8 * kNTiles * ((threadIdx.x >> 5) / kWarpsP); }
};
template <int kN, int kRows>
using StateTiles = float[StateSlice<kN, kRows>::kMTiles][StateSlice<kN, kRows>::kNTiles][4];

// Calls f(mt, nt, half, p, n) for each pair S[mt][nt][2 half], S[mt][nt][2 half + 1] at (p, n), (p, n + 1).
template <int kN, int kRows, class F>
__device__ __forceinline__ void for_state_pairs(int row0, F&& f) {
  using W = StateSlice<kN, kRows>;
  const int lane = threadIdx.x & 31;
  const int p0 = W::warp_row0(row0) + (lane >> 2), n0 = W::warp_col0() + 2 * (lane & 3);
#pragma unroll
  for (int mt = 0; mt < W::kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < W::kNTiles; ++nt)
#pragma unroll
      for (int half = 0; half < 2; ++half) f(mt, nt, half, p0 + 16 * mt + 8 * half, n0 + 8 * nt);
}

// S = keep S + src (src: [P, N] F32 in global memory; N even, so n < N covers n + 1).
template <int kN, int kRows>
__device__ __forceinline__ void add_state(StateTiles<kN, kRows>& S, const float* src, int row0, int P, int N,
                                          float keep) {
  for_state_pairs<kN, kRows>(row0, [&](int mt, int nt, int half, int p, int n) {
    float2 v = {0.0f, 0.0f};
    if (p < P && n < N) v = *reinterpret_cast<const float2*>(src + int64_t(p) * N + n);
    S[mt][nt][2 * half] = keep * S[mt][nt][2 * half] + v.x;
    S[mt][nt][2 * half + 1] = keep * S[mt][nt][2 * half + 1] + v.y;
  });
}
template <int kN, int kRows>
__device__ __forceinline__ void store_state(const StateTiles<kN, kRows>& S, float* dst, int row0, int P, int N) {
  for_state_pairs<kN, kRows>(row0, [&](int mt, int nt, int half, int p, int n) {
    if (p < P && n < N)
      *reinterpret_cast<float2*>(dst + int64_t(p) * N + n) = {S[mt][nt][2 * half], S[mt][nt][2 * half + 1]};
  });
}

// S = exp(a_last) S (when `decay`) + (w ⊙ X)ᵀ B. Scan: a ChunkScan, or any struct with its `weight` and
// `decay` (pass 1 stages only those: PieceScan).
template <class T, int kN, int kRows, class Scan>
__device__ __forceinline__ void update_state(StateTiles<kN, kRows>& S, const T* Xs, const T* Bs, const Scan& sc,
                                             bool decay, int row0) {
  using M = WarpMma<T>;
  using L = Tiles<T, kN>;
  using W = StateSlice<kN, kRows>;
  const int p0 = W::warp_row0(row0), n0 = W::warp_col0();
  if (decay) {
    const float e = sc.decay;
    for_state_pairs<kN, kRows>(row0, [&](int mt, int nt, int half, int, int) {
      S[mt][nt][2 * half] *= e;
      S[mt][nt][2 * half + 1] *= e;
    });
  }
#pragma unroll
  for (int k0 = 0; k0 < kChunk; k0 += M::kK) {
    typename M::FragA fa[W::kMTiles];
#pragma unroll
    for (int mt = 0; mt < W::kMTiles; ++mt)
      M::load_a_t_scaled(fa[mt], Xs, typename L::X{}, p0 + 16 * mt, k0, sc.weight);
#pragma unroll
    for (int nt = 0; nt < W::kNTiles; ++nt) {
      typename M::FragB fb;
      M::load_b_t(fb, Bs, typename L::BC{}, k0, n0 + 8 * nt);
#pragma unroll
      for (int mt = 0; mt < W::kMTiles; ++mt) M::mma(S[mt][nt], fa[mt], fb);
    }
  }
}

// The tiles of a chunk's C Bᵀ that the passes need: the 20 tiles of 16 x 8 on and below the diagonal
// (row block r of 16 rows, column tile c of 8 columns, c <= 2 r + 1), dealt to the warps round-robin
// (tile i to warp i % 8): 3 or 2 a warp. Dealt by row block, 4 of the 8 warps masked 4 tiles and 2 none,
// and pass 2's warps waited for the busiest at the barrier after the mask (12% of its stall samples).
constexpr int kCbTiles = 20, kCbTilesPerWarp = (kCbTiles + kWarps - 1) / kWarps;
struct CbTile {
  int l0, s0;  // first row and column
  bool valid;  // warps 4-7 have two tiles
};
__device__ __forceinline__ CbTile cb_tile(int j) {  // this warp's tile j
  const int i = (threadIdx.x >> 5) + kWarps * j;
  const int r = i < 2 ? 0 : i < 6 ? 1 : i < 12 ? 2 : 3;  // row block r starts at tile r (r + 1)
  return {16 * r, 8 * (i - r * (r + 1)), i < kCbTiles};
}

// Calls f(j, half, l, s) for each pair (l, s), (l, s + 1) of this warp's tiles (tile j, mma halves).
template <class F>
__device__ __forceinline__ void for_cb_pairs(F&& f) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kCbTilesPerWarp; ++j) {
    const CbTile t = cb_tile(j);
    if (!t.valid) continue;
#pragma unroll
    for (int half = 0; half < 2; ++half) f(j, half, t.l0 + (lane >> 2) + 8 * half, t.s0 + 2 * (lane & 3));
  }
}
using CbAcc = float[kCbTilesPerWarp][4];  // this warp's tiles as mma accumulators

// This warp's C Bᵀ tiles; acc is added to.
template <class T, int kN>
__device__ __forceinline__ void cb_tiles(CbAcc& acc, const T* Cs, const T* Bs) {
  using M = WarpMma<T>;
  using L = Tiles<T, kN>;
#pragma unroll
  for (int j = 0; j < kCbTilesPerWarp; ++j) {
    const CbTile t = cb_tile(j);
    if (!t.valid) continue;
#pragma unroll
    for (int k0 = 0; k0 < kN; k0 += M::kK) {
      typename M::FragA fa;
      M::load_a(fa, Cs, typename L::BC{}, t.l0, k0);
      typename M::FragB fb;
      M::load_b(fb, Bs, typename L::BC{}, k0, t.s0);
      M::mma(acc[j], fa, fb);
    }
  }
}

// exp(x) of a decay (x <= 0) inside a chunk: for BF16 activations, whose products take Ms rounded to
// BF16, the multi-function unit's exp2 (__expf: a few units in the last F32 place, three instructions
// instead of expf's ten; the mask's exponentials were a sixth of pass 2's instructions); expf for F32.
template <class T>
__device__ __forceinline__ float decay_exp(float x) {
  if constexpr (sizeof(T) == 2) return __expf(x);
  else return expf(x);
}

// Ms = acc ⊙ L + D I for the warp's tiles of cb_tiles (acc: its C Bᵀ tiles). Every pair's decays
// are computed and then selected, without a branch per element (above the diagonal they are discarded).
template <class T, int kN>
__device__ __forceinline__ void store_masked_cb(T* Ms, const CbAcc& acc, const ChunkScan& sc, float D) {
  using L = Tiles<T, kN>;
  for_cb_pairs([&](int j, int half, int l, int s) {
    const float e0 = decay_exp<T>(sc.acum[l] - sc.acum[s]), e1 = decay_exp<T>(sc.acum[l] - sc.acum[s + 1]);
    float v0 = s <= l ? acc[j][2 * half] * e0 * sc.dt[s] : 0.0f;
    float v1 = s + 1 <= l ? acc[j][2 * half + 1] * e1 * sc.dt[s + 1] : 0.0f;
    if (s == l) v0 += D;
    if (s + 1 == l) v1 += D;
    store_pair(Ms + L::M::at(l, s), v0, v1);
  });
}

// y rows [0, rows) of the chunk, channels [row0, row0 + kRows) (the block's rows of the state) = exp(a_l)
// C Sᵀ (when `has_prev`) + Ms X. Warp w: rows 16 (w / 2) + [0, 16), channels row0 + kRows/2 (w % 2) +
// [0, kRows/2). `y` points at the chunk's first row, head h's first channel.
template <class T, int kN, int kRows>
__device__ __forceinline__ void chunk_output(T* y, int64_t ldy, int rows, int P, const T* Cs, const T* Ss,
                                             const T* Ms, const T* Xs, const ChunkScan& sc, bool has_prev,
                                             int row0) {
  using M = WarpMma<T>;
  using L = Tiles<T, kN>;
  constexpr int kChannelTiles = kRows / 16;  // n-tiles of 8 channels a warp
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int m0 = 16 * (warp >> 1), p0 = row0 + (kRows / 2) * (warp & 1);
  float acc[kChannelTiles][4] = {};
  if (has_prev) {
#pragma unroll
    for (int k0 = 0; k0 < kN; k0 += M::kK) {
      typename M::FragA fa;
      M::load_a(fa, Cs, typename L::BC{}, m0, k0);
#pragma unroll
      for (int nt = 0; nt < kChannelTiles; ++nt) {
        typename M::FragB fb;
        M::load_b(fb, Ss, typename L::S{}, k0, p0 + 8 * nt);
        M::mma(acc[nt], fa, fb);
      }
    }
    const float e0 = sc.decay_in[m0 + (lane >> 2)], e8 = sc.decay_in[m0 + (lane >> 2) + 8];
#pragma unroll
    for (int nt = 0; nt < kChannelTiles; ++nt) {
      acc[nt][0] *= e0;
      acc[nt][1] *= e0;
      acc[nt][2] *= e8;
      acc[nt][3] *= e8;
    }
  }
  for (int k0 = 0; k0 < m0 + 16; k0 += M::kK) {  // Ms is zero right of the diagonal block
    typename M::FragA fa;
    M::load_a(fa, Ms, typename L::M{}, m0, k0);
#pragma unroll
    for (int nt = 0; nt < kChannelTiles; ++nt) {
      typename M::FragB fb;
      M::load_b_t(fb, Xs, typename L::X{}, k0, p0 + 8 * nt);
      M::mma(acc[nt], fa, fb);
    }
  }
  // The lane's two rows of y as pointers, its channels as constant offsets from them.
  const int l = m0 + (lane >> 2), p = p0 + 2 * (lane & 3);
  T* const y_row[2] = {y + l * ldy + p, y + (l + 8) * ldy + p};
  const bool row_in[2] = {l < rows, l + 8 < rows};
#pragma unroll
  for (int nt = 0; nt < kChannelTiles; ++nt)
#pragma unroll
    for (int half = 0; half < 2; ++half)
      if (row_in[half] && p + 8 * nt < P) store_pair(y_row[half] + 8 * nt, acc[nt][2 * half], acc[nt][2 * half + 1]);
}

// Pass 1 needs only these of a chunk's scan: ChunkScan's last members, copied as they lie there.
struct PieceScan {
  float weight[kChunk];
  float alast, decay;
  float unused[2];
};
static_assert(sizeof(ChunkScan) - offsetof(ChunkScan, weight) == sizeof(PieceScan) &&
                  offsetof(ChunkScan, alast) - offsetof(ChunkScan, weight) == offsetof(PieceScan, alast) &&
                  sizeof(PieceScan) % 16 == 0 && sizeof(ChunkScan) % 16 == 0,
              "PieceScan is the tail of ChunkScan, in 16-byte pieces");

constexpr int kPieceStages = 4;

// Queues the copy of `bytes` (a multiple of 16) from src to shared dst, 16 bytes a thread.
__device__ __forceinline__ void copy_bytes_async(void* dst, const void* src, int bytes) {
  for (int i = threadIdx.x; i < bytes / 16; i += kThreads)
    ptx::cp_async_16(static_cast<char*>(dst) + 16 * i, static_cast<const char*>(src) + 16 * i, 16);
}

// One warp's raw C Bᵀ tiles (cb_tiles' tiling) as pairs of T, in registers between the global load and
// the mask.
template <class T>
struct CbPairs;
template <>
struct CbPairs<bf16> {
  using Pair = __nv_bfloat162;
  Pair v[kCbTilesPerWarp][2];
  __device__ __forceinline__ float first(int j, int half) const { return __low2float(v[j][half]); }
  __device__ __forceinline__ float second(int j, int half) const { return __high2float(v[j][half]); }
  __device__ __forceinline__ static Pair pack(float a, float b) { return __floats2bfloat162_rn(a, b); }
};
template <>
struct CbPairs<float> {
  using Pair = float2;
  Pair v[kCbTilesPerWarp][2];
  __device__ __forceinline__ float first(int j, int half) const { return v[j][half].x; }
  __device__ __forceinline__ float second(int j, int half) const { return v[j][half].y; }
  __device__ __forceinline__ static Pair pack(float a, float b) { return {a, b}; }
};

// The raw C Bᵀ of chunk `c` of (b, g): [kChunk][kChunk] in T.
template <class T>
__device__ __forceinline__ const T* cb_of(const Args<T>& a, const T* cb, int chunks, int b, int g, int c) {
  return cb + ((int64_t(b) * a.groups + g) * chunks + c) * (kChunk * kChunk);
}

template <class T>
__device__ __forceinline__ void load_cb(CbPairs<T>& f, const T* src) {
  for_cb_pairs([&](int j, int half, int l, int s) {
    f.v[j][half] = *reinterpret_cast<const typename CbPairs<T>::Pair*>(src + l * kChunk + s);
  });
}

// Pass 0. Block (b, chunk c): the scans of every head into scans[(b H + h) chunks + c], then for each
// group the raw C Bᵀ (tiles wholly above the diagonal not written) into cb. The first group's B and C
// are copied while the scans run; each warp loads the raw dt of up to kPrepHeads heads before scanning.
constexpr int kPrepHeads = 4;

template <class T, int kN>
__global__ void __launch_bounds__(kThreads) chunk_prep_kernel(Args<T> a, int chunks, ChunkScan* __restrict__ scans,
                                                              T* __restrict__ cb) {
  pdl::wait_for_previous_grid();  // launched overlapped (pdl.cuh): nothing read before
  pdl::let_next_grid_start();
  using L = Tiles<T, kN>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* const Bs = reinterpret_cast<T*>(smem);
  T* const Cs = Bs + L::kBC;
  const int c = int(blockIdx.x % unsigned(chunks)), b = int(blockIdx.x / unsigned(chunks));
  const int warp = threadIdx.x >> 5, rows = chunk_rows(a.length, c);
  const int64_t row0 = int64_t(b) * a.length + int64_t(c) * kChunk;
  auto copy = [&](int g) {
    copy_chunk_async(Bs, typename L::BC{}, a.B + int64_t(g) * a.state_dim, a.ldB, row0, rows, a.state_dim);
    copy_chunk_async(Cs, typename L::BC{}, a.C + int64_t(g) * a.state_dim, a.ldC, row0, rows, a.state_dim);
    ptx::cp_async_commit();
  };
  zero_shared(smem, 2 * size_t(L::kBC) * sizeof(T));
  __syncthreads();  // the zeros are in before the copies land
  copy(0);
  for (int h0 = warp; h0 < a.heads; h0 += kWarps * kPrepHeads) {
    float raw[kPrepHeads][2];
#pragma unroll
    for (int i = 0; i < kPrepHeads; ++i)
      if (h0 + kWarps * i < a.heads) load_raw_dt(a, BlockCoords{b, h0 + kWarps * i, 0, 0, 0}, c, raw[i]);
#pragma unroll
    for (int i = 0; i < kPrepHeads; ++i) {
      const int h = h0 + kWarps * i;
      if (h < a.heads) scan_chunk(scans[(int64_t(b) * a.heads + h) * chunks + c], raw[i], rows, a, h);
    }
  }
  for (int g = 0; g < a.groups; ++g) {
    ptx::cp_async_wait_all();
    __syncthreads();  // group g's tiles are in
    CbAcc acc = {};
    cb_tiles<T, kN>(acc, Cs, Bs);
    T* const dst = cb + ((int64_t(b) * a.groups + g) * chunks + c) * (kChunk * kChunk);
    for_cb_pairs([&](int j, int half, int l, int s) {
      store_pair(dst + l * kChunk + s, acc[j][2 * half], acc[j][2 * half + 1]);
    });
    if (g + 1 < a.groups) {
      __syncthreads();  // every warp is done with group g's tiles
      copy(g + 1);
    }
  }
}

template <class T, int kN>
constexpr size_t prep_smem() {
  return 2 * size_t(Tiles<T, kN>::kBC) * sizeof(T);
}
template <class T, int kN>
constexpr size_t piece_state_smem() {
  using L = Tiles<T, kN>;
  return kPieceStages * (size_t(L::kX + L::kBC) * sizeof(T) + sizeof(PieceScan));
}
static_assert(2 * (piece_state_smem<bf16, 128>() + 1024) <= 228 * 1024, "two BF16 pass-1 blocks must fit one");

// Pass 1. Block (b, h, piece): the state its piece leaves from a zero start into slot piece + 1 of
// slots [B*H, 1 + pieces, P*N], the piece's summed a_last into log_decays [B*H, pieces]; the block of
// piece 0 also copies the initial state (when given) into slot 0. Chunks (x, B and pass 0's scan) are
// copied kPieceStages - 1 ahead. Two BF16 blocks a multiprocessor, with room for four stages: at H 32
// the plan has 7 x 32 pass-1 blocks, under two per multiprocessor, so a third would stand empty.
template <class T>
constexpr int kPieceBlocksPerSm = sizeof(T) == 2 ? 2 : 1;

template <class T, int kN>
__global__ void __launch_bounds__(kThreads, kPieceBlocksPerSm<T>)
    piece_state_kernel(Args<T> a, Plan plan, const float* __restrict__ state0, float* __restrict__ slots,
                       float* __restrict__ log_decays, const ChunkScan* __restrict__ scans) {
  pdl::wait_for_previous_grid();  // launched overlapped (pdl.cuh): nothing read before
  pdl::let_next_grid_start();
  using L = Tiles<T, kN>;
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kStage = L::kX + L::kBC;  // a stage: x, then B
  T* const tiles = reinterpret_cast<T*>(smem);
  PieceScan* const scan = reinterpret_cast<PieceScan*>(tiles + kPieceStages * kStage);

  const BlockCoords bc = block_coords(a);
  const int P = a.head_dim, N = a.state_dim;
  const int64_t PN = int64_t(P) * N;
  float* const head_slots = slots + bc.bh * (1 + plan.pieces()) * PN;
  if (bc.part == 0 && state0)
    for (int64_t i = threadIdx.x; i < PN; i += kThreads) head_slots[i] = state0[bc.bh * PN + i];

  const int segment = bc.part / plan.pieces_per_segment, piece = bc.part % plan.pieces_per_segment;
  const int c_begin = segment * plan.chunks_per_segment + piece * plan.chunks_per_piece;
  const int c_end = min(c_begin + plan.chunks_per_piece, (segment + 1) * plan.chunks_per_segment);
  // Queues chunk c's x, B and scan into stage (c - c_begin) % kPieceStages (no commit).
  auto copy = [&](int c) {
    const int stage = (c - c_begin) % kPieceStages;
    T* const Xs = tiles + stage * kStage;
    const int64_t row0 = int64_t(bc.b) * a.length + int64_t(c) * kChunk;
    const int rows = chunk_rows(a.length, c);
    copy_chunk_async(Xs, typename L::X{}, a.x + int64_t(bc.h) * P, a.ldx, row0, rows, P);
    copy_chunk_async(Xs + L::kX, typename L::BC{}, a.B + int64_t(bc.g) * N, a.ldB, row0, rows, N);
    copy_bytes_async(&scan[stage], &scans[bc.bh * plan.chunks + c].weight[0], sizeof(PieceScan));
  };
  zero_shared(tiles, kPieceStages * size_t(kStage) * sizeof(T));
  __syncthreads();
  // One commit group per chunk, empty past the end, so that group i always holds chunk c_begin + i.
#pragma unroll
  for (int i = 0; i < kPieceStages - 1; ++i) {
    if (c_begin + i < c_end) copy(c_begin + i);
    ptx::cp_async_commit();
  }

  StateTiles<kN, kHeadDimTile> S = {};
  float log_decay = 0.0f;
  for (int c = c_begin; c < c_end; ++c) {
    const int stage = (c - c_begin) % kPieceStages;
    T* const Xs = tiles + stage * kStage;
    ptx::cp_async_wait_groups<kPieceStages - 2>();  // chunk c's group; the kPieceStages - 2 after it may fly
    __syncthreads();  // chunk c's tiles are in; every warp is done with chunk c - 1 (the stage refilled next)
    if (c + kPieceStages - 1 < c_end) copy(c + kPieceStages - 1);
    ptx::cp_async_commit();
    update_state<T, kN, kHeadDimTile>(S, Xs, Xs + L::kX, scan[stage], c > c_begin, 0);
    log_decay += scan[stage].alast;
  }
  store_state<kN, kHeadDimTile>(S, head_slots + (bc.part + 1) * PN, 0, P, N);
  if (threadIdx.x == 0) log_decays[bc.bh * plan.pieces() + bc.part] = log_decay;
}

// Rows [row0, row0 + kRows) of the state entering a chunk, from pass 2's shared tile Ss (or zeros
// where no state entered: has_state false) into dst [P][N] of T, 16 bytes a piece (N % (16 / sizeof(T))
// == 0 and dst 16-byte aligned, as chunked_supports and the caller's allocation give).
template <class T, int kN, int kRows>
__device__ __forceinline__ void save_state(T* dst, const T* Ss, bool has_state, int row0, int P, int N) {
  using S = typename Tiles<T, kN>::S;
  constexpr int kPieces = kN / S::kVec;
  for (int e = int(threadIdx.x); e < kRows * kPieces; e += kThreads) {
    const int p = row0 + e / kPieces, n = (e % kPieces) * S::kVec;
    if (p < P && n < N)
      *reinterpret_cast<float4*>(dst + int64_t(p) * N + n) =
          has_state ? *reinterpret_cast<const float4*>(Ss + S::at(p, n)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
}

// Pass 2. Block (b, h, segment, slice of kRows = plan.slice_rows rows of the state): y's channels of its
// rows over the segment's chunks; the last segment writes its rows of the final state into `state`
// (when given). With `saved` (training's forward, ssd_backward's chunk states), each chunk's entering
// state as the products use it (rounded to T) goes out too, [B*H][chunks][P*N]: zeros for chunk 0
// without an initial state. The state entering segment 0 is `state` itself when there is one segment,
// else its copy in slot 0 (the last segment overwrites `state` while segment 0 may not have read it); each block
// reads and writes only its own rows. `slots` and `log_decays` as pass 1 left them (unused with one
// segment); scans and C Bᵀ as pass 0 did, except for a sequence of one chunk (a prompt's short suffix),
// where each block makes its head's scan and its group's C Bᵀ itself, rounded as pass 0 stores it (the
// same bits), and pass 0 is not launched: one kernel fewer a layer. The slices of a (b, h, segment)
// share its x, B, C, scans and C Bᵀ, each copying (or making) them and masking C Bᵀ as the whole block
// would.
// Pass-2 blocks meant to share a multiprocessor: for BF16 two (at most 128 registers a thread and
// 106 KB of shared memory each at N 128), so one block's barriers and latencies overlap the other's
// work; for F32 one (its tiles and 3xTF32 fragments take twice the room).
template <class T>
constexpr int kScanBlocksPerSm = sizeof(T) == 2 ? 2 : 1;

template <class T, int kN, int kRows>
__global__ void __launch_bounds__(kThreads, kScanBlocksPerSm<T>)
    chunk_scan_kernel(Args<T> a, Plan plan, float* __restrict__ state, const float* __restrict__ slots,
                      const float* __restrict__ log_decays, const ChunkScan* __restrict__ scans,
                      const T* __restrict__ cb, T* __restrict__ saved) {
  pdl::wait_for_previous_grid();  // launched overlapped (pdl.cuh): nothing read before
  pdl::let_next_grid_start();
  using L = Tiles<T, kN>;
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kStage = L::kX + 2 * L::kBC;  // a stage: x, B, then C
  T* const tiles = reinterpret_cast<T*>(smem);
  T* const Ms = tiles + 2 * kStage;
  T* const Ss = Ms + L::kM;
  ChunkScan* const scan = reinterpret_cast<ChunkScan*>(Ss + L::kS);

  const BlockCoords bc = block_coords(a);
  const int P = a.head_dim, N = a.state_dim;
  const int64_t PN = int64_t(P) * N;
  // Whole-head blocks (the only ones once the segments fill the GPU) have one slice: part is the segment.
  const int segment = kRows == kHeadDimTile ? bc.part : bc.part / plan.slices;
  const int row0 = kRows == kHeadDimTile ? 0 : (bc.part % plan.slices) * kRows;
  const bool state_io = state != nullptr, last_segment = segment == plan.segments - 1;
  const int c_begin = segment * plan.chunks_per_segment;
  const int c_end = min(plan.chunks, c_begin + plan.chunks_per_segment);
  const bool own_prep = plan.chunks == 1;
  // Queues chunk c's x, B, C and scan (unless made here) into stage (c - c_begin) & 1, and commits.
  auto copy = [&](int c) {
    const int stage = (c - c_begin) & 1;
    T* const Xs = tiles + stage * kStage;
    const int64_t row0 = int64_t(bc.b) * a.length + int64_t(c) * kChunk;
    const int rows = chunk_rows(a.length, c);
    copy_chunk_async(Xs, typename L::X{}, a.x + int64_t(bc.h) * P, a.ldx, row0, rows, P);
    copy_chunk_async(Xs + L::kX, typename L::BC{}, a.B + int64_t(bc.g) * N, a.ldB, row0, rows, N);
    copy_chunk_async(Xs + L::kX + L::kBC, typename L::BC{}, a.C + int64_t(bc.g) * N, a.ldC, row0, rows, N);
    if (!own_prep) copy_bytes_async(&scan[stage], &scans[bc.bh * plan.chunks + c], sizeof(ChunkScan));
    ptx::cp_async_commit();
  };

  zero_shared(tiles, 2 * size_t(kStage) * sizeof(T));
  __syncthreads();
  copy(c_begin);
  CbPairs<T> cb_next;
  if (!own_prep) {
    load_cb(cb_next, cb_of(a, cb, plan.chunks, bc.b, bc.g, c_begin));
  } else if (threadIdx.x < 32) {  // seen by every warp after the loop's first barrier
    float raw[2];
    load_raw_dt(a, bc, 0, raw);
    scan_chunk(scan[0], raw, chunk_rows(a.length, 0), a, bc.h);
  }

  // The state entering the segment: the initial state carried through the pieces before.
  StateTiles<kN, kRows> S = {};
  const float* const head_slots = plan.segments > 1 ? slots + bc.bh * (1 + plan.pieces()) * PN : nullptr;
  if (state_io) add_state<kN, kRows>(S, plan.segments == 1 ? state + bc.bh * PN : head_slots, row0, P, N, 0.0f);
  for (int piece = 0; piece < segment * plan.pieces_per_segment; ++piece)
    add_state<kN, kRows>(S, head_slots + (piece + 1) * PN, row0, P, N,
                         expf(log_decays[bc.bh * plan.pieces() + piece]));

  const float D = a.D ? a.D[bc.h] : 0.0f;
  for (int c = c_begin; c < c_end; ++c) {
    const int stage = (c - c_begin) & 1;
    const ChunkScan& sc = scan[stage];
    const bool has_prev = c > 0 || state_io;
    T* const Xs = tiles + stage * kStage;
    T* const Bs = Xs + L::kX;
    T* const Cs = Bs + L::kBC;
    ptx::cp_async_wait_all();
    __syncthreads();  // chunk c's tiles and scan are in; every warp is done with chunk c - 1
    if (c + 1 < c_end) copy(c + 1);
    if (own_prep) {
      CbAcc raw_cb = {};
      cb_tiles<T, kN>(raw_cb, Cs, Bs);
      for_cb_pairs([&](int j, int half, int, int) {
        cb_next.v[j][half] = CbPairs<T>::pack(raw_cb[j][2 * half], raw_cb[j][2 * half + 1]);
      });
    }
    if (has_prev)
      for_state_pairs<kN, kRows>(row0, [&](int mt, int nt, int half, int p, int n) {
        store_pair(Ss + L::S::at(p, n), S[mt][nt][2 * half], S[mt][nt][2 * half + 1]);
      });
    {
      CbAcc acc = {};
      for_cb_pairs([&](int j, int half, int, int) {
        acc[j][2 * half] = cb_next.first(j, half);
        acc[j][2 * half + 1] = cb_next.second(j, half);
      });
      store_masked_cb<T, kN>(Ms, acc, sc, D);
    }
    __syncthreads();  // Ms and Ss complete
    if (saved) save_state<T, kN, kRows>(saved + (bc.bh * plan.chunks + c) * PN, Ss, has_prev, row0, P, N);
    T* const y = a.y + (int64_t(bc.b) * a.length + int64_t(c) * kChunk) * a.ldy + int64_t(bc.h) * P;
    chunk_output<T, kN, kRows>(y, a.ldy, chunk_rows(a.length, c), P, Cs, Ss, Ms, Xs, sc, has_prev, row0);
    if (c + 1 < c_end) load_cb(cb_next, cb_of(a, cb, plan.chunks, bc.b, bc.g, c + 1));  // in flight meanwhile
    if (c + 1 < c_end || (last_segment && state_io)) update_state<T, kN, kRows>(S, Xs, Bs, sc, has_prev, row0);
  }
  if (last_segment && state_io) store_state<kN, kRows>(S, state + bc.bh * PN, row0, P, N);
}

// Pass 2 with blocks of `rows` rows of the state (kHeadDimTile, 32 or 16) for heads of head_dim rows.
inline void set_slice_rows(Plan& plan, int head_dim, int rows) {
  plan.slice_rows = rows;
  plan.slices = (head_dim + rows - 1) / rows;
}

// How to cut the chunks of each of `heads` (batch * H) sequences: as many segments as `scan_resident`
// blocks of pass 2 allow at once (one wave), at most kMaxSegments; pieces short enough that
// `piece_resident` blocks of pass 1 fill the GPU too. Every segment but the last has
// chunks_per_segment chunks, and none of its pieces is empty. Then, when heads * segments blocks leave
// room in that wave (few chunks: short sequences), a head's rows in slices of 32 or 16: the most
// blocks that still fit it, only where slices add blocks (so never once the segments fill the wave).
inline Plan make_plan(int length, int head_dim, int state_dim, int64_t heads, int64_t scan_resident,
                      int64_t piece_resident) {
  Plan plan;
  plan.state_tile = state_dim <= 64 ? 64 : 128;
  plan.chunks = (length + kChunk - 1) / kChunk;
  const int segments = int(std::clamp<int64_t>(scan_resident / heads, 1, std::min(kMaxSegments, plan.chunks)));
  plan.chunks_per_segment = (plan.chunks + segments - 1) / segments;
  plan.segments = (plan.chunks + plan.chunks_per_segment - 1) / plan.chunks_per_segment;
  const int64_t split = plan.segments > 1 ? piece_resident / (heads * (plan.segments - 1)) : 1;
  const int pieces = int(std::clamp<int64_t>(split, 1, plan.chunks_per_segment));
  plan.chunks_per_piece = (plan.chunks_per_segment + pieces - 1) / pieces;
  plan.pieces_per_segment = (plan.chunks_per_segment + plan.chunks_per_piece - 1) / plan.chunks_per_piece;
  set_slice_rows(plan, head_dim, kHeadDimTile);
  for (const int rows : {32, 16}) {
    const int slices = (head_dim + rows - 1) / rows;
    if (slices > plan.slices && heads * plan.segments * slices <= scan_resident) set_slice_rows(plan, head_dim, rows);
  }
  return plan;
}

// Where a launch's scratch goes, each part 16-byte aligned: the state slots [B*H][1 + pieces][P*N] and
// the pieces' log-decays [B*H][pieces] (passes 1 -> 2; none with one segment), then the scans
// [B*H][chunks] and the raw C Bᵀ [B*G][chunks][kChunk][kChunk] in T (pass 0 -> passes 1 and 2).
template <class T>
struct Scratch {
  float* slots;
  float* log_decays;
  ChunkScan* scans;
  T* cb;
};
inline size_t round4(size_t floats) { return (floats + 3) / 4 * 4; }
template <class T>
size_t piece_scratch_floats(const Args<T>& a, const Plan& plan) {
  if (plan.segments == 1) return 0;
  const size_t heads = size_t(a.batch) * a.heads;
  return round4(heads * (1 + plan.pieces()) * a.head_dim * a.state_dim + heads * plan.pieces());
}
// The floats of scratch a chunked launch needs.
template <class T>
size_t chunked_scratch_floats(const Args<T>& a, const Plan& plan) {
  const size_t heads = size_t(a.batch) * a.heads;
  return piece_scratch_floats(a, plan) + heads * plan.chunks * (sizeof(ChunkScan) / 4) +
         round4(size_t(a.batch) * a.groups * plan.chunks * kChunk * kChunk * sizeof(T) / 4);
}
template <class T>
Scratch<T> scratch_parts(float* scratch, const Args<T>& a, const Plan& plan) {
  const size_t heads = size_t(a.batch) * a.heads;
  float* const scans = scratch + piece_scratch_floats(a, plan);
  float* const cb = scans + heads * plan.chunks * (sizeof(ChunkScan) / 4);
  return {scratch, scratch + heads * (1 + plan.pieces()) * a.head_dim * a.state_dim,
          reinterpret_cast<ChunkScan*>(scans), reinterpret_cast<T*>(cb)};
}

}  // namespace ssm::ops::cuda::ssd_kernels
