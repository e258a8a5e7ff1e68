// ops::conv1d_causal_backward on the GPU, the formulas of ops/cpu/conv1d_backward.cpp: with x̃ = x
// preceded by the K-1 context inputs (state0, or zeros) and pre the forward's value before the SiLU,
//   dpre = dy ⊙ silu'(pre) (pre recomputed; dy without SiLU);  dx[t] = Σ_k w[k] dpre[t+(K-1)-k];
//   dw[c,k] += Σ_{b,t} dpre[t,c] x̃[t+k-(K-1), c];  dbias[c] += Σ_{b,t} dpre[t,c].
//
// A thread per (batch row, tile of kTile tokens, pack of N channels) walks its tile in time order and
// K-1 tokens past it (the halo, whose dpre its last outputs need), keeping the last inputs and dpre
// values in registers (the window of conv1d_window.cuh), loading kAhead steps' x and dy before using
// them. Consecutive threads hold consecutive packs of one row: coalesced. Each thread writes its tile's dw and dbias sums to its
// own row of a partial buffer; add_column_sums adds the rows in order (deterministic).
#include <algorithm>

#include "ops/cuda/activation_math.cuh"
#include "ops/cuda/column_sums.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/conv1d_window.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kTile = 32;  // tokens per thread
constexpr int kAhead = 8;      // steps whose x and dy a thread loads before using them

// partial: [batch · tiles, (K+1) · C] F32, a row per (b, tile): dw in its [C, K] layout, then dbias;
// null when neither is wanted.
template <class T, int N, int KM>
__global__ void conv_backward_kernel(Rows<const T> x, const float* w, const float* bias, Rows<const float> state,
                                     Rows<const T> dy, Rows<T> dx, float* partial, ConvShape s, bool apply_silu) {
  const int64_t packs = s.C / N, i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= s.batch * s.tiles * packs) return;
  const int64_t task = i / packs, b = task / s.tiles, c = i % packs * N;
  const int64_t t0 = task % s.tiles * s.tile, t1 = std::min(s.T, t0 + s.tile), t_end = t1 + s.K - 1;
  // taps[j]: the tap of the input j steps into the window; flipped[j] = w[., KM-1-j]: the tap through
  // which dpre j steps into the window reaches the output K-1 steps before its end.
  const int64_t first_tap = KM - s.K;  // window steps before it have no tap
  float taps[KM][N], flipped[KM][N], start[N];
  load_taps<N, KM>(w, c, s.K, taps);
#pragma unroll
  for (int j = 0; j < KM; ++j) {
#pragma unroll
    for (int n = 0; n < N; ++n) flipped[j][n] = j >= first_tap ? w[(c + n) * s.K + KM - 1 - j] : 0.0f;
  }
  load_start<N>(bias, c, start);

  // At step t: inputs[j] = x̃[t - (KM-1) + j], dpre[j] = dpre[t - (KM-1) + j].
  float inputs[KM][N] = {}, dpre[KM][N] = {}, dw[KM][N] = {}, dbias[N] = {};
#pragma unroll
  for (int j = 1; j < KM; ++j) load_input<T, N>(x, state, s, b, t0 - KM + j, c, inputs[j]);
  for (int64_t t = t0; t < t_end; t += kAhead) {
    Pack<T, N> x_ahead[kAhead], dy_ahead[kAhead];
#pragma unroll
    for (int k = 0; k < kAhead; ++k) {
      if (t + k >= std::min(s.T, t_end)) break;
      x_ahead[k] = *reinterpret_cast<const Pack<T, N>*>(&x.at(b * s.T + t + k, c));
      dy_ahead[k] = *reinterpret_cast<const Pack<T, N>*>(&dy.at(b * s.T + t + k, c));
    }
#pragma unroll
    for (int k = 0; k < kAhead; ++k) {
      const int64_t step = t + k;
      if (step >= t_end) break;
      shift(inputs);
      shift(dpre);
      float(&d)[N] = dpre[KM - 1];
      if (step < s.T) {
#pragma unroll
        for (int n = 0; n < N; ++n) {
          inputs[KM - 1][n] = to_float(x_ahead[k].v[n]);
          d[n] = to_float(dy_ahead[k].v[n]);
          if (!apply_silu) continue;
          float pre = start[n];
#pragma unroll
          for (int j = 0; j < KM; ++j) pre += taps[j][n] * inputs[j][n];
          d[n] *= silu_grad_of<T>(pre);
        }
      } else {
#pragma unroll
        for (int n = 0; n < N; ++n) d[n] = 0.0f;  // past the sequence: no gradient
      }
      if (step < t1) {
#pragma unroll
        for (int n = 0; n < N; ++n) {
          dbias[n] += d[n];
#pragma unroll
          for (int j = 0; j < KM; ++j) dw[j][n] += d[n] * inputs[j][n];
        }
      }
      const int64_t out = step - (s.K - 1);  // the output whose last dpre this step gave
      if (out < t0) continue;
      float dxv[N];
#pragma unroll
      for (int n = 0; n < N; ++n) {
        dxv[n] = 0.0f;
#pragma unroll
        for (int j = 0; j < KM; ++j) dxv[n] += flipped[j][n] * dpre[j][n];
      }
      store_pack<N>(&dx.at(b * s.T + out, c), dxv);
    }
  }
  if (!partial) return;
  float* row = partial + task * (s.K + 1) * s.C;
#pragma unroll
  for (int n = 0; n < N; ++n) {
#pragma unroll
    for (int j = 0; j < KM; ++j)
      if (j >= first_tap) row[(c + n) * s.K + j - first_tap] = dw[j][n];
    row[s.K * s.C + c + n] = dbias[n];
  }
}

}  // namespace

void conv1d_causal_backward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, const Tensor& state0,
                            const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* dbias) {
  const char* op = "conv1d_causal_backward";
  check_on_gpu(op, {&x, &w, &dy, &dx});
  for (const Tensor* t : {&bias, &state0, static_cast<const Tensor*>(dw), static_cast<const Tensor*>(dbias)})
    if (t && t->defined()) check_on_gpu(op, {t});
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()) && x.dim() == 3,
            "{}: x must be F32 or BF16 rows [B, T, C], got {}", op, describe(x));
  const int64_t batch = x.size(0), T = x.size(1), C = x.size(2);
  SSM_CHECK(w.dtype() == DType::F32 && w.dim() == 2 && w.size(0) == C && w.size(1) >= 1 && w.is_contiguous(),
            "{}: w must be contiguous F32 [{}, K] for x {}, got {}", op, C, describe(x), describe(w));
  const int64_t K = w.size(1);
  SSM_CHECK(K <= kMaxTaps, "{}: K = {} taps; the GPU kernel takes at most {}", op, K, kMaxTaps);
  SSM_CHECK(!bias.defined() || is_gpu_vector(bias, C), "{}: bias must be F32 [{}], got {}", op, C, describe(bias));
  const Shape state_shape{batch, K - 1, C};
  SSM_CHECK(!state0.defined() || is_gpu_rows(state0, DType::F32, state_shape),
            "{}: state0 must be F32 rows {} for x {} and w {}, got {}", op, shape_str(state_shape), describe(x),
            describe(w), describe(state0));
  SSM_CHECK(is_gpu_rows(dy, x.dtype(), x.shape()), "{}: dy must be rows of x's shape and dtype ({}), got {}", op,
            describe(x), describe(dy));
  SSM_CHECK(is_gpu_rows(dx, x.dtype(), x.shape()), "{}: dx must be rows of x's shape and dtype ({}), got {}", op,
            describe(x), describe(dx));
  const Shape dw_shape{C, K};
  SSM_CHECK(!dw || (dw->dtype() == DType::F32 && dw->shape() == dw_shape && dw->is_contiguous()),
            "{}: dw must be contiguous F32 [{}, {}], got {}", op, C, K, describe(*dw));
  SSM_CHECK(!dbias || is_gpu_vector(*dbias, C), "{}: dbias must be F32 [{}], got {}", op, C, describe(*dbias));
  if (batch == 0 || T == 0 || C == 0) return;

  const ConvShape s{batch, T, C, K, kTile, (T + kTile - 1) / kTile};
  const int64_t n_parts = batch * s.tiles;
  const Tensor partial = dw || dbias ? Tensor::empty({n_parts, (K + 1) * C}, DType::F32, Device::CUDA) : Tensor();
  const Tensor state = K > 1 ? state0 : Tensor();  // [B, 0, C]: nothing to read
  with_activation_type(x.dtype(), op, [&]<class T>() {
    auto launch = [&]<int N, int KM>() {
      const int64_t threads = batch * s.tiles * (C / N);
      conv_backward_kernel<T, N, KM><<<blocks_for(threads, kThreads), kThreads, 0, stream()>>>(
          rows_of<const T>(x), w.data<float>(), bias.defined() ? bias.data<float>() : nullptr,
          optional_rows_of<const float>(state), rows_of<const T>(dy), rows_of<T>(dx),
          partial.defined() ? partial.data<float>() : nullptr, s, silu);
      SSM_CUDA_CHECK_LAUNCH("{} of x {} with K {}", op, shape_str(x.shape()), K);
    };
    // Packs of 2 channels: five windows of KM × N floats stay in registers (with 4, 173 registers a
    // thread left room for one block a multiprocessor).
    with_conv_window<2>(K, packs_fit(2, {&x, &dy, &dx, &bias, &state}), launch);
  });
  if (dw) add_column_sums(partial.data<float>(), n_parts, (K + 1) * C, C * K, dw->data<float>(), op);
  if (dbias) add_column_sums(partial.data<float>() + C * K, n_parts, (K + 1) * C, C, dbias->data<float>(), op);
}

}  // namespace ssm::ops::cuda
