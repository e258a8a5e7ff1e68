// The kernels of ops::cuda::selective_scan_backward (launched from selective_scan_backward.cu). No
// engine headers but the scan's math, so that dev/cuda/selective_scan_backward_host_check.cpp runs them
// on the CPU (it brings its own versions of the math).
//
// Per channel d and state n (dt_t = softplus(delta_t + bias_d), a_t = exp(dt_t A_dn)), as on the CPU:
//   h_t = a_t h_{t-1} + dt_t B_tn u_t,   y_t = Σ_n C_tn h_t + D u_t,   out_t = y_t silu(z_t).
// Walking t downwards with the adjoint ḡ (∂L/∂h_t from the tokens after t):
//   gy = dout silu(z),  g = ḡ + gy C_t,  ḡ ← g a_t,  dC_tn += gy h_t,  dB_tn += g dt u,
//   du = gy D + dt Σ_n g B,  ddt = Σ_n g a_t h_{t-1} A + u Σ_n g B,  dA += g a_t h_{t-1} dt,
// where a_t h_{t-1} = h_t - dt u B_t: the walk back needs h_t only, and one decay.
//
// The sequence's chunks run in parallel (at batch 1, D channels alone are too few threads for the GPU):
//   A. summary_kernel: each (row, chunk c >= 1, channel, state) walks its chunk back from a zero
//      adjoint: the adjoint it sends to the previous chunk, and the chunk's Σ dt;
//   B. adjoint_carry_kernel: each (row, channel, state) walks the chunks back: the adjoint arriving
//      at each chunk's end;
//   C. gradient_kernel: each chunk from its saved state and its arriving adjoint.
// Threads of A and C: a channel's states over kLanes lanes of one warp, kS = 8 states a lane in
// registers (N 4: 4 states, one lane), so that the sums over states (du, ddelta, dz) are a lane's own
// plus at most three shuffles; a warp holds kWarpChannels channels (16 at N 16).
// Kernel C takes its chunk in parts of kPart tokens from the last: it walks forward from the chunk's
// start, keeping the state at each of the part's sub-chunks of kSub tokens (shared memory), then takes
// the sub-chunks from the last: forward again from the kept state with the kSub tokens' states in
// registers, then back. The sums over channels per (token, state) (dB, dC) are halving exchanges
// between a warp's lanes (each step keeps half the values and adds the partner's copy of that half),
// then one sum over the block's warps in shared memory per sub-chunk. Every sum (over states and
// channels; dA, dD and ddelta_bias over rows and chunks; dB and dC over channel blocks) is added in a
// fixed order: two runs give the same bits.
//
// Cost (batch 1, D 4096, N 16, BF16, chunks of 64), per token and warp of 16 channels: the walk back
// ~190 floating-point instructions (8 states x 12, the exchanges' 60 with their selects) and the
// forward steps ~45 each, at 2.25 a token (the parts' walks from the chunk's start); 4 decays per
// (token, state) with A's. Shared memory 72 KB a block, 168 registers: three blocks (12 warps) a
// multiprocessor. Measured (ncu, 64K tokens): ~340 instructions a token and warp inside a sub-chunk
// (~90 of them integer and control), 57% of issue slots; docs/performance.md, the training log's step 12.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "element.cuh"
#ifndef SSM_SCAN_BACKWARD_HOST_CHECK
#include "selective_scan_math.cuh"  // decay, dt_softplus, sigmoid_of, softplus_grad_from_value, kLog2e
#endif

namespace ssm::ops::cuda::scan_backward_kernels {

constexpr int kWarps = 4;  // warps of a block of kernels A and C
constexpr int kThreads = 32 * kWarps;
constexpr int kSub = 8;         // tokens whose states kernel C keeps in registers
constexpr int kPart = 32;       // tokens whose sub-chunk start states it keeps in shared memory
constexpr int kMaxChunk = 64;   // longest chunk kernel C holds in shared memory
constexpr int kCarryBatch = 16;  // chunk summaries the carry kernel loads a batch (two in flight)
constexpr float kLn2 = 0.6931471805599453f;

// How kernels A and C spread a block's channels and a channel's kN (compiled width >= N) states:
// lane = j * kWarpChannels + cw holds states [j kS, (j + 1) kS) of the warp's channel cw.
template <int kN>
struct Layout {
  static constexpr int kS = kN < 8 ? kN : 8;  // states per lane
  static constexpr int kLanes = kN / kS;      // lanes per channel (1, 2, 4 or 8)
  static constexpr int kWarpChannels = 32 / kLanes;
  static constexpr int kChannels = kWarps * kWarpChannels;  // per block
  // A token's dB and dC terms of a lane (2 kS values), summed over the warp's channels: a lane keeps
  // kKept of the sums.
  static constexpr int kValues = 2 * kS;
  static constexpr int kKept = kValues > kWarpChannels ? kValues / kWarpChannels : 1;
};

template <class Act>
struct BwdArgs {
  const Act *u, *delta, *B, *C, *z, *dy;  // row b * T + t of each at row * ld_<name>; z may be null
  int64_t ld_u, ld_delta, ld_B, ld_C, ld_z, ld_dy;
  Act *du, *ddelta, *dz;  // null: not computed
  int64_t ld_du, ld_ddelta, ld_dz;
  const float *delta_bias, *A, *D;  // [channels] or null, [channels, N], [channels] or null
  const float* chunk_states;        // [batch, chunks, channels, N]: the state at each chunk's start
  float* carry;                     // [batch, chunks, channels, N]: A's summaries, then B's arriving
                                    // adjoints; null with one chunk
  float* dt_sum;                    // [batch, chunks, channels]: A's Σ dt
  float* dA_part;                   // [batch * chunks, channels, N] or null
  float *dD_part, *dbias_part;      // [batch * chunks, channels] or null
  float *dB_part, *dC_part;         // [channel blocks, batch * T, N] or null
  float* dstate0;                   // [batch, channels, N] or null
  int64_t batch, T, channels, N, chunk_len, chunks;
  bool softplus;
};

// Shared memory of kernel A for chunks of q tokens: C [q][kN], then (dt, gy) [q][kChannels].
template <int kN>
struct SummaryPlan {
  __host__ __device__ static constexpr int64_t bytes(int64_t q) {
    return (q * kN + 2 * q * Layout<kN>::kChannels) * int64_t(sizeof(float));
  }
};

// Shared memory of kernel C for chunks of q tokens, carved in this order: C and B [q][kN]; dt
// [q][kChannels]; the kept states [kPart / kSub][kS][kThreads]; two exchange buffers [kWarps][kSub][2 kN]
// (a warp's dB and dC sums, used in turn); u, dout and z as loaded [q][kChannels] (Act).
template <class Act, int kN>
struct GradientPlan {
  using L = Layout<kN>;
  __host__ __device__ static constexpr int64_t kept_rows(int64_t q) {
    return ((q < kPart ? q : kPart) + kSub - 1) / kSub;
  }
  __host__ __device__ static constexpr int64_t floats(int64_t q) {
    return 2 * q * kN + q * L::kChannels + kept_rows(q) * L::kS * kThreads + 2 * kWarps * kSub * 2 * kN;
  }
  __host__ __device__ static constexpr int64_t bytes(int64_t q) {
    return floats(q) * int64_t(sizeof(float)) + 3 * q * L::kChannels * int64_t(sizeof(Act));
  }
};

// kS consecutive floats of shared memory into registers (16 bytes a load from kS 4 on).
template <int kS>
__device__ __forceinline__ void load_states(const float* from, float (&to)[kS]) {
#pragma unroll
  for (int s = 0; s < kS; s += 4) {
    const float4 v = *reinterpret_cast<const float4*>(from + s);
    to[s] = v.x, to[s + 1] = v.y, to[s + 2] = v.z, to[s + 3] = v.w;
  }
}

// Rows [row0, row0 + tokens) of B or C ([row][N] at ld) into shared memory as F32 [tokens][kN], zeros
// past N.
template <class Act, int kN>
__device__ __forceinline__ void stage_states(const Act* src, int64_t ld, int64_t N, int64_t row0, int tokens,
                                             float* dst) {
  for (int i = threadIdx.x; i < tokens * kN; i += kThreads) {
    const int l = i / kN, n = i % kN;
    dst[i] = n < N ? to_float(src[(row0 + l) * ld + n]) : 0.0f;
  }
}

// The block's (token, channel) pairs of a chunk, for staging: a thread keeps one channel, d = block_d0 +
// threadIdx.x % kC, and takes every (kThreads / kC)-th token l from threadIdx.x / kC. load(row, d) reads a
// pair's inputs (an existing channel's only); store(i, real, bias, inputs) gets them with the pair's index
// l * kC + d - block_d0 in [tokens][kC], whether the channel exists, and its dt bias. A thread loads
// kStageAhead tokens' inputs before it stores any: loaded and used one token at a time, each waited for
// its loads, and the staging took ~40% of kernel A's warps' time and ~20% of kernel C's (ncu, 4K tokens).
constexpr int kStageAhead = 8;
template <int kC, class Act, class Load, class Store>
__device__ __forceinline__ void stage_chunk_pairs(const BwdArgs<Act>& a, int64_t row0, int tokens, int64_t block_d0,
                                                  Load&& load, Store&& store) {
  constexpr int kStride = kThreads / kC;
  const int cc = threadIdx.x % kC;
  const int64_t d = block_d0 + cc;
  const bool real = d < a.channels;
  const float bias = real && a.delta_bias ? a.delta_bias[d] : 0.0f;
  using Inputs = decltype(load(row0, d));
  for (int l0 = threadIdx.x / kC; l0 < tokens; l0 += kStride * kStageAhead) {
    Inputs in[kStageAhead];
#pragma unroll
    for (int k = 0; k < kStageAhead; ++k) {
      const int l = l0 + k * kStride;
      if (real && l < tokens) in[k] = load(row0 + l, d);
    }
#pragma unroll
    for (int k = 0; k < kStageAhead; ++k) {
      const int l = l0 + k * kStride;
      if (l < tokens) store(l * kC + cc, real, bias, in[k]);
    }
  }
}

// dt = softplus(delta + bias), or delta + bias.
template <class Act>
__device__ __forceinline__ float dt_of(const BwdArgs<Act>& a, float delta, float bias) {
  return a.softplus ? dt_softplus<Act>(delta + bias) : delta + bias;
}

// Sums v over the lanes whose bits kMask, 2 kMask, ... below kEnd differ (a warp's channel lanes) by
// halving exchanges: each step keeps one half of the values and adds the partner lane's copy of that
// half (kWidth: the values still held). Afterwards this lane holds the sums of values [first, first +
// its width), first returned by adding; where there are fewer values than channel lanes the last steps
// add whole values and several lanes hold the same sums (owner: the lanes whose bits of those steps are
// 0). Recursive so that every index is known at compile time (the values stay in registers).
template <int kWidth, int kMask, int kEnd, int kValues>
__device__ __forceinline__ void sum_over_channels(float (&v)[kValues], int lane, int& first) {
  if constexpr (kMask < kEnd) {
    if constexpr (kWidth > 1) {
      constexpr int kHalf = kWidth / 2;
      const bool upper = lane & kMask;
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        const float send = upper ? v[i] : v[i + kHalf];
        const float keep = upper ? v[i + kHalf] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kMask);
      }
      if (upper) first += kHalf;
      sum_over_channels<kHalf, 2 * kMask, kEnd>(v, lane, first);
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], kMask);
      sum_over_channels<1, 2 * kMask, kEnd>(v, lane, first);
    }
  }
}

// Kernel A. Grid: (channel blocks of kChannels, chunks - 1, batch).
template <class Act, int kN>
__global__ void __launch_bounds__(kThreads) summary_kernel(const BwdArgs<Act> a) {
  using L = Layout<kN>;
  constexpr int kS = L::kS, kC = L::kChannels;
  extern __shared__ __align__(16) float smem[];
  const int64_t b = blockIdx.z, chunk = blockIdx.y + 1;
  const int64_t t0 = chunk * a.chunk_len, row0 = b * a.T + t0, bc = b * a.chunks + chunk;
  const int q = int(a.chunk_len), tokens = int(min(a.chunk_len, a.T - t0));
  const int64_t block_d0 = int64_t(blockIdx.x) * kC;
  float* const Cs = smem;                                        // [q][kN]
  float2* const dt_gy = reinterpret_cast<float2*>(Cs + q * kN);  // [q][kC]

  stage_states<Act, kN>(a.C, a.ld_C, a.N, row0, tokens, Cs);
  struct Inputs {
    Act delta, dy, z;
  };
  stage_chunk_pairs<kC>(
      a, row0, tokens, block_d0,
      [&](int64_t row, int64_t d) {
        return Inputs{a.delta[row * a.ld_delta + d], a.dy[row * a.ld_dy + d], a.z ? a.z[row * a.ld_z + d] : Act(0.0f)};
      },
      [&](int i, bool real, float bias, const Inputs& in) {
        float dt = 0.0f, gy = 0.0f;
        if (real) {
          dt = dt_of(a, to_float(in.delta), bias);
          gy = to_float(in.dy);
          if (a.z) {
            const float z = to_float(in.z);
            gy *= z * sigmoid_of<Act>(z);
          }
        }
        dt_gy[i] = make_float2(dt, gy);
      });
  __syncthreads();

  const int lane = threadIdx.x % 32, j = lane / L::kWarpChannels;
  const int c = threadIdx.x / 32 * L::kWarpChannels + lane % L::kWarpChannels;
  const int64_t d = block_d0 + c;
  const bool active = d < a.channels;
  float A2[kS], adj[kS];
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    const int64_t n = j * kS + s;
    A2[s] = active && n < a.N ? a.A[d * a.N + n] * kLog2e : 0.0f;
    adj[s] = 0.0f;
  }
  float dt_sum = 0.0f;
#pragma unroll 4
  for (int l = tokens - 1; l >= 0; --l) {
    const float2 v = dt_gy[l * kC + c];
    float Cv[kS];
    load_states<kS>(Cs + l * kN + j * kS, Cv);
    dt_sum += v.x;
#pragma unroll
    for (int s = 0; s < kS; ++s) adj[s] = (adj[s] + v.y * Cv[s]) * decay<Act>(A2[s] * v.x);
  }
  if (!active) return;
#pragma unroll
  for (int s = 0; s < kS; ++s)
    if (j * kS + s < a.N) a.carry[(bc * a.channels + d) * a.N + j * kS + s] = adj[s];
  if (j == 0) a.dt_sum[bc * a.channels + d] = dt_sum;
}

// Kernel C. Grid: (channel blocks of kChannels, chunks, batch). Three blocks a multiprocessor at N 16
// (their shared memory fits; 168 registers a thread).
template <class Act, int kN>
__global__ void __launch_bounds__(kThreads, kN == 16 ? 3 : 1) gradient_kernel(const BwdArgs<Act> a) {
  using L = Layout<kN>;
  using Plan = GradientPlan<Act, kN>;
  constexpr int kS = L::kS, kC = L::kChannels, kWC = L::kWarpChannels, kKept = L::kKept;
  extern __shared__ __align__(16) float smem[];
  const int64_t b = blockIdx.z, chunk = blockIdx.y;
  const int64_t t0 = chunk * a.chunk_len, row0 = b * a.T + t0, bc = b * a.chunks + chunk;
  const int q = int(a.chunk_len), tokens = int(min(a.chunk_len, a.T - t0));
  const int64_t block_d0 = int64_t(blockIdx.x) * kC;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, j = lane / kWC;
  const int c = warp * kWC + lane % kWC;
  const int64_t d = block_d0 + c;
  const bool active = d < a.channels;

  float* const Cs = smem;                                                           // [q][kN]
  float* const Bs = Cs + q * kN;                                                    // [q][kN]
  float* const sh_dt = Bs + q * kN;                                                 // [q][kC]
  float* const kept = sh_dt + q * kC;                                               // [kPart / kSub][kS][kThreads]
  float* const exchange = kept + Plan::kept_rows(q) * kS * kThreads;                // [2][kWarps][kSub][2 kN]
  Act* const sh_u = reinterpret_cast<Act*>(exchange + 2 * kWarps * kSub * 2 * kN);  // [q][kC] each
  Act* const sh_dout = sh_u + q * kC;
  Act* const sh_z = sh_dout + q * kC;

  stage_states<Act, kN>(a.C, a.ld_C, a.N, row0, tokens, Cs);
  stage_states<Act, kN>(a.B, a.ld_B, a.N, row0, tokens, Bs);
  struct Inputs {
    Act delta, u, dy, z;
  };
  stage_chunk_pairs<kC>(
      a, row0, tokens, block_d0,
      [&](int64_t row, int64_t dd) {
        return Inputs{a.delta[row * a.ld_delta + dd], a.u[row * a.ld_u + dd], a.dy[row * a.ld_dy + dd],
                      a.z ? a.z[row * a.ld_z + dd] : Act(0.0f)};
      },
      [&](int i, bool real, float bias, const Inputs& in) {
        sh_dt[i] = real ? dt_of(a, to_float(in.delta), bias) : 0.0f;
        sh_u[i] = real ? in.u : Act(0.0f);
        sh_dout[i] = real ? in.dy : Act(0.0f);
        sh_z[i] = real ? in.z : Act(0.0f);
      });
  __syncthreads();

  float A2[kS], h[kS], adj[kS], dA[kS];
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    const int64_t n = j * kS + s;
    const bool real = active && n < a.N;
    A2[s] = real ? a.A[d * a.N + n] * kLog2e : 0.0f;
    adj[s] = real && a.carry ? a.carry[(bc * a.channels + d) * a.N + n] : 0.0f;
    dA[s] = 0.0f;
  }
  // One token forward: h_t from h_{t-1}.
  auto step = [&](int t) {
    const float dt = sh_dt[t * kC + c], dtu = dt * to_float(sh_u[t * kC + c]);
    float Bv[kS];
    load_states<kS>(Bs + t * kN + j * kS, Bv);
#pragma unroll
    for (int s = 0; s < kS; ++s) h[s] = decay<Act>(A2[s] * dt) * h[s] + dtu * Bv[s];
  };

  const bool want_bc = a.dB_part || a.dC_part;
  const bool owner = lane % kWC < L::kValues;  // see sum_over_channels
  const float skip = active && a.D ? a.D[d] : 0.0f;
  const bool writes = active && j == 0;  // the lane that writes its channel's du, ddelta, dz
  float dD_sum = 0.0f, dbias_sum = 0.0f;  // over the chunk's tokens, this lane's channel
  int exchanges = 0;                      // sub-chunks done: the exchange buffers are used in turn
  // The parts from the last: forward from the chunk's start to the part's, then on to its last
  // sub-chunk keeping each sub-chunk's start state; then its sub-chunks from the last.
  for (int p0 = (tokens - 1) / kPart * kPart; p0 >= 0; p0 -= kPart) {
#pragma unroll
    for (int s = 0; s < kS; ++s)
      h[s] = active && j * kS + s < a.N ? a.chunk_states[(bc * a.channels + d) * a.N + j * kS + s] : 0.0f;
    for (int t = 0; t < p0; t += kSub) {
#pragma unroll
      for (int k = 0; k < kSub; ++k) step(t + k);
    }
    const int subs = (min(kPart, tokens - p0) + kSub - 1) / kSub;
    for (int sub = 0; sub < subs; ++sub) {
#pragma unroll
      for (int s = 0; s < kS; ++s) kept[(sub * kS + s) * kThreads + tid] = h[s];
      if (sub + 1 == subs) break;
#pragma unroll
      for (int k = 0; k < kSub; ++k) step(p0 + sub * kSub + k);
    }

    for (int sub = subs - 1; sub >= 0; --sub) {
      const int s0 = p0 + sub * kSub, len = min(kSub, tokens - s0);
      float H[kSub][kS];  // h_t of the sub-chunk's tokens
#pragma unroll
      for (int s = 0; s < kS; ++s) h[s] = kept[(sub * kS + s) * kThreads + tid];
#pragma unroll
      for (int k = 0; k < kSub; ++k) {
        if (k >= len) break;
        step(s0 + k);
#pragma unroll
        for (int s = 0; s < kS; ++s) H[k][s] = h[s];
      }

      float sums[kSub][kKept];  // this lane's share of the warp's dB, dC sums per token
      int first = 0;
#pragma unroll
      for (int k = kSub - 1; k >= 0; --k) {
        if (k >= len) continue;
        const int t = s0 + k, at = t * kC + c;
        const float dt = sh_dt[at], u = to_float(sh_u[at]), dout = to_float(sh_dout[at]), dtu = dt * u;
        float gy = dout, dz_factor = 0.0f;
        if (a.z) {
          const float z = to_float(sh_z[at]), sg = sigmoid_of<Act>(z);
          gy = dout * z * sg;
          dz_factor = dout * sg * (1.0f + z * (1.0f - sg));
        }
        float Cv[kS], Bv[kS], terms[2 * kS];  // terms: dB's then dC's of this lane's states
        load_states<kS>(Cs + t * kN + j * kS, Cv);
        load_states<kS>(Bs + t * kN + j * kS, Bv);
        float gB = 0.0f, ghA2 = 0.0f, yC = 0.0f;
#pragma unroll
        for (int s = 0; s < kS; ++s) {
          const float g = adj[s] + gy * Cv[s];
          adj[s] = g * decay<Act>(A2[s] * dt);
          const float gh = g * fmaf(-dtu, Bv[s], H[k][s]);  // g a_t h_{t-1}
          dA[s] += gh * dt;
          ghA2 += gh * A2[s];
          gB += g * Bv[s];
          yC += Cv[s] * H[k][s];
          terms[s] = g * dtu;
          terms[kS + s] = gy * H[k][s];
        }
#pragma unroll
        for (int mask = kWC; mask < 32; mask <<= 1) {  // over the channel's lanes
          gB += __shfl_xor_sync(0xffffffffu, gB, mask);
          ghA2 += __shfl_xor_sync(0xffffffffu, ghA2, mask);
          yC += __shfl_xor_sync(0xffffffffu, yC, mask);
        }
        if (want_bc) {
          first = 0;
          sum_over_channels<2 * kS, 1, kWC>(terms, lane, first);
#pragma unroll
          for (int i = 0; i < kKept; ++i) sums[k][i] = terms[i];
        }
        const float spg = a.softplus ? softplus_grad_from_value<Act>(dt) : 1.0f;
        const float ddelta = (ghA2 * kLn2 + u * gB) * spg;
        dD_sum += gy * u;  // zero past the last channel
        dbias_sum += ddelta;
        if (writes) {
          const int64_t row = row0 + t;
          if (a.du) a.du[row * a.ld_du + d] = from_float<Act>(gy * skip + dt * gB);
          if (a.ddelta) a.ddelta[row * a.ld_ddelta + d] = from_float<Act>(ddelta);
          if (a.dz) a.dz[row * a.ld_dz + d] = from_float<Act>((yC + skip * u) * dz_factor);
        }
      }
      if (!want_bc) continue;  // the same for the whole block
      // The warps' sums into this sub-chunk's exchange buffer, then their sum (in warp order) out.
      float* const buffer = exchange + (exchanges++ & 1) * kWarps * kSub * 2 * kN;
      if (owner) {
#pragma unroll
        for (int k = 0; k < kSub; ++k) {
          if (k >= len) break;
#pragma unroll
          for (int i = 0; i < kKept; ++i) {
            const int value = first + i, e = value / kS * kN + j * kS + value % kS;
            buffer[(warp * kSub + k) * 2 * kN + e] = sums[k][i];
          }
        }
      }
      __syncthreads();
      const int64_t part = int64_t(blockIdx.x) * a.batch * a.T;
      for (int i = tid; i < len * 2 * kN; i += kThreads) {
        const int k = i / (2 * kN), e = i % (2 * kN), n = e % kN;
        float* const out = e < kN ? a.dB_part : a.dC_part;
        if (n >= a.N || !out) continue;
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) sum += buffer[(w * kSub + k) * 2 * kN + e];
        out[(part + row0 + s0 + k) * a.N + n] = sum;
      }
    }
  }

  if (!active) return;
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    const int64_t n = j * kS + s;
    if (n >= a.N) continue;
    if (a.dA_part) a.dA_part[(bc * a.channels + d) * a.N + n] = dA[s];
    if (a.dstate0 && chunk == 0) a.dstate0[(b * a.channels + d) * a.N + n] = adj[s];
  }
  if (j == 0) {
    if (a.dD_part) a.dD_part[bc * a.channels + d] = dD_sum;
    if (a.dbias_part) a.dbias_part[bc * a.channels + d] = dbias_sum;
  }
}

// Kernel B: one thread per (row, channel, state), walking the chunks from the last: the adjoint
// arriving at chunk c's end replaces c's summary, then carries on through the chunk's decay.
__global__ void adjoint_carry_kernel(const float* A, float* carry, const float* dt_sum, int64_t batch,
                                     int64_t channels, int64_t N, int64_t chunks) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * channels * N) return;
  const int64_t n = i % N, d = i / N % channels, b = i / (N * channels);
  const float A2 = A[d * N + n] * kLog2e;
  auto at = [&](int64_t c) { return (b * chunks + c) * channels + d; };
  float arriving = 0.0f;
  // The next batch's summaries are loaded before the current batch's adjoints are stored over theirs.
  float summary[kCarryBatch], sum[kCarryBatch], next_summary[kCarryBatch], next_sum[kCarryBatch];
  auto load = [&](int64_t c0) {
#pragma unroll
    for (int k = 0; k < kCarryBatch; ++k) {
      if (c0 - k >= 1) {
        next_summary[k] = carry[at(c0 - k) * N + n];
        next_sum[k] = dt_sum[at(c0 - k)];
      }
    }
  };
  load(chunks - 1);
  for (int64_t c0 = chunks - 1; c0 >= 1; c0 -= kCarryBatch) {
#pragma unroll
    for (int k = 0; k < kCarryBatch; ++k) summary[k] = next_summary[k], sum[k] = next_sum[k];
    if (c0 - kCarryBatch >= 1) load(c0 - kCarryBatch);
#pragma unroll
    for (int k = 0; k < kCarryBatch; ++k) {
      if (c0 - k < 1) break;
      carry[at(c0 - k) * N + n] = arriving;
      arriving = poly_exp2(A2 * sum[k]) * arriving + summary[k];
    }
  }
  carry[at(0) * N + n] = arriving;
}

// The sums of the partial rows kernel C leaves, all in one launch: dA, dD and ddelta_bias over the
// (batch, chunk) rows, added to the gradients; dB and dC over the channel blocks, written as rows of N.
// A block of kSumThreads takes kSumColumns columns of one sum: each of its warps adds every
// kSumSlices-th row from its first (kRowsAhead rows of loads in flight), then a thread per column adds
// the warps' sums in order. The order depends only on the row count: two runs give the same bits.
constexpr int kSumThreads = 256, kSumSlices = kSumThreads / 32, kSumColumnsPerLane = 4;
constexpr int kSumColumns = 32 * kSumColumnsPerLane, kRowsAhead = 4, kMaxSums = 5;
constexpr size_t kSumSmem = size_t(kSumSlices) * kSumColumns * sizeof(float);

template <class Act>
struct PartialSum {
  const float* parts;  // row r at parts + r * width
  int64_t width, rows;
  float* add_to;  // out[i] += Σ_r (F32 gradients); null: then
  Act* out;       // out[i / n * ld + i % n] = Σ_r
  int64_t n, ld;
};
template <class Act>
struct PartialSums {
  PartialSum<Act> sum[kMaxSums];
  unsigned first_block[kMaxSums + 1];  // sum k's blocks: [first_block[k], first_block[k + 1])
  int count;
  void add(const PartialSum<Act>& s) {
    if (count == 0) first_block[0] = 0;
    sum[count] = s;
    first_block[count + 1] = first_block[count] + unsigned((s.width + kSumColumns - 1) / kSumColumns);
    ++count;
  }
  unsigned blocks() const { return count ? first_block[count] : 0; }
};

template <class Act>
__global__ void __launch_bounds__(kSumThreads) partial_sums_kernel(const PartialSums<Act> p) {
  extern __shared__ __align__(16) float smem[];  // [kSumSlices][kSumColumns]: the warps' sums
  float(*const slice_sums)[kSumColumns] = reinterpret_cast<float(*)[kSumColumns]>(smem);
  int k = 0;
  while (k + 1 < p.count && blockIdx.x >= p.first_block[k + 1]) ++k;
  const PartialSum<Act>& s = p.sum[k];
  const int lane = int(threadIdx.x) % 32, slice = int(threadIdx.x) / 32;
  const int64_t c0 = int64_t(blockIdx.x - p.first_block[k]) * kSumColumns;
  float total[kSumColumnsPerLane] = {};
  for (int64_t r0 = slice; r0 < s.rows; r0 += kSumSlices * kRowsAhead) {
    float v[kRowsAhead][kSumColumnsPerLane];
#pragma unroll
    for (int i = 0; i < kRowsAhead; ++i) {
      const int64_t r = r0 + int64_t(i) * kSumSlices;
#pragma unroll
      for (int j = 0; j < kSumColumnsPerLane; ++j) {
        const int64_t c = c0 + lane + 32 * j;
        v[i][j] = r < s.rows && c < s.width ? s.parts[r * s.width + c] : 0.0f;
      }
    }
#pragma unroll
    for (int i = 0; i < kRowsAhead; ++i)
#pragma unroll
      for (int j = 0; j < kSumColumnsPerLane; ++j)
        if (r0 + int64_t(i) * kSumSlices < s.rows) total[j] += v[i][j];
  }
#pragma unroll
  for (int j = 0; j < kSumColumnsPerLane; ++j) slice_sums[slice][lane + 32 * j] = total[j];
  __syncthreads();
  const int64_t c = c0 + threadIdx.x;
  if (threadIdx.x >= kSumColumns || c >= s.width) return;
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kSumSlices; ++i) sum += slice_sums[i][threadIdx.x];
  if (s.add_to)
    s.add_to[c] += sum;
  else
    s.out[c / s.n * s.ld + c % s.n] = from_float<Act>(sum);
}

}  // namespace ssm::ops::cuda::scan_backward_kernels
