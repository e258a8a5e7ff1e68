// ops::selective_scan and ops::selective_scan_step (Mamba-1 S6) on the GPU.
//
// One thread per (batch row, channel) walks tokens in order, holding the channel's N states and its
// row of A (times log2 e: each decay is a 2^x) in registers. A block is kThreads consecutive
// channels, so each token's u, delta, z and y are one coalesced access per warp; B and C of a tile
// of kTile tokens, the same for every channel, go through shared memory as F32.
//
// At batch 1 there are only D channels (4096 at Mamba-1 2.8B's width), too few threads to fill the
// GPU, so a long sequence is cut into chunks that run in parallel, in three kernels:
//   1. summary: each (row, chunk, channel) runs its chunk from a zero state and keeps its final
//      state h_c and its sum of dt, S_c (A is constant in time, so the chunk's decay is 2^(A2 S_c));
//   2. carry: each (row, channel, state) walks the chunks in order,
//      h_in(c + 1) = 2^(A2 S_c) h_in(c) + h_c, from the initial state; its last value is the final state;
//   3. output: each chunk runs again from its h_in, now writing y.
// Every decay is computed twice (in 1 and 3), the price of the parallelism; a short sequence, a large
// batch and the one-token step fit the GPU in one chunk: kernel 3 alone, on the initial state.
// dev/cuda/selective_scan.cu holds this kernel's versions, timings and the arithmetic behind them.
//
// Decays: in F32 mode (the parity mode) by poly_exp2, whose errors do not add up along a slow
// decay's thousands of steps; in BF16 mode on the exp unit, several times faster, whose ~1e-7 per
// step stays far below bf16's rounding.
//
// N is rounded up to a compiled state width kN (4, 8, 16, 32, 64); the padding states have A = 0 and
// B = C = 0, so they stay 0 and add nothing, with no masks in the token loop.
#include <algorithm>
#include <type_traits>

#include "ops/cuda/activation_math.cuh"  // silu, softplus
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 128;           // channels per block
constexpr int kTile = 8;                // tokens per shared-memory tile of B and C
constexpr int64_t kMinChunkLen = 64;    // shorter chunks cost more in carries than they gain
constexpr int kWaves = 2;               // blocks to launch, in multiples of what the GPU holds at once
constexpr int64_t kCarryBatch = 8;      // chunk summaries the carry kernel loads before using them

template <class Act>
struct ScanArgs {
  const Act *u, *delta, *B, *C, *z;  // row b * T + t of each at row * ld_<name>; z may be null
  Act* y;
  int64_t ld_u, ld_delta, ld_B, ld_C, ld_z, ld_y;
  const float *delta_bias, *A, *D;  // [channels] or null, [channels, N], [channels] or null
  float* state;                     // [batch, channels, N]; null: zeros in, nothing out
  float* chunk_state;               // [batch, chunks, channels, kN]: h_c from 1, then h_in(c) from 2
  float* chunk_dt_sum;              // [batch, chunks, channels]: S_c
  int64_t batch, T, channels, N, chunk_len, chunks;
  bool softplus;
};

template <class Act>
__device__ __forceinline__ float decay(float x) {
  if constexpr (std::is_same_v<Act, float>) return poly_exp2(x);
  else return fast_exp2(x);
}

// A row of a shared-memory tile into registers, 16 bytes a load (every thread reads the same row).
template <int kN>
__device__ __forceinline__ void load_row(const float* row, float* out) {
#pragma unroll
  for (int n = 0; n < kN; n += 4) {
    const float4 v = *reinterpret_cast<const float4*>(row + n);
    out[n] = v.x, out[n + 1] = v.y, out[n + 2] = v.z, out[n + 3] = v.w;
  }
}

// Kernels 1 (kOutput false) and 3 (kOutput true). Grid: (channel blocks, chunks, batch).
template <class Act, int kN, bool kOutput>
__global__ void __launch_bounds__(kThreads) scan_chunk_kernel(const ScanArgs<Act> a) {
  __shared__ __align__(16) float B_tile[kTile][kN];
  __shared__ __align__(16) float C_tile[kOutput ? kTile : 1][kN];
  const int64_t b = blockIdx.z, chunk = blockIdx.y;
  const int64_t channel = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = channel < a.channels;
  // Threads past the last channel compute on the last one (valid reads) and write nothing; they
  // still take part in the tile loads and barriers.
  const int64_t d = active ? channel : a.channels - 1;
  const int64_t t_begin = chunk * a.chunk_len, t_end = min(a.T, t_begin + a.chunk_len);
  const int64_t chunk_at = (b * a.chunks + chunk) * a.channels + d;  // in chunk_state (times kN), chunk_dt_sum

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
    __syncthreads();  // the previous tile's B and C are read
    for (int i = threadIdx.x; i < kTile * kN; i += kThreads) {
      const int k = i / kN, n = i % kN;
      const bool real = k < tokens && n < a.N;
      B_tile[k][n] = real ? to_float(a.B[(row0 + k) * a.ld_B + n]) : 0.0f;
      if constexpr (kOutput) C_tile[k][n] = real ? to_float(a.C[(row0 + k) * a.ld_C + n]) : 0.0f;
    }
    // This thread's inputs for the tile, all loads in flight before the first use.
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
      if (a.softplus) dt = softplus(dt);
      const float du = dt * u[k];
      float Bk[kN], Ck[kN], y = 0.0f;
      load_row<kN>(B_tile[k], Bk);
      if constexpr (kOutput) load_row<kN>(C_tile[k], Ck);
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        h[n] = decay<Act>(A2[n] * dt) * h[n] + du * Bk[n];
        if constexpr (kOutput) y += Ck[n] * h[n];
      }
      if constexpr (kOutput) {
        y += skip * u[k];
        if (a.z) y *= silu(z[k]);
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

// Kernel 2: one thread per (row, channel, state), walking the chunks in order. Summaries exist for
// every chunk when the final state is wanted, else for all but the last. `width` is kN.
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
      chunk_state[at(c) * width + n] = carry;  // h_in(c), where h_c was
      if (c < summaries) carry = poly_exp2(A2 * dt_sum[j]) * carry + h_end[j];
    }
  }
  if (state) *state = carry;
}

int sm_count() {
  static const int count = [] {
    int device = 0, n = 0;
    SSM_CUDA_CHECK(cudaGetDevice(&device), "selective_scan: reading the current device");
    SSM_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device),
                   "selective_scan: reading the multiprocessor count");
    return n;
  }();
  return count;
}

// Blocks of the output kernel one multiprocessor holds at once.
template <class Act, int kN>
int resident_blocks() {
  static const int blocks = [] {
    int n = 0;
    SSM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, scan_chunk_kernel<Act, kN, true>, kThreads, 0),
                   "selective_scan: reading the kernel's occupancy");
    return std::max(n, 1);
  }();
  return blocks;
}

// Chunk length: enough chunks for kWaves full waves of blocks (never more, so no wave is left
// mostly empty), each at least kMinChunkLen tokens, a multiple of kTile.
template <class Act, int kN>
void choose_chunks(ScanArgs<Act>& a) {
  if (a.T <= kMinChunkLen) {  // one chunk; no device queries (the step may run inside a graph capture)
    a.chunk_len = a.T;
    a.chunks = 1;
    return;
  }
  const int64_t row_blocks = a.batch * ((a.channels + kThreads - 1) / kThreads);
  const int64_t wanted = int64_t(kWaves) * sm_count() * resident_blocks<Act, kN>();
  const int64_t chunks = std::clamp<int64_t>(wanted / row_blocks, 1, (a.T + kMinChunkLen - 1) / kMinChunkLen);
  const int64_t len = (a.T + chunks - 1) / chunks;
  a.chunk_len = (len + kTile - 1) / kTile * kTile;
  a.chunks = (a.T + a.chunk_len - 1) / a.chunk_len;
}

template <class Act, int kN>
void launch(const char* op, ScanArgs<Act> a) {
  choose_chunks<Act, kN>(a);
  const int64_t batch = a.batch;
  const unsigned channel_blocks = blocks_for(a.channels, kThreads);
  Tensor chunk_state, chunk_dt_sum;  // scratch from the stream-ordered pool, freed after the kernels
  if (a.chunks > 1) {
    chunk_state = Tensor::empty(Shape{batch, a.chunks, a.channels, int64_t(kN)}, DType::F32, Device::CUDA);
    chunk_dt_sum = Tensor::empty(Shape{batch, a.chunks, a.channels}, DType::F32, Device::CUDA);
    a.chunk_state = chunk_state.data<float>();
    a.chunk_dt_sum = chunk_dt_sum.data<float>();
    const int64_t summaries = a.state ? a.chunks : a.chunks - 1;
    scan_chunk_kernel<Act, kN, false>
        <<<dim3(channel_blocks, unsigned(summaries), unsigned(batch)), kThreads, 0, stream()>>>(a);
    SSM_CUDA_CHECK_LAUNCH("{} (chunk summaries) of batch {}, T {}, D {}, N {}", op, batch, a.T, a.channels, a.N);
    scan_carry_kernel<<<blocks_for(batch * a.channels * kN, 256), 256, 0, stream()>>>(
        a.A, a.state, a.chunk_state, a.chunk_dt_sum, batch, a.channels, a.N, kN, a.chunks);
    SSM_CUDA_CHECK_LAUNCH("{} (chunk carries) of batch {}, T {}, D {}, N {}", op, batch, a.T, a.channels, a.N);
  }
  scan_chunk_kernel<Act, kN, true>
      <<<dim3(channel_blocks, unsigned(a.chunks), unsigned(batch)), kThreads, 0, stream()>>>(a);
  SSM_CUDA_CHECK_LAUNCH("{} of batch {}, T {}, D {}, N {}", op, batch, a.T, a.channels, a.N);
}

// Checks either form (dims 3: [B, T, *], dims 2: [B, *]) and runs it.
void run(const char* op, const SelectiveScanInputs& in, Tensor* state, Tensor& y, int64_t dims) {
  check_on_gpu(op, {&in.u, &in.delta, &in.A, &in.B, &in.C, &y});
  for (const Tensor* t : {&in.delta_bias, &in.D, &in.z})
    if (t->defined()) check_on_gpu(op, {t});
  if (state) check_on_gpu(op, {state});
  const char* layout = dims == 3 ? "[B, T, D]" : "[B, D]";
  const DType dtype = in.u.dtype();
  SSM_CHECK(is_activation_dtype(dtype) && is_gpu_rows(in.u, dtype) && in.u.dim() == dims,
            "{}: u must be F32 or BF16 rows {}, got {}", op, layout, describe(in.u));
  const Shape& shape = in.u.shape();
  const int64_t batch = shape[0], channels = shape.back();
  SSM_CHECK(is_gpu_rows(in.delta, dtype, shape), "{}: delta must be rows of u's shape {} and dtype {}, got {}", op,
            shape_str(shape), dtype_name(dtype), describe(in.delta));
  SSM_CHECK(in.A.dtype() == DType::F32 && in.A.dim() == 2 && in.A.size(0) == channels && in.A.is_contiguous(),
            "{}: A must be contiguous F32 [{}, N] for u {}, got {}", op, channels, shape_str(shape), describe(in.A));
  const int64_t N = in.A.size(1);
  SSM_CHECK(N <= 64, "{}: the GPU scan holds at most 64 states per channel, A is {}", op, describe(in.A));
  Shape bc_shape = shape;
  bc_shape.back() = N;
  SSM_CHECK(is_gpu_rows(in.B, dtype, bc_shape), "{}: B must be {} rows {} for A {}, got {}", op, dtype_name(dtype),
            shape_str(bc_shape), describe(in.A), describe(in.B));
  SSM_CHECK(is_gpu_rows(in.C, dtype, bc_shape), "{}: C must be {} rows {} for A {}, got {}", op, dtype_name(dtype),
            shape_str(bc_shape), describe(in.A), describe(in.C));
  SSM_CHECK(!in.delta_bias.defined() || is_gpu_vector(in.delta_bias, channels),
            "{}: delta_bias must be F32 [{}], got {}", op, channels, describe(in.delta_bias));
  SSM_CHECK(!in.D.defined() || is_gpu_vector(in.D, channels), "{}: D must be F32 [{}], got {}", op, channels,
            describe(in.D));
  SSM_CHECK(!in.z.defined() || is_gpu_rows(in.z, dtype, shape),
            "{}: z must be rows of u's shape {} and dtype {}, got {}", op, shape_str(shape), dtype_name(dtype),
            describe(in.z));
  SSM_CHECK(is_gpu_rows(y, dtype, shape), "{}: y must be rows of u's shape {} and dtype {}, got {}", op,
            shape_str(shape), dtype_name(dtype), describe(y));
  if (state) {
    const Shape expected{batch, channels, N};
    SSM_CHECK(state->dtype() == DType::F32 && state->shape() == expected && state->is_contiguous(),
              "{}: state must be contiguous F32 {} for u {} and A {}, got {}", op, shape_str(expected),
              shape_str(shape), describe(in.A), describe(*state));
  }
  const int64_t T = dims == 3 ? shape[1] : 1;
  SSM_CHECK(batch <= 65535, "{}: the GPU scan takes at most 65535 sequences per call, got {}", op, batch);
  if (batch == 0 || T == 0 || channels == 0) return;

  with_activation_type(dtype, op, [&]<class Act>() {
    ScanArgs<Act> a{};
    a.u = static_cast<const Act*>(in.u.raw());
    a.delta = static_cast<const Act*>(in.delta.raw());
    a.B = static_cast<const Act*>(in.B.raw());
    a.C = static_cast<const Act*>(in.C.raw());
    a.z = in.z.defined() ? static_cast<const Act*>(in.z.raw()) : nullptr;
    a.y = static_cast<Act*>(y.raw());
    a.ld_u = rows_of<const Act>(in.u).ld;
    a.ld_delta = rows_of<const Act>(in.delta).ld;
    a.ld_B = rows_of<const Act>(in.B).ld;
    a.ld_C = rows_of<const Act>(in.C).ld;
    a.ld_z = in.z.defined() ? rows_of<const Act>(in.z).ld : 0;
    a.ld_y = rows_of<Act>(y).ld;
    a.delta_bias = in.delta_bias.defined() ? in.delta_bias.data<float>() : nullptr;
    a.A = in.A.data<float>();
    a.D = in.D.defined() ? in.D.data<float>() : nullptr;
    a.state = state ? state->data<float>() : nullptr;
    a.batch = batch;
    a.T = T;
    a.channels = channels;
    a.N = N;
    a.softplus = in.delta_softplus;
    if (N <= 4) launch<Act, 4>(op, a);
    else if (N <= 8) launch<Act, 8>(op, a);
    else if (N <= 16) launch<Act, 16>(op, a);
    else if (N <= 32) launch<Act, 32>(op, a);
    else launch<Act, 64>(op, a);
  });
}

}  // namespace

void selective_scan(const SelectiveScanInputs& in, Tensor* state, Tensor& y) {
  run("selective_scan", in, state && state->defined() ? state : nullptr, y, 3);
}

void selective_scan_step(const SelectiveScanInputs& in, Tensor& state, Tensor& y) {
  SSM_CHECK(state.defined(), "selective_scan_step: state is required");
  run("selective_scan_step", in, &state, y, 2);
}

}  // namespace ssm::ops::cuda
