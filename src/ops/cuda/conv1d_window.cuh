// What the sequence kernels of the causal depthwise conv share (conv1d.cu, conv1d_backward.cu): a
// thread walks a tile of tokens of one batch row for a pack of N channels, keeping the last KM inputs
// in registers (a window, newest last), the K taps aligned to the window's end so that every
// register index is known at compile time (the first KM-K window steps have zero weight).
#pragma once
#include <cstdint>

#include "ops/cuda/common.cuh"
#include "ops/cuda/packs.cuh"

namespace ssm::ops::cuda {

// Window lengths: packs of channels for every model's d_conv (4), one channel a thread up to 16 taps.
constexpr int kPackedTaps = 4;
constexpr int kMaxTaps = 16;

struct ConvShape {
  int64_t batch, T, C, K;
  int64_t tile, tiles;  // tokens a thread walks, tiles per batch row
};

// x̃[b, t, c..c+N): x (t ≥ 0), state0's row K-1+t (-(K-1) ≤ t < 0, when given), else zeros.
template <class T, int N>
__device__ __forceinline__ void load_input(Rows<const T> x, Rows<const float> state, const ConvShape& s, int64_t b,
                                           int64_t t, int64_t c, float (&v)[N]) {
  if (t >= 0) {
    load_pack<N>(&x.at(b * s.T + t, c), v);
  } else if (state.data && t >= -(s.K - 1)) {
    load_pack<N>(&state.at(b * (s.K - 1) + (s.K - 1) + t, c), v);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = 0.0f;
  }
}

// Shifts a window one step back in time: w[j] = w[j + 1], the last entry left for the new value.
template <int KM, int N>
__device__ __forceinline__ void shift(float (&window)[KM][N]) {
#pragma unroll
  for (int j = 0; j + 1 < KM; ++j) {
#pragma unroll
    for (int i = 0; i < N; ++i) window[j][i] = window[j + 1][i];
  }
}

// taps[j][n] = w[c+n, j-(KM-K)] (w is [C, K]): the tap of the input j steps into the window.
template <int N, int KM>
__device__ __forceinline__ void load_taps(const float* w, int64_t c, int64_t K, float (&taps)[KM][N]) {
#pragma unroll
  for (int j = 0; j < KM; ++j) {
#pragma unroll
    for (int n = 0; n < N; ++n) taps[j][n] = j >= KM - K ? w[(c + n) * K + j - (KM - K)] : 0.0f;
  }
}

// bias[c..c+N), or zeros without one.
template <int N>
__device__ __forceinline__ void load_start(const float* bias, int64_t c, float (&start)[N]) {
#pragma unroll
  for (int n = 0; n < N; ++n) start[n] = bias ? bias[c + n] : 0.0f;
}

// Calls launch.template operator()<N, KM>() for K ≤ kMaxTaps taps: packs of Pack channels and a window
// of 4 when K ≤ 4 and the rows allow such packs, else one channel a thread (window 4 or 16).
template <int Pack, class Launch>
void with_conv_window(int64_t K, bool packs_fit, Launch&& launch) {
  if (K > kPackedTaps) launch.template operator()<1, kMaxTaps>();
  else if (packs_fit) launch.template operator()<Pack, kPackedTaps>();
  else launch.template operator()<1, kPackedTaps>();
}

}  // namespace ssm::ops::cuda
