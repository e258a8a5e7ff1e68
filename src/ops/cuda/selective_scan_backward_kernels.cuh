// The kernels of ops::cuda::selective_scan_backward (launched from selective_scan_backward.cu). No
// engine headers but the scan's math, so that dev/cuda/selective_scan_backward_host_check.cpp runs them
// on the CPU (it brings its own versions of the math).
//
// Per channel d and state n (dt_t = softplus(delta_t + bias_d), a_t = exp(dt_t A_dn)), as on the CPU:
//   h_t = a_t h_{t-1} + dt_t B_tn u_t,   y_t = Σ_n C_tn h_t + D u_t,   out_t = y_t silu(z_t).
// Walking t downwards with the adjoint ḡ (∂L/∂h_t from the tokens after t):
//   gy = dout silu(z),  g = ḡ + gy C_t,  ḡ ← g a_t,  dC_tn += gy h_t,  dB_tn += g dt u,
//   du = gy D + dt Σ_n g B,  ddt = Σ_n g h_{t-1} a_t A + u Σ_n g B,  dA += g h_{t-1} a_t dt.
//
// The sequence's chunks run in parallel (at batch 1, D channels alone are too few threads for the GPU):
//   A. summary: each (row, chunk c >= 1, channel, state) walks its chunk back from a zero adjoint:
//      the adjoint it sends to the previous chunk, and the chunk's Σ dt (its decay is 2^(A2 Σ dt));
//   B. carry: each (row, channel, state) walks the chunks back: the adjoint arriving at each chunk's end;
//   C. gradients: each chunk starts from its saved state and its arriving adjoint. Each thread walks
//      its own states forward (H: the state before every token) and back (G: the adjoint reaching
//      every token from above), with no sums in these serial loops; then, all tokens at once, the
//      sums over states per (token, channel) (du, ddelta, dz) and over the group's channels per
//      (token, state) (dB, dC), read from H and G in shared memory (g_t = G_{t+1} + gy C_t,
//      g_t a_t = G_t, so no decay is recomputed there).
// Threads of A and C: kLanes per channel, kS states each (N = 16: one state per thread), so that a
// chunk's states fit in shared memory. A block runs kGroups groups of kChannels channels one after
// the other, so dB and dC of a chunk's tokens get one partial per kGroups * kChannels channels.
// Every sum (dB, dC over channel blocks; dA, dD, ddelta_bias over rows and chunks; over states in a
// fixed order per (token, channel)) is added in a fixed order: two runs give the same bits.
//
// Cost (batch 1, D 4096, N 16, BF16, chunks of 64; METHOD.md's two numbers, forward + backward):
// bytes ~14 per (token, channel) for the backward and ~10 for the forward (BF16 reads and writes;
// B, C, the chunk states and the dB/dC partials ~3 more): 0.4 GB at 4K tokens, 0.1 ms at 4.2 TB/s.
// The exp unit: 4 decays per (token, state) (forward, A, C's forward and back) = 1.1e9 at 4K,
// 0.26 ms at 16/clock/SM. Floor ~0.26 / 1.0 / 4.2 / 6.5 ms at 4K / 16K / 64K / 100K.
// Before this layout (sums over states by ten warp shuffles in the serial loop): 4.90 / 19.3 /
// 75.8 / 118.3 ms. This one is bound by shared memory, which returns one register of a warp per
// clock per multiprocessor (two where lanes 2k and 2k + 1 read one address): per 32 (token, state)
// pairs about 4 (C's forward: (dt, dt u), B, the store of H) + 5 (C's backward: (dt, gy), C, H, the
// store of G) + 7 (sums over states: (C, B), A2, G twice, H twice) + 4 (sums over channels:
// (gy, dt u), G, H) + 3 (A) = 23 such clocks (18 where the paired loads go at the double rate),
// 0.14-0.18 us a token at the limit; 2 blocks (8 warps) per multiprocessor at chunks of 64 (100.5 KB
// each). Prediction, the forward (0.064 us a token) + the backward at ~65% of that limit: ~0.34 us a
// token, 1.3 / 5.2 / 21 / 33 ms at 4K / 16K / 64K / 100K (~0.8x mamba_ssm's 1.66 / 6.57 / 25.9 /
// 42.5), uncertain by about a third either way.
//
// The caller's chunk states serve when their chunk is at most kMaxChunk tokens (shared memory); else,
// or when none are given, the states are recomputed by the forward at kMaxChunk.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "element.cuh"
#ifndef SSM_SCAN_BACKWARD_HOST_CHECK
#include "selective_scan_math.cuh"  // decay, dt_softplus, scan_sigmoid, dt_softplus_grad, poly_exp2, kLog2e
#endif

namespace ssm::ops::cuda::scan_backward_kernels {

constexpr int kChannels = 8;  // channels of a group: the block's threads work on one group at a time
constexpr int kGroups = 16;   // groups per block: dB and dC get one partial per 128 channels
constexpr int kCarryBatch = 8;  // chunk summaries the carry kernel loads before using them
constexpr int kBatch = 8;       // tokens whose values kernel C's serial loops load before using them
constexpr float kLn2 = 0.6931471805599453f;

// How kernels A and C spread a channel's kN (compiled width >= N) states over threads.
template <int kN>
struct Layout {
  static constexpr int kS = kN > 16 ? kN / 16 : 1;      // states per thread
  static constexpr int kLanes = kN / kS;                // threads per channel (4, 8 or 16)
  static constexpr int kThreads = kChannels * kLanes;   // a multiple of 32
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kMaxChunk = 64 / kS;             // longest chunk kernel C keeps in shared memory
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

// Shared memory of kernels A (kSummary) and C for chunks of q tokens, in floats, carved in this order.
template <int kN, bool kSummary>
struct SmemPlan {
  using L = Layout<kN>;
  // (dt, gy) (, (dt, dt u), (gy, dt u), u, softplus', dz factor)
  static constexpr int kPerChannel = kSummary ? 2 : 9;
  __host__ __device__ static constexpr int64_t floats(int64_t q) {
    int64_t n = 2 * q * kN + q * kChannels * kPerChannel;  // (C, B); per channel
    // H, G; dB, dC; A2; the threads' dD and ddelta_bias sums
    if (!kSummary) n += 2 * (q + 1) * L::kS * L::kThreads + 2 * q * kN + kChannels * kN + 2 * L::kThreads;
    return n;
  }
};

// Kernels A (kSummary) and C. Grid: (channel blocks of kGroups * kChannels, chunks (A: chunks - 1), batch).
template <class Act, int kN, bool kSummary>
__global__ void __launch_bounds__(Layout<kN>::kThreads) scan_backward_kernel(const BwdArgs<Act> a) {
  using L = Layout<kN>;
  constexpr int kS = L::kS, kLanes = L::kLanes, kThreads = L::kThreads;
  extern __shared__ __align__(16) float smem[];
  const int64_t b = blockIdx.z, chunk = blockIdx.y + (kSummary ? 1 : 0);
  const int64_t t0 = chunk * a.chunk_len, row0 = b * a.T + t0, bc = b * a.chunks + chunk;
  const int q = int(a.chunk_len);            // shared-memory rows
  const int tokens = int(min(a.chunk_len, a.T - t0));
  const int tid = threadIdx.x, c = tid / kLanes, j = tid % kLanes;

  // Values used together are stored together, one 8-byte load for two (shared memory returns one
  // register of a warp a clock, or two where lanes 2k and 2k + 1 read the same address).
  float2* const CB = reinterpret_cast<float2*>(smem);             // [q][kN]: (C, B) (A: C only)
  // [q][kChannels] each: a token's (dt, gy) going back, (dt, dt u) going forward, (gy, dt u) in the
  // sums over channels.
  float2* const sh_dt_gy = CB + q * kN;
  float2* const sh_dt_dtu = sh_dt_gy + q * kChannels;
  float2* const sh_gy_dtu = sh_dt_dtu + (kSummary ? 0 : q * kChannels);
  float* const sh_u = reinterpret_cast<float*>(sh_gy_dtu + (kSummary ? 0 : q * kChannels));
  float* const sh_spg = sh_u + q * kChannels;                      // softplus'(delta + bias)
  float* const sh_dzf = sh_spg + q * kChannels;                    // dout silu'(z)
  // Row r of H: the states before token r (row 0: the chunk's start state); row r of G: the adjoint
  // reaching token r - 1 from the tokens after it (row `tokens`: the one arriving at the chunk's end).
  float* const H = sh_dzf + q * kChannels;                         // [q + 1][kS][kThreads]
  float* const G = H + (q + 1) * kS * kThreads;                    // [q + 1][kS][kThreads]
  float* const sum_dB = G + (q + 1) * kS * kThreads;               // [q][kN]: over the block's groups
  float* const sum_dC = sum_dB + q * kN;
  float* const sh_A2 = sum_dC + q * kN;                            // [kChannels][kN]: A log2(e)
  float* const thread_dD = sh_A2 + kChannels * kN;                 // [kThreads]: over its tokens
  float* const thread_dbias = thread_dD + kThreads;
  const bool want_bc = a.dB_part || a.dC_part;

  for (int i = tid; i < tokens * kN; i += kThreads) {
    const int l = i / kN, n = i % kN;
    CB[i].x = n < a.N ? to_float(a.C[(row0 + l) * a.ld_C + n]) : 0.0f;
    if constexpr (!kSummary) {
      CB[i].y = n < a.N ? to_float(a.B[(row0 + l) * a.ld_B + n]) : 0.0f;
      sum_dB[i] = sum_dC[i] = 0.0f;
    }
  }

  // A group's inputs of every token, this thread's (token, channel) pairs: loaded into registers
  // while the previous group computes (fetch), then turned into its per-channel values (stage).
  // Zeros past the last channel, so that those threads add nothing anywhere.
  constexpr int kItems = (L::kMaxChunk * kChannels + kThreads - 1) / kThreads;
  float raw_delta[kItems], raw_dy[kItems], raw_z[kItems], raw_u[kItems];
  auto fetch = [&](int64_t group_d0) {
#pragma unroll
    for (int m = 0; m < kItems; ++m) {
      const int i = tid + m * kThreads;
      const int64_t d = group_d0 + i % kChannels, row = row0 + i / kChannels;
      const bool real = i < tokens * kChannels && d < a.channels;
      raw_delta[m] = real ? to_float(a.delta[row * a.ld_delta + d]) : 0.0f;
      raw_dy[m] = real ? to_float(a.dy[row * a.ld_dy + d]) : 0.0f;
      raw_z[m] = real && a.z ? to_float(a.z[row * a.ld_z + d]) : 0.0f;
      raw_u[m] = real && !kSummary ? to_float(a.u[row * a.ld_u + d]) : 0.0f;
    }
  };
  auto stage = [&](int64_t group_d0) {
#pragma unroll
    for (int m = 0; m < kItems; ++m) {
      const int i = tid + m * kThreads;
      if (i >= tokens * kChannels) break;
      const int64_t d = group_d0 + i % kChannels;
      float dt = 0.0f, gy = 0.0f, u = 0.0f, spg = 0.0f, dzf = 0.0f;
      if (d < a.channels) {
        const float raw = raw_delta[m] + (a.delta_bias ? a.delta_bias[d] : 0.0f);
        dt = a.softplus ? dt_softplus<Act>(raw) : raw;
        const float dout = raw_dy[m];
        gy = dout;
        if (a.z) {
          const float z = raw_z[m], sg = sigmoid_of<Act>(z);
          gy = dout * z * sg;
          dzf = dout * sg * (1.0f + z * (1.0f - sg));
        }
        if constexpr (!kSummary) {
          u = raw_u[m];
          spg = a.softplus ? dt_softplus_grad<Act>(raw) : 1.0f;
        }
      }
      sh_dt_gy[i] = make_float2(dt, gy);
      if constexpr (!kSummary) {
        sh_dt_dtu[i] = make_float2(dt, dt * u);
        sh_gy_dtu[i] = make_float2(gy, dt * u);
        sh_u[i] = u;
        sh_spg[i] = spg;
        sh_dzf[i] = dzf;
      }
    }
  };

  const int64_t block_d0 = int64_t(blockIdx.x) * kGroups * kChannels;
  fetch(block_d0);
  for (int group = 0; group < kGroups; ++group) {
    const int64_t group_d0 = block_d0 + group * kChannels;
    if (group_d0 >= a.channels) break;  // the same for the whole block
    stage(group_d0);
    __syncthreads();
    const bool more = group + 1 < kGroups && group_d0 + kChannels < a.channels;  // another group follows

    const int64_t d = group_d0 + c;
    const bool active = d < a.channels;
    float A2[kS], adj[kS];
    bool real[kS];  // a state of an existing channel (not padding)
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const int n = s * kLanes + j;
      real[s] = active && n < a.N;
      A2[s] = real[s] ? a.A[d * a.N + n] * kLog2e : 0.0f;
      adj[s] = real[s] && !kSummary && a.carry ? a.carry[(bc * a.channels + d) * a.N + n] : 0.0f;
    }

    if constexpr (kSummary) {
      if (more) fetch(group_d0 + kChannels);
      float dt_sum = 0.0f;
#pragma unroll 4
      for (int l = tokens - 1; l >= 0; --l) {
        const float2 dt_gy = sh_dt_gy[l * kChannels + c];
        const float dt = dt_gy.x, gy = dt_gy.y;
        dt_sum += dt;
#pragma unroll
        for (int s = 0; s < kS; ++s)
          adj[s] = (adj[s] + gy * CB[l * kN + s * kLanes + j].x) * decay<Act>(A2[s] * dt);
      }
#pragma unroll
      for (int s = 0; s < kS; ++s)
        if (real[s]) a.carry[(bc * a.channels + d) * a.N + s * kLanes + j] = adj[s];
      if (active && j == 0) a.dt_sum[bc * a.channels + d] = dt_sum;
    } else {
      // Each thread walks its own states through the chunk, forward then back, writing only its own
      // columns of H and G: no sums over states or channels in the serial loops.
      auto at = [&](int row, int s) { return (row * kS + s) * kThreads + tid; };
      float h[kS], dA[kS];
#pragma unroll
      for (int s = 0; s < kS; ++s) {
        h[s] = real[s] ? a.chunk_states[(bc * a.channels + d) * a.N + s * kLanes + j] : 0.0f;
        dA[s] = 0.0f;
        H[at(0, s)] = h[s];
        G[at(tokens, s)] = adj[s];
        sh_A2[c * kN + s * kLanes + j] = A2[s];
      }
      // kBatch tokens' shared-memory values are loaded before any of them is used (the loads cannot
      // move past the previous batch's stores, which the compiler cannot tell apart from them).
      for (int l0 = 0; l0 < tokens; l0 += kBatch) {
        float2 dt_dtu[kBatch];
        float Bv[kBatch][kS];
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          if (l0 + k >= tokens) break;
          dt_dtu[k] = sh_dt_dtu[(l0 + k) * kChannels + c];
#pragma unroll
          for (int s = 0; s < kS; ++s) Bv[k][s] = CB[(l0 + k) * kN + s * kLanes + j].y;
        }
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          if (l0 + k >= tokens) break;
#pragma unroll
          for (int s = 0; s < kS; ++s) {
            h[s] = decay<Act>(A2[s] * dt_dtu[k].x) * h[s] + dt_dtu[k].y * Bv[k][s];
            H[at(l0 + k + 1, s)] = h[s];
          }
        }
      }
      for (int l0 = tokens - 1; l0 >= 0; l0 -= kBatch) {
        float2 dt_gy[kBatch];
        float Cv[kBatch][kS], h_before[kBatch][kS];
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          if (l0 - k < 0) break;
          dt_gy[k] = sh_dt_gy[(l0 - k) * kChannels + c];
#pragma unroll
          for (int s = 0; s < kS; ++s) {
            Cv[k][s] = CB[(l0 - k) * kN + s * kLanes + j].x;
            h_before[k][s] = H[at(l0 - k, s)];
          }
        }
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          if (l0 - k < 0) break;
          const float dt = dt_gy[k].x, gy = dt_gy[k].y;
#pragma unroll
          for (int s = 0; s < kS; ++s) {
            adj[s] = (adj[s] + gy * Cv[k][s]) * decay<Act>(A2[s] * dt);  // g a_t
            G[at(l0 - k, s)] = adj[s];
            dA[s] += adj[s] * h_before[k][s] * dt;  // g h_{t-1} a_t dt
          }
        }
      }
#pragma unroll
      for (int s = 0; s < kS; ++s) {
        if (!real[s]) continue;
        const int64_t n = s * kLanes + j;
        if (a.dA_part) a.dA_part[(bc * a.channels + d) * a.N + n] = dA[s];
        if (a.dstate0 && chunk == 0) a.dstate0[(b * a.channels + d) * a.N + n] = adj[s];
      }
      if (more) fetch(group_d0 + kChannels);
      __syncthreads();  // H, G and sh_A2 complete

      // Sums over states, one (token, channel) per step; g = G[l + 1] + gy C. Each (token, channel)
      // visits the states from its own start, a fixed order: the 32 lanes of a warp (8 channels of 4
      // tokens) then read 32 different banks of H and G at N 16.
      auto hg_at = [&](int row, int n, int channel) {
        return (row * kS + n / kLanes) * kThreads + channel * kLanes + n % kLanes;
      };
      const bool want_dz = a.dz != nullptr;
      float dD_sum = 0.0f, dbias_sum = 0.0f;  // over this thread's tokens, all of channel tid % kChannels
      for (int i = tid; i < tokens * kChannels; i += kThreads) {
        const int l = i / kChannels, cc = i % kChannels;
        const float2 dt_gy = sh_dt_gy[i];
        const float dt = dt_gy.x, gy = dt_gy.y, u = sh_u[i];
        const int start = (cc >> 1) + 4 * (l & 3);
        float gB = 0.0f, ghaA2 = 0.0f, y = 0.0f;
#pragma unroll
        for (int k = 0; k < kN; ++k) {
          const int n = (k + start) & (kN - 1);
          const float2 cb = CB[l * kN + n];
          const float Cn = cb.x, g = G[hg_at(l + 1, n, cc)] + gy * Cn;
          gB += g * cb.y;
          ghaA2 += G[hg_at(l, n, cc)] * H[hg_at(l, n, cc)] * sh_A2[cc * kN + n];
          if (want_dz) y += Cn * H[hg_at(l + 1, n, cc)];
        }
        const float ddelta = (ghaA2 * kLn2 + u * gB) * sh_spg[i];
        dD_sum += gy * u;  // zero past the last channel
        dbias_sum += ddelta;
        const int64_t dd = group_d0 + cc, row = row0 + l;
        if (dd >= a.channels) continue;
        const float skip = a.D ? a.D[dd] : 0.0f;
        if (a.du) a.du[row * a.ld_du + dd] = from_float<Act>(gy * skip + dt * gB);
        if (a.ddelta) a.ddelta[row * a.ld_ddelta + dd] = from_float<Act>(ddelta);
        if (want_dz) a.dz[row * a.ld_dz + dd] = from_float<Act>((y + skip * u) * sh_dzf[i]);
      }
      // Sums over the group's channels, one (token, state) per step, added to the block's. Odd tokens
      // start one channel later, so that the two tokens of a warp (at N 16) read different banks.
      if (want_bc) {
        for (int i = tid; i < tokens * kN; i += kThreads) {
          const int l = i / kN, n = i % kN;
          const float Cn = CB[i].x;
          float dB = 0.0f, dC = 0.0f;
#pragma unroll
          for (int k = 0; k < kChannels; ++k) {
            const int cc = (k + l) & (kChannels - 1);
            const float2 gy_dtu = sh_gy_dtu[l * kChannels + cc];
            const float gy = gy_dtu.x, h_now = H[hg_at(l + 1, n, cc)];
            dB += (G[hg_at(l + 1, n, cc)] + gy * Cn) * gy_dtu.y;
            dC += gy * h_now;
          }
          sum_dB[i] += dB;
          sum_dC[i] += dC;
        }
      }
      thread_dD[tid] = dD_sum;
      thread_dbias[tid] = dbias_sum;
      __syncthreads();  // the threads' sums complete
      if (tid < kChannels && group_d0 + tid < a.channels) {
        float dD = 0.0f, dbias = 0.0f;
        for (int r = tid; r < kThreads; r += kChannels) {
          dD += thread_dD[r];
          dbias += thread_dbias[r];
        }
        if (a.dD_part) a.dD_part[bc * a.channels + group_d0 + tid] = dD;
        if (a.dbias_part) a.dbias_part[bc * a.channels + group_d0 + tid] = dbias;
      }
    }
    __syncthreads();  // before the next group overwrites the per-channel values, H and G
  }

  if constexpr (!kSummary) {
    if (!want_bc) return;
    // This thread added up exactly these elements of sum_dB / sum_dC above.
    const int64_t part = int64_t(blockIdx.x) * a.batch * a.T;
    for (int i = tid; i < tokens * kN; i += kThreads) {
      const int l = i / kN, n = i % kN;
      if (n >= a.N) continue;
      const int64_t at = (part + row0 + l) * a.N + n;
      if (a.dB_part) a.dB_part[at] = sum_dB[i];
      if (a.dC_part) a.dC_part[at] = sum_dC[i];
    }
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
  for (int64_t c0 = chunks - 1; c0 >= 1; c0 -= kCarryBatch) {
    float summary[kCarryBatch], sum[kCarryBatch];
#pragma unroll
    for (int k = 0; k < kCarryBatch; ++k) {
      if (c0 - k >= 1) {
        summary[k] = carry[at(c0 - k) * N + n];
        sum[k] = dt_sum[at(c0 - k)];
      }
    }
#pragma unroll
    for (int k = 0; k < kCarryBatch; ++k) {
      if (c0 - k < 1) break;
      carry[at(c0 - k) * N + n] = arriving;
      arriving = poly_exp2(A2 * sum[k]) * arriving + summary[k];
    }
  }
  carry[at(0) * N + n] = arriving;
}

// out[i] += Σ_r parts[r * width + i], r = 0, 1, ... (dA, dD, ddelta_bias over rows and chunks).
__global__ void add_partials_kernel(const float* parts, int64_t count, int64_t width, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= width) return;
  float sum = 0.0f;
  for (int64_t r = 0; r < count; ++r) sum += parts[r * width + i];
  out[i] += sum;
}

// out row r, column n = Σ_k parts[(k * rows + r) * N + n], k = 0, 1, ... (dB, dC over channel blocks).
template <class Act>
__global__ void sum_channel_blocks_kernel(const float* parts, int64_t count, int64_t rows, int64_t N, Act* out,
                                          int64_t ld_out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * N) return;
  float sum = 0.0f;
  for (int64_t k = 0; k < count; ++k) sum += parts[k * rows * N + i];
  out[i / N * ld_out + i % N] = from_float<Act>(sum);
}

}  // namespace ssm::ops::cuda::scan_backward_kernels
