// Mamba-1 selective scan, forward (ops::selective_scan's GPU kernel): versions, checks, timings.
//
//   bash dev/cuda/build.sh                   # nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a
//   build/dev-cuda/selective_scan            # checks at odd shapes, then checks + timings at the issue's shapes
//   build/dev-cuda/selective_scan profile T [VERSION]   # one version (default v5) run twice, for a profiler
//
// dt_t = softplus(delta_t + bias); h_t[d, n] = 2^(A2[d, n] dt_t) h_{t-1}[d, n] + dt_t u_t[d] B_t[n];
// y_t[d] = (sum_n C_t[n] h_t[d, n] + D[d] u_t[d]) silu(z_t[d]); A2 = A log2(e). Layout [B, T, D] rows
// (channels contiguous), as the engine keeps activations.
//
// The issue's shapes: batch 1, D 4096, N 16, bf16 u, delta, z, B, C, y; with z, D and delta_bias.
// Floor (METHOD.md's two numbers), per token:
//   bytes: u, delta, z read and y written, 4 x 4096 x 2 B, + B and C 2 x 16 x 2 B = 32,832 B;
//          at the measured 4.24 TB/s copy bandwidth: 7.74 ns per token.
//   arithmetic: per (token, channel, state) one exp2 (MUFU) and 5 FLOP (dt A, du B, h FMA, y FMA);
//          per (token, channel) 3 more exp-unit operations (the exps of softplus and silu, silu's
//          reciprocal; softplus's log1p is a polynomial) and ~25 FLOP. The exp unit does 16 per
//          clock per SM: 132 x 16 x 1.98 GHz = 4.18e12 /s; with 4096 x (16 + 3) per token that
//          is 18.6 ns per token, over twice the bytes: the scan is bound by the exp unit, not memory.
//   tokens     bytes floor   exp floor (1 exp/state)   peer (mamba_ssm CUDA, fwd)   goal (0.8 x peer)
//   4,096        31.7 us        76 us                     0.32 ms                     0.256 ms
//   16,384      126.9 us       305 us                     1.52 ms                     1.216 ms
//   65,536      507.5 us      1219 us                     5.95 ms                     4.760 ms
//   102,400     792.9 us      1905 us                     9.50 ms                     7.600 ms
// Peer times: ../shared/BENCHMARKS.md (H200, torch 2.11 + CUDA 13.0, 2026-11-28), copied below.
//
// Every version computes F32-activation decays with poly_exp2 (the engine's parity mode, whose errors
// do not add up along slow decays); the timed bf16 runs use the exp unit unless a version says otherwise.
//
// Versions:
//   v1  one thread per (row, channel), all T tokens in order, B and C read from global memory by
//       every thread. Only batch x D = 4096 threads: a quarter of one wave of the GPU.
//   v2  (the engine's fallback, for rows not 16-byte aligned) the sequence cut into chunks run in
//       parallel (enough for 2 waves of blocks), three kernels: chunk summaries from a zero state
//       (final state and sum of dt), a carry pass over the chunks (h_in(c+1) = 2^(A2 S_c) h_in(c) +
//       h_c), then each chunk again from its h_in writing y. B and C staged through shared memory per
//       8-token tile, read as float4 broadcasts; each thread's 8 tokens of u/delta/z loaded before the
//       first use. Every decay is computed twice (summary and output): 2 x 16 + 4 exp-unit operations
//       per (token, channel), so its own floor is about twice the exp floor above.
//   v3  v2 with the decays of the first kPoly states computed by a polynomial exp2 on the FMA pipe
//       (~11 instructions instead of one on the 4x slower exp unit), to balance the two pipes:
//       the exp unit stays the bottleneck up to about 3 of 16 states per pass.
//   v4  v2 (or v3) with each tile's u, delta and z copied global -> shared memory by cp.async, 16
//       bytes a copy, one tile ahead (double-buffered); B and C of the next tile loaded into
//       registers during the current one. Removes 8-24 scalar loads per thread per tile and their
//       64-bit address arithmetic, and hides the load latency behind a tile of work.
//       First H200 run (2026-11-30): 0.285 / 1.020 / 3.970 / 6.194 ms = 0.89 / 0.67 / 0.67 / 0.65x the
//       peer; v2 0.453 / 1.673 / 6.541 / 10.178 ms. v4 poly 2 was 6% slower than v4: adding ~22 FMA-pipe
//       instructions per state pair cost more than the exp-unit cycles it saved, so the kernel is
//       bound by issued instructions at least as much as by the exp unit.
//   v5  (the engine's, rows 16-byte aligned) v4 with softplus and the silu gate in their exp-unit
//       forms for BF16 (lg2/ex2/rcp.approx and a series for small e^-|x|, relative error ~1e-6): ~40
//       instead of ~100 instructions per (token, channel) outside the 16 states over the two passes,
//       about a fifth of all the issued ones. "v5 direct" is the same arithmetic on v2's loads (the
//       engine's fallback); "waves" and "len" sweep the chunk count (docs/performance.md, item 6).
//       Prediction: 10-15% under v4 at every length: 0.245-0.26 ms at 4K (0.77-0.81x), ~5.4 ms
//       at 100K (0.57x). Since 2026-12-04 (v4 and v5) the next tile's B and C stay as loaded until
//       stored to shared memory, as the engine's (docs/performance.md, the Mamba-1 forward's item 7).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#define CHECK(call)                                                                              \
  do {                                                                                           \
    cudaError_t e_ = (call);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

using bf16 = __nv_bfloat16;

// ---- peer numbers (../shared/BENCHMARKS.md: mamba_ssm selective scan, forward only, batch 1, D 4096, N 16, bf16)
constexpr int64_t kLengths[] = {4096, 16384, 65536, 102400};
constexpr double kPeerMs[] = {0.32, 1.52, 5.95, 9.50};

// ---- device math (as src/ops/cuda/common.cuh and activation_math.cuh)
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) { return __float2bfloat16(v); }

constexpr float kLog2e = 1.4426950408889634f;
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float softplus(float x) { return fmaxf(x, 0.0f) + log1pf(fast_exp2(-fabsf(x) * kLog2e)); }
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// 2^x on the FMA pipe: x = j + f with j = round(x), 2^f by a degree-6 polynomial on [-0.5, 0.5]
// (Cephes' exp2f coefficients; relative error < 8e-8, unbiased near 0), 2^j added to the exponent.
// x is clamped to [-126, 126]: below, ~1e-38 instead of 0; above, finite instead of inf.
__device__ __forceinline__ float poly_exp2(float x) {
  x = fminf(fmaxf(x, -126.0f), 126.0f);
  const float shifted = x + 12582912.0f;  // 1.5 * 2^23: the integer part lands in the low mantissa bits
  const float f = x - (shifted - 12582912.0f);
  float p = 1.535336188319500e-4f;
  p = fmaf(p, f, 1.339887440266574e-3f);
  p = fmaf(p, f, 9.618437357674640e-3f);
  p = fmaf(p, f, 5.550332471162809e-2f);
  p = fmaf(p, f, 2.402264791363012e-1f);
  p = fmaf(p, f, 6.931472028550421e-1f);
  p = fmaf(p, f, 1.0f);
  return __int_as_float(__float_as_int(p) + (__float_as_int(shifted) << 23));
}

// silu and softplus on the exp unit (v5, as src/ops/cuda/activation_math.cuh's fast_silu and
// fast_softplus): relative error ~1e-6 instead of the library's expf, division and log1pf.
__device__ __forceinline__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fast_silu(float x) { return x * fast_rcp(1.0f + fast_exp2(-x * kLog2e)); }
__device__ __forceinline__ float fast_softplus(float x) {
  const float e = fast_exp2(-fabsf(x) * kLog2e);
  const float series = e * fmaf(e, fmaf(e, 1.0f / 3.0f, -0.5f), 1.0f);
  const float log1p_e = e < 1.0f / 64.0f ? series : fast_log2(1.0f + e) * 0.6931471805599453f;
  return fmaxf(x, 0.0f) + log1p_e;
}
// kFast (v5): the short forms for BF16 activations; F32 keeps the accurate ones (the engine's rule).
template <class Act, bool kFast>
__device__ __forceinline__ float dt_softplus(float x) {
  if constexpr (kFast && !std::is_same_v<Act, float>) return fast_softplus(x);
  else return softplus(x);
}
template <class Act, bool kFast>
__device__ __forceinline__ float gate(float z) {
  if constexpr (kFast && !std::is_same_v<Act, float>) return fast_silu(z);
  else return silu(z);
}

// F32 activations (the engine's parity mode): every decay by poly_exp2, whose errors do not add up
// along slow decays. BF16: the first kPoly states by poly_exp2, the others on the exp unit.
template <class Act, int kPoly>
__device__ __forceinline__ float decay(int n, float x) {
  if constexpr (std::is_same_v<Act, float>) return poly_exp2(x);
  else return n < kPoly ? poly_exp2(x) : fast_exp2(x);
}

template <class Act>
struct ScanArgs {
  const Act *u, *delta, *B, *C, *z;  // rows b * T + t at row * ld_<name>; z may be null
  Act* y;
  int64_t ld_u, ld_delta, ld_B, ld_C, ld_z, ld_y;
  const float *delta_bias, *A, *D;  // [D] or null, [D, N], [D] or null
  float* state;                     // [batch, D, N] or null
  float* chunk_state;               // [batch, chunks, D, kN]
  float* chunk_dt_sum;              // [batch, chunks, D]
  int64_t batch, T, channels, N, chunk_len, chunks;
  bool softplus;
};

// ================================================================ v1
template <class Act, int kN>
__global__ void __launch_bounds__(128) scan_v1(const ScanArgs<Act> a) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (d >= a.channels) return;
  float A2[kN], h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    A2[n] = n < a.N ? a.A[d * a.N + n] * kLog2e : 0.0f;
    h[n] = n < a.N && a.state ? a.state[(b * a.channels + d) * a.N + n] : 0.0f;
  }
  const float bias = a.delta_bias ? a.delta_bias[d] : 0.0f, skip = a.D ? a.D[d] : 0.0f;
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t row = b * a.T + t;
    float dt = to_float(a.delta[row * a.ld_delta + d]) + bias;
    if (a.softplus) dt = softplus(dt);
    const float u = to_float(a.u[row * a.ld_u + d]), du = dt * u;
    float y = 0.0f;
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      const float Bn = n < a.N ? to_float(a.B[row * a.ld_B + n]) : 0.0f;
      const float Cn = n < a.N ? to_float(a.C[row * a.ld_C + n]) : 0.0f;
      h[n] = decay<Act, 0>(n, A2[n] * dt) * h[n] + du * Bn;
      y += Cn * h[n];
    }
    y += skip * u;
    if (a.z) y *= silu(to_float(a.z[row * a.ld_z + d]));
    a.y[row * a.ld_y + d] = from_float<Act>(y);
  }
  if (a.state) {
#pragma unroll
    for (int n = 0; n < kN; ++n)
      if (n < a.N) a.state[(b * a.channels + d) * a.N + n] = h[n];
  }
}

template <class Act, int kN>
void run_v1(ScanArgs<Act> a, cudaStream_t s) {
  scan_v1<Act, kN><<<dim3(unsigned((a.channels + 127) / 128), unsigned(a.batch)), 128, 0, s>>>(a);
  CHECK(cudaGetLastError());
}

// ================================================================ v2 / v3 (kPoly 0: v2)
constexpr int kThreads = 128, kTile = 8;
constexpr int64_t kMinChunkLen = 64, kCarryBatch = 8;

template <int kN>
__device__ __forceinline__ void load_row(const float* row, float* out) {
#pragma unroll
  for (int n = 0; n < kN; n += 4) {
    const float4 v = *reinterpret_cast<const float4*>(row + n);
    out[n] = v.x, out[n + 1] = v.y, out[n + 2] = v.z, out[n + 3] = v.w;
  }
}

template <class Act, int kN, bool kOutput, int kPoly, bool kFast>
__global__ void __launch_bounds__(kThreads) scan_chunk_kernel(const ScanArgs<Act> a) {
  __shared__ __align__(16) float B_tile[kTile][kN];
  __shared__ __align__(16) float C_tile[kOutput ? kTile : 1][kN];
  const int64_t b = blockIdx.z, chunk = blockIdx.y;
  const int64_t channel = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = channel < a.channels;
  const int64_t d = active ? channel : a.channels - 1;
  const int64_t t_begin = chunk * a.chunk_len, t_end = min(a.T, t_begin + a.chunk_len);
  const int64_t chunk_at = (b * a.chunks + chunk) * a.channels + d;

  float A2[kN], h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    A2[n] = n < a.N ? a.A[d * a.N + n] * kLog2e : 0.0f;
    h[n] = 0.0f;
  }
  if (kOutput && a.chunks > 1) {
#pragma unroll
    for (int n = 0; n < kN; n += 4) {
      const float4 v = *reinterpret_cast<const float4*>(a.chunk_state + chunk_at * kN + n);
      h[n] = v.x, h[n + 1] = v.y, h[n + 2] = v.z, h[n + 3] = v.w;
    }
  } else if (kOutput && a.state) {
#pragma unroll
    for (int n = 0; n < kN; ++n) h[n] = n < a.N ? a.state[(b * a.channels + d) * a.N + n] : 0.0f;
  }
  const float bias = a.delta_bias ? a.delta_bias[d] : 0.0f;
  const float skip = a.D ? a.D[d] : 0.0f;
  float dt_sum = 0.0f;

  for (int64_t t0 = t_begin; t0 < t_end; t0 += kTile) {
    const int tokens = int(min(int64_t(kTile), t_end - t0));
    const int64_t row0 = b * a.T + t0;
    __syncthreads();
    for (int i = threadIdx.x; i < kTile * kN; i += kThreads) {
      const int k = i / kN, n = i % kN;
      const bool real = k < tokens && n < a.N;
      B_tile[k][n] = real ? to_float(a.B[(row0 + k) * a.ld_B + n]) : 0.0f;
      if constexpr (kOutput) C_tile[k][n] = real ? to_float(a.C[(row0 + k) * a.ld_C + n]) : 0.0f;
    }
    float delta[kTile], u[kTile], z[kTile];
#pragma unroll
    for (int k = 0; k < kTile; ++k) {
      if (k < tokens) {
        delta[k] = to_float(a.delta[(row0 + k) * a.ld_delta + d]);
        u[k] = to_float(a.u[(row0 + k) * a.ld_u + d]);
        if (kOutput && a.z) z[k] = to_float(a.z[(row0 + k) * a.ld_z + d]);
      }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; ++k) {
      if (k >= tokens) break;
      float dt = delta[k] + bias;
      if (a.softplus) dt = dt_softplus<Act, kFast>(dt);
      const float du = dt * u[k];
      float Bk[kN], Ck[kN], y = 0.0f;
      load_row<kN>(B_tile[k], Bk);
      if constexpr (kOutput) load_row<kN>(C_tile[k], Ck);
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        h[n] = decay<Act, kPoly>(n, A2[n] * dt) * h[n] + du * Bk[n];
        if constexpr (kOutput) y += Ck[n] * h[n];
      }
      if constexpr (kOutput) {
        y += skip * u[k];
        if (a.z) y *= gate<Act, kFast>(z[k]);
        if (active) a.y[(row0 + k) * a.ld_y + d] = from_float<Act>(y);
      } else {
        dt_sum += dt;
      }
    }
  }

  if (!active) return;
  if constexpr (!kOutput) {
#pragma unroll
    for (int n = 0; n < kN; n += 4)
      *reinterpret_cast<float4*>(a.chunk_state + chunk_at * kN + n) = make_float4(h[n], h[n + 1], h[n + 2], h[n + 3]);
    a.chunk_dt_sum[chunk_at] = dt_sum;
  } else if (a.chunks == 1 && a.state) {
#pragma unroll
    for (int n = 0; n < kN; ++n)
      if (n < a.N) a.state[(b * a.channels + d) * a.N + n] = h[n];
  }
}

__global__ void scan_carry_kernel(const float* A, float* state_io, float* chunk_state, const float* chunk_dt_sum,
                                  int64_t batch, int64_t channels, int64_t N, int width, int64_t chunks) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * channels * width) return;
  const int n = int(i % width);
  const int64_t d = i / width % channels, b = i / (width * channels);
  const bool real = n < N;
  const float A2 = real ? A[d * N + n] * kLog2e : 0.0f;
  float* state = state_io && real ? state_io + (b * channels + d) * N + n : nullptr;
  float carry = state ? *state : 0.0f;
  const int64_t summaries = state_io ? chunks : chunks - 1;
  auto at = [&](int64_t c) { return (b * chunks + c) * channels + d; };
  for (int64_t c0 = 0; c0 < chunks; c0 += kCarryBatch) {
    float h_end[kCarryBatch], dt_sum[kCarryBatch];
#pragma unroll
    for (int64_t j = 0; j < kCarryBatch; ++j) {
      if (c0 + j < summaries) {
        h_end[j] = chunk_state[at(c0 + j) * width + n];
        dt_sum[j] = chunk_dt_sum[at(c0 + j)];
      }
    }
#pragma unroll
    for (int64_t j = 0; j < kCarryBatch; ++j) {
      const int64_t c = c0 + j;
      if (c >= chunks) break;
      chunk_state[at(c) * width + n] = carry;
      if (c < summaries) carry = poly_exp2(A2 * dt_sum[j]) * carry + h_end[j];
    }
  }
  if (state) *state = carry;
}

// ================================================================ v4 (v3 + staged tiles)
// The tile's u, delta and z go global -> shared memory by cp.async, 16 bytes per copy, one tile
// ahead (double-buffered), instead of 8-24 scalar loads per thread with their 64-bit address
// arithmetic; the next tile's B and C are loaded into registers during the current tile and
// stored to the other buffer after it. Needs 16-byte aligned rows of u, delta, z.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all_but_newest() {
  asm volatile("cp.async.wait_group 1;\n" ::: "memory");
}

template <class Act, int kN, bool kOutput, int kPoly, bool kFast>
__global__ void __launch_bounds__(kThreads) scan_staged_kernel(const ScanArgs<Act> a) {
  constexpr int kInputs = kOutput ? 3 : 2;  // delta, u, z
  constexpr int kPerVector = 16 / int(sizeof(Act));
  constexpr int kVectors = kThreads / kPerVector;  // per tile row
  constexpr int kBCPerThread = (kTile * kN + kThreads - 1) / kThreads;
  __shared__ __align__(16) Act in_tile[2][kInputs][kTile][kThreads];
  __shared__ __align__(16) float B_tile[2][kTile][kN];
  __shared__ __align__(16) float C_tile[2][kOutput ? kTile : 1][kN];
  const int64_t b = blockIdx.z, chunk = blockIdx.y;
  const int64_t d0 = int64_t(blockIdx.x) * kThreads, channel = d0 + threadIdx.x;
  const bool active = channel < a.channels;
  const int64_t d = active ? channel : a.channels - 1;
  const int64_t t_begin = chunk * a.chunk_len, t_end = min(a.T, t_begin + a.chunk_len);
  const int64_t chunk_at = (b * a.chunks + chunk) * a.channels + d;

  float A2[kN], h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    A2[n] = n < a.N ? a.A[d * a.N + n] * kLog2e : 0.0f;
    h[n] = 0.0f;
  }
  if (kOutput && a.chunks > 1) {
#pragma unroll
    for (int n = 0; n < kN; n += 4) {
      const float4 v = *reinterpret_cast<const float4*>(a.chunk_state + chunk_at * kN + n);
      h[n] = v.x, h[n + 1] = v.y, h[n + 2] = v.z, h[n + 3] = v.w;
    }
  } else if (kOutput && a.state) {
#pragma unroll
    for (int n = 0; n < kN; ++n) h[n] = n < a.N ? a.state[(b * a.channels + d) * a.N + n] : 0.0f;
  }
  const float bias = a.delta_bias ? a.delta_bias[d] : 0.0f;
  const float skip = a.D ? a.D[d] : 0.0f;
  float dt_sum = 0.0f;

  // Copies of tile t0's inputs into buffer buf, as one commit group.
  auto issue_copies = [&](int64_t t0, int buf) {
    const int tokens = int(min(int64_t(kTile), t_end - t0));
    for (int i = threadIdx.x; i < kInputs * kTile * kVectors; i += kThreads) {
      const int which = i / (kTile * kVectors), k = i / kVectors % kTile, v = i % kVectors;
      const Act* base = which == 0 ? a.delta : which == 1 ? a.u : a.z;
      const int64_t ld = which == 0 ? a.ld_delta : which == 1 ? a.ld_u : a.ld_z;
      const int64_t c = d0 + int64_t(v) * kPerVector;
      int bytes = 0;
      const Act* src = a.u;  // any valid address when nothing is read
      if (base && k < tokens && c < a.channels) {
        bytes = int(min(int64_t(kPerVector), a.channels - c) * int64_t(sizeof(Act)));
        src = base + (b * a.T + t0 + k) * ld + c;
      }
      cp_async16(&in_tile[buf][which][k][v * kPerVector], src, bytes);
    }
    cp_async_commit();
  };
  // B and C of the next tile kept as loaded until stored (widened at the load, each tile waited for them).
  Act B_next[kBCPerThread], C_next[kBCPerThread];
  auto load_bc = [&](int64_t t0) {
    const int tokens = int(min(int64_t(kTile), t_end - t0));
#pragma unroll
    for (int j = 0; j < kBCPerThread; ++j) {
      const int i = threadIdx.x + j * kThreads, k = i / kN, n = i % kN;
      const bool real = i < kTile * kN && k < tokens && n < a.N;
      const int64_t row = b * a.T + t0 + k;
      B_next[j] = real ? a.B[row * a.ld_B + n] : Act(0.0f);
      if constexpr (kOutput) C_next[j] = real ? a.C[row * a.ld_C + n] : Act(0.0f);
    }
  };
  auto store_bc = [&](int buf) {
#pragma unroll
    for (int j = 0; j < kBCPerThread; ++j) {
      const int i = threadIdx.x + j * kThreads;
      if (i < kTile * kN) {
        B_tile[buf][i / kN][i % kN] = to_float(B_next[j]);
        if constexpr (kOutput) C_tile[buf][i / kN][i % kN] = to_float(C_next[j]);
      }
    }
  };

  issue_copies(t_begin, 0);
  load_bc(t_begin);
  store_bc(0);
  int buf = 0;
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kTile, buf ^= 1) {
    const bool has_next = t0 + kTile < t_end;
    // The other buffer was last read in the previous tile, before the barrier that ended it.
    if (has_next) {
      issue_copies(t0 + kTile, buf ^ 1);
      load_bc(t0 + kTile);
    } else {
      cp_async_commit();  // an empty group: "all but the newest" below is still this tile's
    }
    cp_async_wait_all_but_newest();
    __syncthreads();  // every thread's copies and B/C stores of this tile are visible
    const int tokens = int(min(int64_t(kTile), t_end - t0));
    const int64_t row0 = b * a.T + t0;
#pragma unroll
    for (int k = 0; k < kTile; ++k) {
      if (k >= tokens) break;
      float dt = to_float(in_tile[buf][0][k][threadIdx.x]) + bias;
      if (a.softplus) dt = dt_softplus<Act, kFast>(dt);
      const float u = to_float(in_tile[buf][1][k][threadIdx.x]);
      const float du = dt * u;
      float Bk[kN], Ck[kN], y = 0.0f;
      load_row<kN>(B_tile[buf][k], Bk);
      if constexpr (kOutput) load_row<kN>(C_tile[buf][k], Ck);
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        h[n] = decay<Act, kPoly>(n, A2[n] * dt) * h[n] + du * Bk[n];
        if constexpr (kOutput) y += Ck[n] * h[n];
      }
      if constexpr (kOutput) {
        y += skip * u;
        if (a.z) y *= gate<Act, kFast>(to_float(in_tile[buf][kInputs - 1][k][threadIdx.x]));
        if (active) a.y[(row0 + k) * a.ld_y + d] = from_float<Act>(y);
      } else {
        dt_sum += dt;
      }
    }
    if (has_next) store_bc(buf ^ 1);
    __syncthreads();  // this buffer is read by all before the next tile's copies overwrite it
  }

  if (!active) return;
  if constexpr (!kOutput) {
#pragma unroll
    for (int n = 0; n < kN; n += 4)
      *reinterpret_cast<float4*>(a.chunk_state + chunk_at * kN + n) = make_float4(h[n], h[n + 1], h[n + 2], h[n + 3]);
    a.chunk_dt_sum[chunk_at] = dt_sum;
  } else if (a.chunks == 1 && a.state) {
#pragma unroll
    for (int n = 0; n < kN; ++n)
      if (n < a.N) a.state[(b * a.channels + d) * a.N + n] = h[n];
  }
}

int sm_count() {
  static int n = [] {
    int v = 0;
    CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0));
    return v;
  }();
  return n;
}

// waves: how many GPU-fulls of blocks the chunks make (the engine uses 2); len > 0: chunks of len tokens.
template <class Act, int kN, int kPoly, bool kStaged, bool kFast>
void choose_chunks(ScanArgs<Act>& a, int waves, int64_t len_given) {
  if (len_given > 0) {
    a.chunk_len = std::min(len_given, a.T);
    a.chunks = (a.T + a.chunk_len - 1) / a.chunk_len;
    return;
  }
  int resident = 0;
  if constexpr (kStaged) {
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, scan_staged_kernel<Act, kN, true, kPoly, kFast>, kThreads,
                                                        0));
  } else {
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, scan_chunk_kernel<Act, kN, true, kPoly, kFast>, kThreads,
                                                        0));
  }
  const int64_t row_blocks = a.batch * ((a.channels + kThreads - 1) / kThreads);
  const int64_t wanted = int64_t(waves) * sm_count() * std::max(resident, 1);
  const int64_t chunks = std::clamp<int64_t>(wanted / row_blocks, 1, (a.T + kMinChunkLen - 1) / kMinChunkLen);
  const int64_t len = (a.T + chunks - 1) / chunks;
  a.chunk_len = (len + kTile - 1) / kTile * kTile;
  a.chunks = (a.T + a.chunk_len - 1) / a.chunk_len;
}

// Scratch big enough for any chunking here (grown on demand, never freed: a dev tool).
float* scratch(size_t floats) {
  static float* p = nullptr;
  static size_t have = 0;
  if (floats > have) {
    if (p) CHECK(cudaFree(p));
    CHECK(cudaMalloc(&p, floats * sizeof(float)));
    have = floats;
  }
  return p;
}

template <class Act, int kN, int kPoly, bool kStaged, bool kFast>
void run_chunked(ScanArgs<Act> a, cudaStream_t s, int waves, int64_t len = 0) {
  choose_chunks<Act, kN, kPoly, kStaged, kFast>(a, waves, len);
  const unsigned channel_blocks = unsigned((a.channels + kThreads - 1) / kThreads);
  if (a.chunks > 1) {
    float* buf = scratch(size_t(a.batch * a.chunks * a.channels) * (kN + 1));
    a.chunk_state = buf;
    a.chunk_dt_sum = buf + a.batch * a.chunks * a.channels * kN;
    const int64_t summaries = a.state ? a.chunks : a.chunks - 1;
    const dim3 grid(channel_blocks, unsigned(summaries), unsigned(a.batch));
    if constexpr (kStaged) scan_staged_kernel<Act, kN, false, kPoly, kFast><<<grid, kThreads, 0, s>>>(a);
    else scan_chunk_kernel<Act, kN, false, kPoly, kFast><<<grid, kThreads, 0, s>>>(a);
    CHECK(cudaGetLastError());
    const int64_t threads = a.batch * a.channels * kN;
    scan_carry_kernel<<<unsigned((threads + 255) / 256), 256, 0, s>>>(a.A, a.state, a.chunk_state, a.chunk_dt_sum,
                                                                       a.batch, a.channels, a.N, kN, a.chunks);
    CHECK(cudaGetLastError());
  }
  const dim3 grid(channel_blocks, unsigned(a.chunks), unsigned(a.batch));
  if constexpr (kStaged) scan_staged_kernel<Act, kN, true, kPoly, kFast><<<grid, kThreads, 0, s>>>(a);
  else scan_chunk_kernel<Act, kN, true, kPoly, kFast><<<grid, kThreads, 0, s>>>(a);
  CHECK(cudaGetLastError());
}

// ================================================================ harness
struct Version {
  std::string name;
  std::function<void(cudaStream_t)> run;
  bool aligned_rows_only = false;  // 16-byte copies of u, delta, z rows (v4)
};

uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return uint32_t(x);
}
float uniform(uint64_t i, uint64_t seed, float lo, float hi) {
  return lo + (hi - lo) * float(hash32(i * 0x9E3779B97F4A7C15ULL + seed) >> 8) * (1.0f / 16777216.0f);
}

__global__ void fill_kernel(float* out, int64_t n, uint64_t seed, float lo, float hi) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint64_t x = uint64_t(i) * 0x9E3779B97F4A7C15ULL + seed;
  x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ULL, x ^= x >> 33;
  out[i] = lo + (hi - lo) * float(uint32_t(x) >> 8) * (1.0f / 16777216.0f);
}
template <class Act>
__global__ void convert_kernel(const float* in, Act* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = from_float<Act>(in[i]);
}
template <class Act>
__global__ void to_f32_kernel(const Act* in, float* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = to_float(in[i]);
}

// out[r * width + j] = y[r * ld + columns[j]] for r < rows.
template <class Act>
__global__ void gather_columns_kernel(const Act* y, int64_t ld, const int64_t* columns, int64_t width, int64_t rows,
                                      Act* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * width) out[i] = y[i / width * ld + columns[i % width]];
}

// A device buffer of n Acts, random in [lo, hi), and its values as floats on the host (for the
// reference: exactly what the GPU reads).
template <class Act>
struct Input {
  Act* dev = nullptr;
  std::vector<float> host;
  int64_t n = 0;
  void make(int64_t count, uint64_t seed, float lo, float hi) {
    n = count;
    float* tmp;
    CHECK(cudaMalloc(&dev, size_t(n) * sizeof(Act)));
    CHECK(cudaMalloc(&tmp, size_t(n) * sizeof(float)));
    const unsigned blocks = unsigned((n + 255) / 256);
    fill_kernel<<<blocks, 256>>>(tmp, n, seed, lo, hi);
    convert_kernel<Act><<<blocks, 256>>>(tmp, dev, n);
    to_f32_kernel<Act><<<blocks, 256>>>(dev, tmp, n);
    host.resize(size_t(n));
    CHECK(cudaMemcpy(host.data(), tmp, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost));
    CHECK(cudaFree(tmp));
  }
  void release() {
    if (dev) CHECK(cudaFree(dev));
    dev = nullptr;
    host = {};
  }
};

struct FloatBuf {
  float* dev = nullptr;
  std::vector<float> host;
  void make(const std::vector<float>& v) {
    host = v;
    CHECK(cudaMalloc(&dev, v.size() * sizeof(float)));
    CHECK(cudaMemcpy(dev, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  void release() {
    if (dev) CHECK(cudaFree(dev));
    dev = nullptr;
  }
};

// One problem: contiguous inputs [batch, T, D], z, D, bias, an initial state.
template <class Act>
struct Problem {
  int64_t batch, T, D, N;
  Input<Act> u, delta, z, B, C;
  FloatBuf A, Dskip, bias, state0;
  Act* y = nullptr;
  float* state = nullptr;

  Problem(const Problem&) = delete;
  Problem(int64_t batch_, int64_t T_, int64_t D_, int64_t N_, uint64_t seed) : batch(batch_), T(T_), D(D_), N(N_) {
    u.make(batch * T * D, seed + 1, -2, 2);
    delta.make(batch * T * D, seed + 2, -3, 0.5);  // with the bias below: dt from 0.0025 to 0.47
    z.make(batch * T * D, seed + 3, -3, 3);
    B.make(batch * T * N, seed + 4, -1, 1);
    C.make(batch * T * N, seed + 5, -1, 1);
    std::vector<float> a(size_t(D * N)), dsk(static_cast<size_t>(D)), bi(static_cast<size_t>(D)),
        s0(size_t(batch * D * N));
    for (int64_t i = 0; i < D * N; ++i) a[size_t(i)] = -float(i % N + 1) * uniform(uint64_t(i), seed + 6, 0.5f, 1.5f);
    for (int64_t i = 0; i < D; ++i) dsk[size_t(i)] = uniform(uint64_t(i), seed + 7, -1, 1);
    for (int64_t i = 0; i < D; ++i) bi[size_t(i)] = uniform(uint64_t(i), seed + 8, -3, -1);
    for (int64_t i = 0; i < batch * D * N; ++i) s0[size_t(i)] = uniform(uint64_t(i), seed + 9, -1, 1);
    A.make(a), Dskip.make(dsk), bias.make(bi), state0.make(s0);
    CHECK(cudaMalloc(&y, size_t(batch * T * D) * sizeof(Act)));
    CHECK(cudaMalloc(&state, size_t(batch * D * N) * sizeof(float)));
  }
  ~Problem() {
    u.release(), delta.release(), z.release(), B.release(), C.release();
    A.release(), Dskip.release(), bias.release(), state0.release();
    CHECK(cudaFree(y));
    CHECK(cudaFree(state));
  }

  ScanArgs<Act> args(bool with_state) {
    ScanArgs<Act> a{};
    a.u = u.dev, a.delta = delta.dev, a.B = B.dev, a.C = C.dev, a.z = z.dev, a.y = y;
    a.ld_u = a.ld_delta = a.ld_z = a.ld_y = D;
    a.ld_B = a.ld_C = N;
    a.delta_bias = bias.dev, a.A = A.dev, a.D = Dskip.dev;
    a.state = with_state ? state : nullptr;
    a.batch = batch, a.T = T, a.channels = D, a.N = N, a.softplus = true;
    return a;
  }
  void reset_state() {
    CHECK(cudaMemcpy(state, state0.dev, size_t(batch * D * N) * sizeof(float), cudaMemcpyDeviceToDevice));
  }

  // The recurrence in double for channel d of row b: y over T and the final state.
  void reference(int64_t b, int64_t d, std::vector<double>& y_out, std::vector<double>& h) const {
    h.assign(size_t(N), 0.0);
    for (int64_t n = 0; n < N; ++n) h[size_t(n)] = state0.host[size_t((b * D + d) * N + n)];
    y_out.resize(size_t(T));
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = size_t((b * T + t) * D + d), r = size_t((b * T + t) * N);
      const double raw = double(delta.host[i]) + bias.host[size_t(d)];
      const double dt = raw > 20 ? raw : std::log1p(std::exp(raw));
      double y = 0;
      for (int64_t n = 0; n < N; ++n) {
        h[size_t(n)] = std::exp(dt * A.host[size_t(d * N + n)]) * h[size_t(n)] + dt * B.host[r + size_t(n)] * u.host[i];
        y += C.host[r + size_t(n)] * h[size_t(n)];
      }
      y += double(Dskip.host[size_t(d)]) * u.host[i];
      const double zv = z.host[i];
      y *= zv / (1 + std::exp(-zv));
      y_out[size_t(t)] = y;
    }
  }

  // max |got - want| / max |want| over the given channels of every row, for y and the final state
  // (the reference is computed on the first call; later calls must pass the same channels).
  std::vector<std::vector<double>> ref_y, ref_h;
  std::pair<double, double> errors(const std::vector<int64_t>& channels) {
    if (ref_y.empty()) {
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t d : channels) {
          ref_y.emplace_back();
          ref_h.emplace_back();
          reference(b, d, ref_y.back(), ref_h.back());
        }
      }
    }
    // Only the checked channels of y come back (gathered on the GPU: at 100K tokens all of y is 800 MB).
    const int64_t width = int64_t(channels.size());
    int64_t* columns = nullptr;
    Act* gathered = nullptr;
    CHECK(cudaMalloc(&columns, size_t(width) * sizeof(int64_t)));
    CHECK(cudaMalloc(&gathered, size_t(batch * T * width) * sizeof(Act)));
    CHECK(cudaMemcpy(columns, channels.data(), size_t(width) * sizeof(int64_t), cudaMemcpyHostToDevice));
    gather_columns_kernel<Act><<<unsigned((batch * T * width + 255) / 256), 256>>>(y, D, columns, width, batch * T,
                                                                                   gathered);
    CHECK(cudaGetLastError());
    std::vector<Act> y_dev(size_t(batch * T * width));
    std::vector<float> s_dev(size_t(batch * D * N));
    CHECK(cudaMemcpy(y_dev.data(), gathered, y_dev.size() * sizeof(Act), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(s_dev.data(), state, s_dev.size() * sizeof(float), cudaMemcpyDeviceToHost));
    CHECK(cudaFree(columns));
    CHECK(cudaFree(gathered));
    double ydiff = 0, yscale = 0, sdiff = 0, sscale = 0;
    size_t k = 0;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t j = 0; j < width; ++j) {
        const int64_t d = channels[size_t(j)];
        const std::vector<double>& want = ref_y[k];
        const std::vector<double>& h = ref_h[k++];
        for (int64_t t = 0; t < T; ++t) {
          const double got = host_float(y_dev[size_t((b * T + t) * width + j)]);
          if (std::isnan(got)) return {INFINITY, INFINITY};
          ydiff = std::max(ydiff, std::fabs(got - want[size_t(t)]));
          yscale = std::max(yscale, std::fabs(want[size_t(t)]));
        }
        for (int64_t n = 0; n < N; ++n) {
          const double got = s_dev[size_t((b * D + d) * N + n)];
          if (std::isnan(got)) return {INFINITY, INFINITY};
          sdiff = std::max(sdiff, std::fabs(got - h[size_t(n)]));
          sscale = std::max(sscale, std::fabs(h[size_t(n)]));
        }
      }
    }
    return {ydiff / std::max(yscale, 1e-30), sdiff / std::max(sscale, 1e-30)};
  }
  static double host_float(float v) { return v; }
  static double host_float(bf16 v) { return double(__bfloat162float(v)); }
};

std::string fmt_len(int64_t len) { return "v5 len " + std::to_string(len); }

template <class Act, int kN>
std::vector<Version> versions(Problem<Act>& p, bool with_state, bool sweep) {
  std::vector<Version> out;
  auto add = [&](std::string name, auto run) {
    out.push_back({name, [&p, with_state, run](cudaStream_t s) { run(p.args(with_state), s); },
                   name.starts_with("v4") || (name.starts_with("v5") && !name.starts_with("v5 direct"))});
  };
  add("v1", [](ScanArgs<Act> a, cudaStream_t s) { run_v1<Act, kN>(a, s); });
  add("v2", [](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 0, false, false>(a, s, 2); });
  add("v3 poly 2", [](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 2, false, false>(a, s, 2); });
  add("v4", [](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 0, true, false>(a, s, 2); });
  add("v5", [](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 0, true, true>(a, s, 2); });
  add("v5 direct", [](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 0, false, true>(a, s, 2); });
  add("v5 poly 2", [](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 2, true, true>(a, s, 2); });
  if (sweep) {
    add("v5 waves 1", [](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 0, true, true>(a, s, 1); });
    add("v5 waves 3", [](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 0, true, true>(a, s, 3); });
    for (const int64_t len : {64, 72, 80, 96, 100, 104, 112, 124, 128, 176})
      add(fmt_len(len), [len](ScanArgs<Act> a, cudaStream_t s) { run_chunked<Act, kN, 0, true, true>(a, s, 2, len); });
  }
  return out;
}

// Poisons y, restores the initial state, runs, and checks against the double recurrence.
template <class Act>
bool check(Problem<Act>& p, const Version& v, const std::vector<int64_t>& channels, double tol, const char* what) {
  if (v.aligned_rows_only && p.D * sizeof(Act) % 16 != 0) {
    std::printf("  %-12s %-40s skipped: rows not 16-byte aligned\n", v.name.c_str(), what);
    return true;
  }
  CHECK(cudaMemset(p.y, 0xFF, size_t(p.batch * p.T * p.D) * sizeof(Act)));  // NaN in F32 and BF16
  p.reset_state();
  v.run(nullptr);
  CHECK(cudaDeviceSynchronize());
  const auto [ey, es] = p.errors(channels);
  // The state is F32 in both modes; in BF16 mode its decays come from the exp unit (~1e-7 each,
  // adding up over slow decays' ~1000 steps).
  const bool ok = ey < tol && es < (sizeof(Act) == 4 ? 1e-5 : 1e-3);
  std::printf("  %-12s %-40s y %.2e  state %.2e  %s\n", v.name.c_str(), what, ey, es, ok ? "ok" : "FAILED");
  return ok;
}

template <class Act, int kN>
bool check_small(int64_t batch, int64_t T, int64_t D, const char* dtype, double tol) {
  Problem<Act> p(batch, T, D, kN, uint64_t(T * 131 + D));
  char what[96];
  std::snprintf(what, sizeof what, "%s B %lld T %lld D %lld N %d", dtype, (long long)batch, (long long)T,
                (long long)D, kN);
  std::vector<int64_t> all(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) all[size_t(d)] = d;
  bool ok = true;
  for (const Version& v : versions<Act, kN>(p, true, false)) ok &= check(p, v, all, tol, what);
  return ok;
}

double median_ms(const std::function<void(cudaStream_t)>& fn, int reps) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) fn(nullptr);
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CHECK(cudaEventRecord(start));
    fn(nullptr);
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  return ms[ms.size() / 2];
}

// The issue's shape at `length` tokens, version `name` (default v5, the engine's) run twice: the second
// for a profiler (ncu -k regex:... --launch-skip ... ; dev/cuda/ncu_lines.py for its per-line view).
int profile(int64_t length, const std::string& name) {
  Problem<bf16> p(1, length, 4096, 16, 7);
  for (const Version& v : versions<bf16, 16>(p, false, false)) {
    if (v.name != name) continue;
    for (int i = 0; i < 2; ++i) v.run(nullptr);
    CHECK(cudaDeviceSynchronize());
    std::printf("profiled %s at T %lld\n", name.c_str(), (long long)length);
    return 0;
  }
  std::fprintf(stderr, "no version '%s'\n", name.c_str());
  return 2;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // every line out as it is printed, even into a pipe
  if (argc >= 3 && std::string(argv[1]) == "profile" && std::atoll(argv[2]) > 0)
    return profile(std::atoll(argv[2]), argc > 3 ? argv[3] : "v5");
  if (argc != 1) {
    std::fprintf(stderr, "usage: selective_scan [profile T [VERSION]]\n");
    return 2;
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
  bool ok = true;

  std::printf("== checks at odd shapes (every channel, y and final state vs the double recurrence)\n");
  ok &= check_small<float, 16>(2, 1, 1537, "f32", 1e-5);
  ok &= check_small<float, 16>(2, 17, 1537, "f32", 1e-5);
  ok &= check_small<float, 16>(2, 300, 1537, "f32", 1e-5);
  ok &= check_small<float, 16>(2, 2049, 1537, "f32", 1e-5);
  ok &= check_small<float, 4>(2, 2049, 129, "f32", 1e-5);
  ok &= check_small<float, 16>(2, 2049, 1544, "f32", 1e-5);  // aligned rows, a partial last block: v4 too
  ok &= check_small<float, 4>(3, 301, 260, "f32", 1e-5);
  ok &= check_small<bf16, 16>(2, 300, 1537, "bf16", 2e-2);
  ok &= check_small<bf16, 16>(2, 2049, 1544, "bf16", 2e-2);
  ok &= check_small<bf16, 16>(1, 20011, 257, "bf16", 2e-2);

  std::printf("== batch 1, D 4096, N 16, bf16, with z, D, delta_bias (no state)\n");
  constexpr int64_t kD = 4096, kN = 16;
  std::vector<int64_t> sampled;
  for (int64_t d = 0; d < kD; d += 131) sampled.push_back(d);
  sampled.push_back(kD - 1);
  struct Row {
    int64_t T;
    std::vector<std::pair<std::string, double>> ms;
  };
  std::vector<Row> rows;
  for (int64_t T : kLengths) {
    Problem<bf16> p(1, T, kD, kN, 7);
    char what[64];
    std::snprintf(what, sizeof what, "T %lld (sampled channels)", (long long)T);
    Row row{T, {}};
    // Checked with an initial and final state (to see the state too), timed without, as the peer was.
    const std::vector<Version> checked = versions<bf16, kN>(p, true, true), timed = versions<bf16, kN>(p, false, true);
    for (size_t i = 0; i < timed.size(); ++i) {
      // v1 walks all T tokens in one thread per channel: 0.1-0.15 s a run past 16K, so not run there.
      if (timed[i].name == "v1" && T > 16384) {
        row.ms.push_back({timed[i].name, NAN});
        continue;
      }
      ok &= check(p, checked[i], sampled, 2e-2, what);
      row.ms.push_back({timed[i].name, median_ms(timed[i].run, T >= 65536 ? 10 : 30)});
    }
    rows.push_back(row);
  }

  std::printf("\n| tokens | bytes floor | exp floor | peer |");
  for (const auto& [name, ms] : rows[0].ms) std::printf(" %s |", name.c_str());
  std::printf(" best / peer |\n|---|---|---|---|");
  for (size_t i = 0; i < rows[0].ms.size(); ++i) std::printf("---|");
  std::printf("---|\n");
  for (size_t r = 0; r < rows.size(); ++r) {
    const double T = double(rows[r].T);
    const double bytes_ms = T * 32832.0 / 4.24e12 * 1e3;
    const double exp_ms = T * 4096.0 * 19.0 / (double(prop.multiProcessorCount) * 16.0 * 1.98e9) * 1e3;
    std::printf("| %lld | %.3f ms | %.3f ms | %.2f ms |", (long long)rows[r].T, bytes_ms, exp_ms, kPeerMs[r]);
    double best = 1e30;
    for (const auto& [name, ms] : rows[r].ms) {
      if (std::isnan(ms)) {
        std::printf(" - |");
        continue;
      }
      std::printf(" %.3f |", ms);
      best = std::min(best, ms);
    }
    std::printf(" %.2fx |\n", best / kPeerMs[r]);
  }
  std::printf("\n%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
