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
// Kernels 1 and 3 stage each tile's u, delta and z through shared memory by cp.async when their rows
// are 16-byte aligned (the usual case), else each thread loads its own (strided slices at odd offsets).
// dev/cuda/selective_scan.cu holds this kernel's versions, timings and the arithmetic behind them.
//
// Decays, softplus and the gate: accurate in F32 mode, on the exp unit in BF16 mode, where the kernel
// is bound by issued instructions as much as by the exp unit (selective_scan_math.cuh).
//
// selective_scan_forward_saving_chunk_states is the same three kernels with the caller's chunk length:
// kernel 3 also writes each chunk's starting state (kernel 2's h_in) for the backward.
//
// N is rounded up to a compiled state width kN (4, 8, 16, 32, 64); the padding states have A = 0 and
// B = C = 0, so they stay 0 and add nothing, with no masks in the token loop.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/selective_scan_checks.h"
#include "ops/cuda/selective_scan_math.cuh"  // decay, dt_softplus, gate

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 128;           // channels per block
constexpr int kTile = 8;                // tokens per shared-memory tile of B and C
constexpr int64_t kMinChunkLen = 64;    // shorter chunks cost more in carries than they gain
constexpr int kWaves = 2;               // blocks to launch, in multiples of what the GPU holds at once
constexpr int kCarryBatch = 16;         // chunk summaries the carry kernel loads a batch (two in flight)

template <class Act>
struct ScanArgs {
  const Act *u, *delta, *B, *C, *z;  // row b * T + t of each at row * ld_<name>; z may be null
  Act* y;
  int64_t ld_u, ld_delta, ld_B, ld_C, ld_z, ld_y;
  const float *delta_bias, *A, *D;  // [channels] or null, [channels, N], [channels] or null
  const float* state_in;            // [batch, channels, N]; null: zeros
  float* state_out;                 // [batch, channels, N] (may be state_in); null: not written
  float* saved_states;              // [batch, chunks, channels, N]: h_in(c) written; may be null
  float* chunk_state;               // [batch, chunks, channels, kN]: h_c from 1, then h_in(c) from 2
  float* chunk_dt_sum;              // [batch, chunks, channels]: S_c
  int64_t batch, T, channels, N;
  int64_t chunk_len, chunks;        // chunk_len 0: chosen by launch()
  bool softplus;
};

// A row of a shared-memory tile into registers, 16 bytes a load (every thread reads the same row).
template <int kN>
__device__ __forceinline__ void load_row(const float* row, float* out) {
#pragma unroll
  for (int n = 0; n < kN; n += 4) {
    const float4 v = *reinterpret_cast<const float4*>(row + n);
    out[n] = v.x, out[n + 1] = v.y, out[n + 2] = v.z, out[n + 3] = v.w;
  }
}

// 16 bytes global -> shared without passing through registers; `bytes` < 16 fills the rest with zeros.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int bytes) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all_but_newest() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

// Kernels 1 (kOutput false) and 3 (kOutput true). Grid: (channel blocks, chunks, batch).
// Each tile's delta, u (and z) reach a thread one of two ways:
//  - kStaged (rows of u, delta and z 16-byte aligned): the block copies the tile global -> shared by
//    cp.async, 16 bytes a copy, one tile ahead (two buffers), and B and C of the next tile are loaded
//    into registers during the current one; the load latency hides behind a tile of work and each
//    thread issues a few vector copies instead of 16-24 scalar loads with their 64-bit address math.
//  - otherwise: each thread loads its own values of the tile into registers (all in flight before the
//    first use), B and C go straight to the one shared buffer, between two barriers.
template <class Act, int kN, bool kOutput, bool kStaged>
__global__ void __launch_bounds__(kThreads) scan_chunk_kernel(const ScanArgs<Act> a) {
  constexpr int kInputs = kOutput ? 3 : 2;  // delta, u, z
  constexpr int kBuffers = kStaged ? 2 : 1;
  constexpr int kPerCopy = 16 / int(sizeof(Act));         // channels per 16-byte copy
  constexpr int kCopiesPerRow = kThreads / kPerCopy;      // copies per tile row of one input
  constexpr int kBCPerThread = (kTile * kN + kThreads - 1) / kThreads;
  __shared__ __align__(16) float B_tile[kBuffers][kTile][kN];
  __shared__ __align__(16) float C_tile[kBuffers][kOutput ? kTile : 1][kN];
  __shared__ __align__(16) Act in_tile[kStaged ? 2 : 1][kInputs][kTile][kStaged ? kThreads : 1];
  const int64_t b = blockIdx.z, chunk = blockIdx.y;
  const int64_t d0 = int64_t(blockIdx.x) * kThreads, channel = d0 + threadIdx.x;
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
  } else if (kOutput && a.state_in) {
#pragma unroll
    for (int n = 0; n < kN; ++n) h[n] = n < a.N ? a.state_in[(b * a.channels + d) * a.N + n] : 0.0f;
  }
  if (kOutput && a.saved_states && active) {
#pragma unroll
    for (int n = 0; n < kN; ++n)
      if (n < a.N) a.saved_states[chunk_at * a.N + n] = h[n];
  }
  const float bias = a.delta_bias ? a.delta_bias[d] : 0.0f;
  const float skip = a.D ? a.D[d] : 0.0f;
  // The inputs by number: 0 delta, 1 u, 2 z (null when absent); `which` known or not at compile time.
  auto input_rows = [&](int which) { return which == 0 ? a.delta : which == 1 ? a.u : a.z; };
  auto input_ld = [&](int which) { return which == 0 ? a.ld_delta : which == 1 ? a.ld_u : a.ld_z; };
  // Element i of tile t0's B (or C) as [kTile][kN]: 0 past the chunk and past N.
  auto bc_element = [&](const Act* rows, int64_t ld, int64_t t0, int i) {
    const int k = i / kN, n = i % kN;
    return k < t_end - t0 && n < a.N ? rows[(b * a.T + t0 + k) * ld + n] : Act(0.0f);
  };
  float dt_sum = 0.0f;

  // Staged: B and C of the next tile, this thread's share, in registers as loaded until its buffer is
  // free (widened to F32 only then: widened at the load, each tile waited for them before its tokens).
  Act B_next[kBCPerThread], C_next[kBCPerThread];
  auto load_bc = [&](int64_t t0) {
#pragma unroll
    for (int j = 0; j < kBCPerThread; ++j) {
      const int i = threadIdx.x + j * kThreads;
      B_next[j] = i < kTile * kN ? bc_element(a.B, a.ld_B, t0, i) : Act(0.0f);
      if constexpr (kOutput) C_next[j] = i < kTile * kN ? bc_element(a.C, a.ld_C, t0, i) : Act(0.0f);
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
  // Staged: the copies of tile t0's inputs into buffer `buf`, as one commit group.
  auto issue_copies = [&](int64_t t0, int buf) {
    const int tokens = int(min(int64_t(kTile), t_end - t0));
    for (int i = threadIdx.x; i < kInputs * kTile * kCopiesPerRow; i += kThreads) {
      const int which = i / (kTile * kCopiesPerRow), k = i / kCopiesPerRow % kTile, v = i % kCopiesPerRow;
      const int64_t c = d0 + int64_t(v) * kPerCopy;
      const Act* const rows = input_rows(which);
      int bytes = 0;
      const Act* src = a.u;  // any valid address when nothing is read
      if (rows && k < tokens && c < a.channels) {
        bytes = int(min(int64_t(kPerCopy), a.channels - c) * int64_t(sizeof(Act)));
        src = rows + (b * a.T + t0 + k) * input_ld(which) + c;
      }
      cp_async16(&in_tile[kStaged ? buf : 0][which][k][kStaged ? v * kPerCopy : 0], src, bytes);
    }
    cp_async_commit();
  };

  if constexpr (kStaged) {
    issue_copies(t_begin, 0);
    load_bc(t_begin);
    store_bc(0);
  }
  int buf = 0;
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kTile, buf ^= kBuffers - 1) {
    const int tokens = int(min(int64_t(kTile), t_end - t0));
    const bool has_next = t0 + kTile < t_end;
    const int64_t row0 = b * a.T + t0;
    float in_reg[kStaged ? 1 : kInputs][kTile];  // direct: this thread's delta, u, z of the tile
    if constexpr (kStaged) {
      // The other buffer was last read in the previous tile, before the barrier that ended it.
      if (has_next) {
        issue_copies(t0 + kTile, buf ^ 1);
        load_bc(t0 + kTile);
      } else {
        cp_async_commit();  // an empty group: "all but the newest" below is still this tile's
      }
      cp_async_wait_all_but_newest();
      __syncthreads();  // every thread's copies and B/C stores of this tile are visible
    } else {
      __syncthreads();  // the previous tile's B and C are read
      for (int i = threadIdx.x; i < kTile * kN; i += kThreads) {
        B_tile[0][i / kN][i % kN] = to_float(bc_element(a.B, a.ld_B, t0, i));
        if constexpr (kOutput) C_tile[0][i / kN][i % kN] = to_float(bc_element(a.C, a.ld_C, t0, i));
      }
#pragma unroll
      for (int k = 0; k < kTile; ++k) {
        if (k < tokens) {
          in_reg[0][k] = to_float(a.delta[(row0 + k) * a.ld_delta + d]);
          in_reg[1][k] = to_float(a.u[(row0 + k) * a.ld_u + d]);
          if (kOutput && a.z) in_reg[kInputs - 1][k] = to_float(a.z[(row0 + k) * a.ld_z + d]);
        }
      }
      __syncthreads();
    }
    auto input = [&](int which, int k) {
      if constexpr (kStaged) return to_float(in_tile[buf][which][k][threadIdx.x]);
      else return in_reg[which][k];
    };
#pragma unroll
    for (int k = 0; k < kTile; ++k) {
      if (k >= tokens) break;
      float dt = input(0, k) + bias;
      if (a.softplus) dt = dt_softplus<Act>(dt);
      const float u = input(1, k), du = dt * u;
      float Bk[kN], Ck[kN], y = 0.0f;
      load_row<kN>(B_tile[buf][k], Bk);
      if constexpr (kOutput) load_row<kN>(C_tile[buf][k], Ck);
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        h[n] = decay<Act>(A2[n] * dt) * h[n] + du * Bk[n];
        if constexpr (kOutput) y += Ck[n] * h[n];
      }
      if constexpr (kOutput) {
        y += skip * u;
        if (a.z) y *= silu_of<Act>(input(2, k));
        if (active) a.y[(row0 + k) * a.ld_y + d] = from_float<Act>(y);
      } else {
        dt_sum += dt;
      }
    }
    if constexpr (kStaged) {
      if (has_next) store_bc(buf ^ 1);
      __syncthreads();  // this buffer is read by all before the next tile's copies overwrite it
    }
  }

  if (!active) return;
  if constexpr (!kOutput) {
#pragma unroll
    for (int n = 0; n < kN; n += 4)
      *reinterpret_cast<float4*>(a.chunk_state + chunk_at * kN + n) = make_float4(h[n], h[n + 1], h[n + 2], h[n + 3]);
    a.chunk_dt_sum[chunk_at] = dt_sum;
  } else if (a.chunks == 1 && a.state_out) {
#pragma unroll
    for (int n = 0; n < kN; ++n)
      if (n < a.N) a.state_out[(b * a.channels + d) * a.N + n] = h[n];
  }
}

// Kernel 2: one thread per (row, channel, state), walking the chunks in order. Summaries exist for
// every chunk when the final state is wanted, else for all but the last. `width` is kN.
__global__ void scan_carry_kernel(const float* A, const float* state_in, float* state_out, float* chunk_state,
                                  const float* chunk_dt_sum, int64_t batch, int64_t channels, int64_t N, int width,
                                  int64_t chunks) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * channels * width) return;
  const int n = int(i % width);
  const int64_t d = i / width % channels, b = i / (width * channels);
  const bool real = n < N;
  const float A2 = real ? A[d * N + n] * kLog2e : 0.0f;
  const int64_t at_state = (b * channels + d) * N + n;
  float carry = state_in && real ? state_in[at_state] : 0.0f;
  const int64_t summaries = state_out ? chunks : chunks - 1;
  auto at = [&](int64_t c) { return (b * chunks + c) * channels + d; };
  // The next batch's summaries are loaded before the current batch's carries are stored over theirs.
  float h_end[kCarryBatch], dt_sum[kCarryBatch], next_h[kCarryBatch], next_sum[kCarryBatch];
  auto load = [&](int64_t c0) {
#pragma unroll
    for (int j = 0; j < kCarryBatch; ++j) {
      if (c0 + j < summaries) {
        next_h[j] = chunk_state[at(c0 + j) * width + n];
        next_sum[j] = chunk_dt_sum[at(c0 + j)];
      }
    }
  };
  load(0);
  for (int64_t c0 = 0; c0 < chunks; c0 += kCarryBatch) {
#pragma unroll
    for (int j = 0; j < kCarryBatch; ++j) h_end[j] = next_h[j], dt_sum[j] = next_sum[j];
    if (c0 + kCarryBatch < summaries) load(c0 + kCarryBatch);
#pragma unroll
    for (int j = 0; j < kCarryBatch; ++j) {
      const int64_t c = c0 + j;
      if (c >= chunks) break;
      chunk_state[at(c) * width + n] = carry;  // h_in(c), where h_c was
      if (c < summaries) carry = poly_exp2(A2 * dt_sum[j]) * carry + h_end[j];
    }
  }
  if (state_out && real) state_out[at_state] = carry;
}

// Blocks of the output kernel one multiprocessor holds at once.
template <class Act, int kN, bool kStaged>
int resident_blocks() {
  static const int blocks = [] {
    int n = 0;
    SSM_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, scan_chunk_kernel<Act, kN, true, kStaged>, kThreads, 0),
        "selective_scan: reading the kernel's occupancy");
    return std::max(n, 1);
  }();
  return blocks;
}

// Chunk length: enough chunks for kWaves full waves of blocks (never more, so no wave is left
// mostly empty), each at least kMinChunkLen tokens, a multiple of kTile.
template <class Act, int kN, bool kStaged>
void choose_chunks(ScanArgs<Act>& a) {
  if (a.T <= kMinChunkLen) {  // one chunk; no device queries (the step may run inside a graph capture)
    a.chunk_len = a.T;
    a.chunks = 1;
    return;
  }
  const int64_t row_blocks = a.batch * ((a.channels + kThreads - 1) / kThreads);
  const int64_t wanted = int64_t(kWaves) * multiprocessor_count() * resident_blocks<Act, kN, kStaged>();
  const int64_t chunks = std::clamp<int64_t>(wanted / row_blocks, 1, (a.T + kMinChunkLen - 1) / kMinChunkLen);
  const int64_t len = (a.T + chunks - 1) / chunks;
  a.chunk_len = (len + kTile - 1) / kTile * kTile;
  a.chunks = (a.T + a.chunk_len - 1) / a.chunk_len;
}

template <class Act, int kN, bool kStaged>
void launch(const char* op, ScanArgs<Act> a) {
  if (a.chunk_len == 0) choose_chunks<Act, kN, kStaged>(a);
  const int64_t batch = a.batch;
  const unsigned channel_blocks = blocks_for(a.channels, kThreads);
  Tensor chunk_state, chunk_dt_sum;  // scratch from the stream-ordered pool, freed after the kernels
  if (a.chunks > 1) {
    chunk_state = Tensor::empty(Shape{batch, a.chunks, a.channels, int64_t(kN)}, DType::F32, Device::CUDA);
    chunk_dt_sum = Tensor::empty(Shape{batch, a.chunks, a.channels}, DType::F32, Device::CUDA);
    a.chunk_state = chunk_state.data<float>();
    a.chunk_dt_sum = chunk_dt_sum.data<float>();
    const int64_t summaries = a.state_out ? a.chunks : a.chunks - 1;
    scan_chunk_kernel<Act, kN, false, kStaged>
        <<<dim3(channel_blocks, unsigned(summaries), unsigned(batch)), kThreads, 0, stream()>>>(a);
    SSM_CUDA_CHECK_LAUNCH("{} (chunk summaries) of batch {}, T {}, D {}, N {}", op, batch, a.T, a.channels, a.N);
    scan_carry_kernel<<<blocks_for(batch * a.channels * kN, 256), 256, 0, stream()>>>(
        a.A, a.state_in, a.state_out, a.chunk_state, a.chunk_dt_sum, batch, a.channels, a.N, kN, a.chunks);
    SSM_CUDA_CHECK_LAUNCH("{} (chunk carries) of batch {}, T {}, D {}, N {}", op, batch, a.T, a.channels, a.N);
  }
  scan_chunk_kernel<Act, kN, true, kStaged>
      <<<dim3(channel_blocks, unsigned(a.chunks), unsigned(batch)), kThreads, 0, stream()>>>(a);
  SSM_CUDA_CHECK_LAUNCH("{} of batch {}, T {}, D {}, N {}", op, batch, a.T, a.channels, a.N);
}

// Whether rows at `p`, `ld` elements apart, can be copied 16 bytes at a time (the staged kernels).
template <class Act>
bool aligned_rows(const Act* p, int64_t ld) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && ld * int64_t(sizeof(Act)) % 16 == 0;
}

template <class Act, int kN>
void launch(const char* op, const ScanArgs<Act>& a) {
  if (a.T > 0 && aligned_rows(a.u, a.ld_u) && aligned_rows(a.delta, a.ld_delta) && (!a.z || aligned_rows(a.z, a.ld_z)))
    launch<Act, kN, true>(op, a);
  else
    launch<Act, kN, false>(op, a);
}

// The kernels' arguments for checked inputs, y and T (1 for the step); states and chunks unset.
template <class Act>
ScanArgs<Act> scan_args(const SelectiveScanInputs& in, Tensor& y, int64_t T, int64_t N) {
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
  a.batch = in.u.size(0);
  a.T = T;
  a.channels = in.u.size(-1);
  a.N = N;
  a.softplus = in.delta_softplus;
  return a;
}

// Runs the kernels with N rounded up to a compiled width.
template <class Act>
void launch_for_width(const char* op, const ScanArgs<Act>& a) {
  if (a.N <= 4) launch<Act, 4>(op, a);
  else if (a.N <= 8) launch<Act, 8>(op, a);
  else if (a.N <= 16) launch<Act, 16>(op, a);
  else if (a.N <= 32) launch<Act, 32>(op, a);
  else launch<Act, 64>(op, a);
}

// y: rows of u's shape and dtype on the GPU.
void check_y(const char* op, const SelectiveScanInputs& in, const Tensor& y) {
  SSM_CHECK(is_gpu_rows(y, in.u.dtype(), in.u.shape()), "{}: y must be rows of u's shape {} and dtype {}, got {}", op,
            shape_str(in.u.shape()), dtype_name(in.u.dtype()), describe(y));
}

// Checks either form (dims 3: [B, T, *], dims 2: [B, *]) and runs it.
void run(const char* op, const SelectiveScanInputs& in, Tensor* state, Tensor& y, int64_t dims) {
  const int64_t N = check_scan_inputs(op, in, dims);
  check_y(op, in, y);
  const Shape& shape = in.u.shape();
  const int64_t batch = shape[0], channels = shape.back();
  if (state) check_gpu_f32(op, "state", *state, {batch, channels, N});
  const int64_t T = dims == 3 ? shape[1] : 1;
  if (batch == 0 || T == 0 || channels == 0) return;
  with_activation_type(in.u.dtype(), op, [&]<class Act>() {
    ScanArgs<Act> a = scan_args<Act>(in, y, T, N);
    a.state_in = a.state_out = state ? state->data<float>() : nullptr;
    launch_for_width(op, a);
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

void selective_scan_forward_saving_chunk_states(const SelectiveScanInputs& in, const Tensor& state0,
                                                int64_t chunk_size, Tensor& y, Tensor& chunk_states,
                                                Tensor* final_state) {
  const char* op = "selective_scan_forward_saving_chunk_states";
  const int64_t N = check_scan_inputs(op, in, 3);
  check_y(op, in, y);
  const int64_t batch = in.u.size(0), T = in.u.size(1), channels = in.u.size(2);
  const int64_t chunks = selective_scan_chunk_count(T, chunk_size);
  SSM_CHECK(chunks <= 65535, "{}: the GPU scan takes at most 65535 chunks, got T {} in chunks of {}", op, T,
            chunk_size);
  check_gpu_f32(op, "chunk_states", chunk_states, {batch, chunks, channels, N});
  if (state0.defined()) check_gpu_f32(op, "state0", state0, {batch, channels, N});
  if (final_state) check_gpu_f32(op, "final_state", *final_state, {batch, channels, N});
  if (batch == 0 || channels == 0) return;
  // T = 0 runs too: kernel 3 alone, writing the initial state as chunk 0's and as the final state.
  with_activation_type(in.u.dtype(), op, [&]<class Act>() {
    ScanArgs<Act> a = scan_args<Act>(in, y, T, N);
    a.state_in = state0.defined() ? state0.data<float>() : nullptr;
    a.state_out = final_state ? final_state->data<float>() : nullptr;
    a.saved_states = chunk_states.data<float>();
    a.chunk_len = chunk_size;
    a.chunks = chunks;
    launch_for_width(op, a);
  });
}

}  // namespace ssm::ops::cuda
