// Mamba-1's decode step after x_proj as one kernel (ops::dt_proj_selective_scan_step): dt_proj's
// low-rank product, the softplus, the selective-scan step, the D skip and the silu(z) gate. A thread per
// (sequence, channel) dots its row of dt_proj (R values, 96-192 bytes) with the sequence's dt_low, which
// the block stages in shared memory with the sequence's B and C, then runs the channel's N states (N <= 64)
// in registers. The unfused step took two kernels (a matrix product of R-long rows, the scan's chunk
// kernel) and wrote Δ in between. Launched to overlap the kernel before it (pdl.cuh): every input but
// the weights comes from x_proj or in_proj, so it waits first.
// No engine headers (dev/cuda/decode_layer_host_check.cpp runs it on the CPU).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "element.cuh"
#ifndef SSM_SKINNY_HOST_CHECK  // dev/cuda/decode_layer_host_check.cpp brings CPU versions
#include "pdl.cuh"
#endif

namespace ssm::ops::cuda::scan_step {

constexpr int kThreads = 128;

// Row b of a tensor is at pointer + b · ld.
template <class T>
struct Args {
  const T* dt_low;  // [B, R]
  const T* w;       // dt_proj's weight [D, R], contiguous
  const T *u, *B, *C, *z;  // [B, D], [B, N], [B, N], [B, D] (z null: no gate)
  int64_t ld_dt, ld_u, ld_B, ld_C, ld_z, ld_y;
  const float* A;           // [D, N]
  const float* delta_bias;  // [D], null: none
  const float* D;           // [D], null: none
  float* state;             // [B, D, N] contiguous
  T* y;                     // [B, D]
  int channels, rank, states;
  bool delta_softplus;
};

// Σ_r row[r] · v[r] over a BF16 row of `rank` values (16-byte pieces when rank % 8 == 0 and the row is
// aligned, so that a thread has its whole row in flight, else one value at a time).
template <class T>
__device__ __forceinline__ float dot_row(const T* row, const float* v, int rank) {
  float sum = 0.0f;
  if constexpr (sizeof(T) == 2) {
    struct alignas(16) Piece {
      T v[8];
    };
    if (rank % 8 == 0 && reinterpret_cast<uintptr_t>(row) % 16 == 0) {
#pragma unroll 4
      for (int p = 0; p < rank / 8; ++p) {
        const Piece piece = reinterpret_cast<const Piece*>(row)[p];
#pragma unroll
        for (int i = 0; i < 8; ++i) sum = fmaf(to_float(piece.v[i]), v[p * 8 + i], sum);
      }
      return sum;
    }
  }
  for (int r = 0; r < rank; ++r) sum = fmaf(to_float(row[r]), v[r], sum);
  return sum;
}

// Shared memory of a block: the sequence's dt_low, B and C as floats.
inline size_t shared_bytes(int rank, int states) { return sizeof(float) * size_t(rank + 2 * states); }

// Grid (ceil(D / kThreads), B), block kThreads, shared_bytes(rank, states) of dynamic shared memory.
template <class T>
__global__ void __launch_bounds__(kThreads) dt_proj_scan_step_kernel(Args<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* dt_low = reinterpret_cast<float*>(smem);
  float* Bv = dt_low + a.rank;
  float* Cv = Bv + a.states;
  const int64_t b = blockIdx.y;
  const int d = int(blockIdx.x) * kThreads + int(threadIdx.x);
  pdl::wait_for_previous_grid();
  pdl::let_next_grid_start();
  for (int i = threadIdx.x; i < a.rank; i += kThreads) dt_low[i] = to_float(a.dt_low[b * a.ld_dt + i]);
  for (int i = threadIdx.x; i < a.states; i += kThreads) {
    Bv[i] = to_float(a.B[b * a.ld_B + i]);
    Cv[i] = to_float(a.C[b * a.ld_C + i]);
  }
  __syncthreads();
  if (d >= a.channels) return;
  float raw = dot_row(a.w + int64_t(d) * a.rank, dt_low, a.rank);
  // Δ as the unfused step reads it: dt_proj's output in the activation dtype, then the bias.
  raw = to_float(from_float<T>(raw)) + (a.delta_bias ? a.delta_bias[d] : 0.0f);
  const float dt = !a.delta_softplus ? raw : raw > 20.0f ? raw : log1pf(expf(raw));
  const float u = to_float(a.u[b * a.ld_u + d]);
  float* h = a.state + (b * a.channels + d) * a.states;
  const float* A = a.A + int64_t(d) * a.states;
  float out = 0.0f;
  for (int n = 0; n < a.states; ++n) {
    const float next = expf(dt * A[n]) * h[n] + dt * Bv[n] * u;
    h[n] = next;
    out = fmaf(next, Cv[n], out);
  }
  out += (a.D ? a.D[d] : 0.0f) * u;
  if (a.z) {
    const float z = to_float(a.z[b * a.ld_z + d]);
    out *= z / (1.0f + expf(-z));
  }
  a.y[b * a.ld_y + d] = from_float<T>(out);
}

}  // namespace ssm::ops::cuda::scan_step
