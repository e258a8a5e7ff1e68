// ops::conv1d_causal and ops::conv1d_causal_step on the GPU (depthwise, causal, optional SiLU):
//   y[b,t,c] = bias[c] + Σ_j w[c,j] · x[b, t-(K-1)+j, c],   x at negative times read from the state.
// The sequence form runs a thread per (b, tile of 1-16 tokens, pack of channels), its taps and last
// inputs in registers (conv1d_window.cuh), loading kAhead inputs before it uses them: x is read once
// (plus K-1 halo rows a tile) and the taps once a tile. (A thread per token read its 4·N taps in
// scalar loads whose warp touched 32 cache lines each: 0.63 ms for a [8, 2048, 1792] BF16 conv on the
// H200, 13% of a mamba2-130m training step.) With a state, tiles are at least K-1 tokens long, so that
// only a row's first tile reads the old state; that thread then writes the new one (the last K-1
// inputs) after its outputs: no second kernel. The step runs one kernel, a thread per (b, pack), which
// reads each state row once, using it and moving it up (conv_step_kernel).
#include <algorithm>

#include "ops/cuda/activation_math.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/conv1d_window.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"
#include "ops/cuda/pdl.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kAhead = 8;     // inputs a thread loads before computing their outputs
constexpr int kConvPack = 4;  // channels a thread: the taps and window of 8 would take 145 registers
constexpr int64_t kBusyThreads = 128 * 1024;  // threads a tile longer than 1 must leave (~1K per SM)

// The state after the sequence, written by the thread of row b's first tile (the only reader of the old
// one): x̃[T-(K-1) .. T-1], every row read before any is written (with T < K-1 old rows move up).
template <class T, int N, int KM>
__device__ __forceinline__ void write_state(Rows<const T> x, Rows<float> state, const ConvShape& s, int64_t b,
                                            int64_t c) {
  const Rows<const float> old_state{state.data, state.ld};
  float last[KM - 1][N];
#pragma unroll
  for (int j = 0; j < KM - 1; ++j)
    if (j < s.K - 1) load_input<T, N>(x, old_state, s, b, s.T - (s.K - 1) + j, c, last[j]);
#pragma unroll
  for (int j = 0; j < KM - 1; ++j)
    if (j < s.K - 1) store_pack<N>(&state.at(b * (s.K - 1) + j, c), last[j]);
}

// state rows: (b, j) at row b·(K-1) + j; state.data null: zeros in, nothing kept. With a state,
// s.tile >= K-1 (see the top).
template <class T, int N, int KM>
__global__ void conv_kernel(Rows<const T> x, const float* w, const float* bias, Rows<float> state, Rows<T> y,
                            ConvShape s, bool apply_silu) {
  pdl::wait_for_previous_grid();  // launched overlapped (pdl.cuh): nothing read before
  pdl::let_next_grid_start();
  const int64_t packs = s.C / N, i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= s.batch * s.tiles * packs) return;
  const int64_t task = i / packs, b = task / s.tiles, c = i % packs * N;
  const int64_t t0 = task % s.tiles * s.tile, t1 = std::min(s.T, t0 + s.tile);
  float taps[KM][N], start[N];
  load_taps<N, KM>(w, c, s.K, taps);
  load_start<N>(bias, c, start);
  // At token t: window[j] = x̃[t - (KM-1) + j].
  float window[KM][N];
  const Rows<const float> old_state{state.data, state.ld};
#pragma unroll
  for (int j = 1; j < KM; ++j) load_input<T, N>(x, old_state, s, b, t0 - KM + j, c, window[j]);
  for (int64_t t = t0; t < t1; t += kAhead) {
    Pack<T, N> ahead[kAhead];
#pragma unroll
    for (int k = 0; k < kAhead; ++k)
      if (t + k < t1) ahead[k] = *reinterpret_cast<const Pack<T, N>*>(&x.at(b * s.T + t + k, c));
#pragma unroll
    for (int k = 0; k < kAhead; ++k) {
      if (t + k >= t1) break;
      shift(window);
      float acc[N];
#pragma unroll
      for (int n = 0; n < N; ++n) {
        window[KM - 1][n] = to_float(ahead[k].v[n]);
        acc[n] = start[n];
#pragma unroll
        for (int j = 0; j < KM; ++j) acc[n] += taps[j][n] * window[j][n];
        if (apply_silu) acc[n] = silu_of<T>(acc[n]);
      }
      store_pack<N>(&y.at(b * s.T + t + k, c), acc);
    }
  }
  if (state.data && t0 == 0) write_state<T, N, KM>(x, state, s, b, c);
}

// One token: a thread per (b, pack of N channels) loads everything it needs first — its taps, bias,
// the K-1 state rows and x — into a window as the sequence kernel keeps one, then computes y and
// writes the state moved up by one row (x its last). With the taps read tap by tap between the state
// writes (which may alias them for the compiler), each tap's load waited for the previous one: 10.6
// us for a [64, 1792] BF16 step under ncu. y may be x: x is read before y is written.
template <class T, int N, int KM>
__global__ void conv_step_kernel(Rows<const T> x, const float* w, const float* bias, Rows<float> state, Rows<T> y,
                                 ConvShape s, bool apply_silu) {
  const int64_t packs = s.C / N, i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= s.batch * packs) return;
  const int64_t b = i / packs, c = i % packs * N, first_row = b * (s.K - 1);
  float taps[KM][N], acc[N], window[KM][N];
  load_taps<N, KM>(w, c, s.K, taps);
  load_start<N>(bias, c, acc);
  // window[j] = the input j steps before the newest: state row j - (KM-K) for KM-K <= j < KM-1, x last.
#pragma unroll
  for (int j = 0; j + 1 < KM; ++j) {
    if (j >= KM - s.K) {
      load_pack<N>(&state.at(first_row + j - (KM - s.K), c), window[j]);
    } else {
#pragma unroll
      for (int n = 0; n < N; ++n) window[j][n] = 0.0f;
    }
  }
  load_pack<N>(&x.at(b, c), window[KM - 1]);
#pragma unroll
  for (int n = 0; n < N; ++n) {
#pragma unroll
    for (int j = 0; j < KM; ++j) acc[n] += taps[j][n] * window[j][n];
    if (apply_silu) acc[n] = silu(acc[n]);
  }
#pragma unroll
  for (int j = 1; j < KM; ++j)
    if (j > KM - s.K) store_pack<N>(&state.at(first_row + j - 1 - (KM - s.K), c), window[j]);
  store_pack<N>(&y.at(b, c), acc);
}

// Checks w, bias, y and state against x [B, (T,) C] (`dims` 3 or 2) and returns the shape.
ConvShape check_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor* state,
                     const Tensor& y, int64_t dims) {
  check_on_gpu(op, {&x, &w, &y});
  if (bias.defined()) check_on_gpu(op, {&bias});
  if (state) check_on_gpu(op, {state});
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()) && x.dim() == dims,
            "{}: x must be F32 or BF16 rows {}, got {}", op, dims == 3 ? "[B, T, C]" : "[B, C]", describe(x));
  const int64_t C = x.size(-1);
  SSM_CHECK(w.dtype() == DType::F32 && w.dim() == 2 && w.size(0) == C && w.size(1) >= 1 && w.is_contiguous(),
            "{}: w must be contiguous F32 [{}, K] for x {}, got {}", op, C, describe(x), describe(w));
  const int64_t K = w.size(1), batch = x.size(0);
  SSM_CHECK(!bias.defined() || is_gpu_vector(bias, C), "{}: bias must be F32 [{}], got {}", op, C, describe(bias));
  SSM_CHECK(is_gpu_rows(y, x.dtype(), x.shape()), "{}: y must be rows of x's shape and dtype ({}), got {}", op,
            describe(x), describe(y));
  if (state) {
    const Shape expected{batch, K - 1, C};
    SSM_CHECK(is_gpu_rows(*state, DType::F32, expected), "{}: state must be F32 rows {} for x {} and w {}, got {}", op,
              shape_str(expected), describe(x), describe(w), describe(*state));
  }
  return {batch, dims == 3 ? x.size(1) : 1, C, K, 1, dims == 3 ? x.size(1) : 1};
}

// The longest tile (fewest halo and tap loads) that leaves the GPU kBusyThreads threads.
int64_t tile_for(const ConvShape& s, int64_t packs) {
  int64_t tile = 16;
  while (tile > 1 && s.batch * ((s.T + tile - 1) / tile) * packs < kBusyThreads) tile /= 2;
  return tile;
}

}  // namespace

void conv1d_causal(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor* state, Tensor& y) {
  const char* op = "conv1d_causal";
  if (state && !state->defined()) state = nullptr;
  ConvShape s = check_args(op, x, w, bias, state, y, 3);
  SSM_CHECK(s.K <= kMaxTaps, "{}: K = {} taps; the GPU kernel takes at most {}", op, s.K, kMaxTaps);
  if (s.batch * s.T * s.C == 0) return;
  if (s.K == 1) state = nullptr;  // [B, 0, C]: nothing to read or keep
  const Tensor no_state;
  with_activation_type(x.dtype(), op, [&]<class T>() {
    const bool fit = packs_fit(kConvPack, {&x, &bias, &y, state ? state : &no_state});
    with_conv_window<kConvPack>(s.K, fit, [&]<int N, int KM>() {
      const Rows<float> state_rows = state ? rows_of<float>(*state) : Rows<float>{nullptr, 0};
      const int64_t packs = s.C / N;
      s.tile = tile_for(s, packs);
      if (state) s.tile = std::max(s.tile, s.K - 1);  // only the first tile reads the old state
      s.tiles = (s.T + s.tile - 1) / s.tile;
      SSM_CUDA_CHECK(pdl::launch_overlapped(conv_kernel<T, N, KM>, dim3(blocks_for(s.batch * s.tiles * packs, kThreads)),
                                            dim3(kThreads), 0, stream(), rows_of<const T>(x), w.data<float>(),
                                            bias.defined() ? bias.data<float>() : nullptr, state_rows, rows_of<T>(y),
                                            s, silu),
                     "{} of x {} with K {}", op, shape_str(x.shape()), s.K);
    });
  });
}

void conv1d_causal_step(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor& state, Tensor& y) {
  const char* op = "conv1d_causal_step";
  SSM_CHECK(state.defined(), "{}: state is required", op);
  const ConvShape s = check_args(op, x, w, bias, &state, y, 2);
  if (s.batch * s.C == 0) return;
  SSM_CHECK(s.K <= kMaxTaps, "{}: K = {} taps; the GPU kernel takes at most {}", op, s.K, kMaxTaps);
  const Tensor no_state;
  with_activation_type(x.dtype(), op, [&]<class T>() {
    const bool fit = packs_fit(kConvPack, {&x, &bias, &y, s.K > 1 ? &state : &no_state});
    with_conv_window<kConvPack>(s.K, fit, [&]<int N, int KM>() {
      const Rows<float> state_rows = s.K > 1 ? rows_of<float>(state) : Rows<float>{nullptr, 0};
      conv_step_kernel<T, N, KM><<<blocks_for(s.batch * s.C / N, kThreads), kThreads, 0, stream()>>>(
          rows_of<const T>(x), w.data<float>(), bias.defined() ? bias.data<float>() : nullptr, state_rows,
          rows_of<T>(y), s, silu);
      SSM_CUDA_CHECK_LAUNCH("{} of x {} with K {}", op, shape_str(x.shape()), s.K);
    });
  });
}

}  // namespace ssm::ops::cuda
