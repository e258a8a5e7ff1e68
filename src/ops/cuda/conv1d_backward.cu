// ops::conv1d_causal_backward on the GPU, the formulas of ops/cpu/conv1d_backward.cpp: with x̃ = x
// preceded by the K-1 context inputs (state0, or zeros) and pre the forward's value before the SiLU,
//   dpre = dy ⊙ silu'(pre) (pre recomputed; dy without SiLU);  dx[t] = Σ_k w[k] dpre[t+(K-1)-k];
//   dw[c,k] += Σ_{b,t} dpre[t,c] x̃[t+k-(K-1), c];  dbias[c] += Σ_{b,t} dpre[t,c].
//
// A block per (batch row, tile of kTile tokens, slab of kThreads packs of N channels). Its x and dy
// rows go through shared memory in stages of kChunk tokens, a 3-stage cp.async ring (16-byte copies
// with 32-bit offsets where the rows allow, element copies otherwise), so a stage's loads are in
// flight while the one before it is computed. Each thread walks its pack through the tile in time
// order and K-1 tokens past it (the halo, whose dpre its last outputs need), keeping the last inputs
// and dpre values in registers (the window of conv1d_window.cuh). (A thread per 32 tokens loading
// its own rows from global memory, 8 steps ahead, held 126 registers of mostly 64-bit addresses and
// kept 19% of DRAM busy: 248 µs for [4, 2048, 4352] BF16 on the H200.) Each thread writes its tile's
// dw and dbias sums to its own row of a partial buffer; add_column_sums adds the rows in order
// (deterministic).
#include <algorithm>

#include "ops/cuda/activation_math.cuh"
#include "ops/cuda/column_sums.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/conv1d_window.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"
#include "ops/cuda/ptx.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 128;    // packs of channels a block (its slab)
constexpr int64_t kTile = 64;    // tokens a block (a partial row of dw and dbias)
constexpr int kChunk = 8;        // tokens a stage of the copy ring
constexpr int kStages = 3;       // stages in the ring: two in flight while one is computed

// One stage: kChunk token rows of the block's slab of x and dy.
template <class T, int N>
struct alignas(16) ConvStage {
  T x[kChunk][kThreads * N];
  T dy[kChunk][kThreads * N];
};

// Copies tokens [first, first + min(rows, kChunk)) of x and dy (all < T), channels
// [c0, c0 + kThreads·N) ∩ [0, C), into a stage. copy16: rows 16-byte aligned, C a multiple of 16 bytes.
template <class T, int N>
__device__ __forceinline__ void copy_chunk(ConvStage<T, N>& stage, Rows<const T> x, Rows<const T> dy,
                                           const ConvShape& s, int64_t b, int64_t c0, int64_t first, int rows,
                                           bool copy16) {
  if (rows <= 0) return;
  constexpr int kSlab = kThreads * N;
  const int width = int(std::min<int64_t>(kSlab, s.C - c0));
  const T* x_rows = &x.at(b * s.T + first, c0);
  const T* dy_rows = &dy.at(b * s.T + first, c0);
  if (copy16) {
    constexpr int kVec = 16 / int(sizeof(T)), kVecs = kSlab / kVec;  // 16-byte pieces of a row
    for (int i = threadIdx.x; i < 2 * kChunk * kVecs; i += kThreads) {
      const int tensor = i / (kChunk * kVecs), r = i / kVecs % kChunk, col = i % kVecs * kVec;
      if (r >= rows || col >= width) continue;
      if (tensor == 0) ptx::cp_async_16(&stage.x[r][col], x_rows + r * x.ld + col, 16);
      else ptx::cp_async_16(&stage.dy[r][col], dy_rows + r * dy.ld + col, 16);
    }
  } else {
    for (int i = threadIdx.x; i < 2 * kChunk * kSlab; i += kThreads) {
      const int tensor = i / (kChunk * kSlab), r = i / kSlab % kChunk, col = i % kSlab;
      if (r >= rows || col >= width) continue;
      if (tensor == 0) stage.x[r][col] = x_rows[r * x.ld + col];
      else stage.dy[r][col] = dy_rows[r * dy.ld + col];
    }
  }
}

// partial: [batch · tiles, (K+1) · C] F32, a row per (b, tile): dw in its [C, K] layout, then dbias;
// null when neither is wanted.
template <class T, int N, int KM>
__global__ void __launch_bounds__(kThreads)
    conv_backward_kernel(Rows<const T> x, const float* w, const float* bias, Rows<const float> state,
                         Rows<const T> dy, Rows<T> dx, float* partial, ConvShape s, bool apply_silu, bool copy16) {
  __shared__ ConvStage<T, N> stages[kStages];
  const int64_t slabs = (s.C + kThreads * N - 1) / (kThreads * N), task = blockIdx.x / slabs;
  const int64_t c0 = blockIdx.x % slabs * (kThreads * N), c = c0 + threadIdx.x * N;
  const bool active = c < s.C;          // N divides C: a pack is inside or past the row
  const int64_t c_in = active ? c : 0;  // where an idle thread reads (it writes nothing)
  const int64_t b = task / s.tiles, t0 = task % s.tiles * s.tile;
  const int tile = int(std::min(s.T - t0, s.tile));  // tokens of the tile: steps before it give dw
  const int valid = int(std::min(s.T - t0, s.tile + s.K - 1));  // steps before it have dy
  const int steps = tile + int(s.K) - 1, chunks = (steps + kChunk - 1) / kChunk;
#pragma unroll
  for (int k = 0; k + 1 < kStages; ++k) {
    copy_chunk(stages[k], x, dy, s, b, c0, t0 + k * kChunk, valid - k * kChunk, copy16);
    ptx::cp_async_commit();
  }

  // taps[j]: the tap of the input j steps into the window; flipped[j] = w[., KM-1-j]: the tap through
  // which dpre j steps into the window reaches the output K-1 steps before its end.
  const int64_t first_tap = KM - s.K;  // window steps before it have no tap
  float taps[KM][N], flipped[KM][N], start[N];
  load_taps<N, KM>(w, c_in, s.K, taps);
#pragma unroll
  for (int j = 0; j < KM; ++j) {
#pragma unroll
    for (int n = 0; n < N; ++n) flipped[j][n] = j >= first_tap ? w[(c_in + n) * s.K + KM - 1 - j] : 0.0f;
  }
  load_start<N>(bias, c_in, start);

  // At step t: inputs[j] = x̃[t0 + t - (KM-1) + j], dpre[j] = dpre[t0 + t - (KM-1) + j].
  float inputs[KM][N] = {}, dpre[KM][N] = {}, dw[KM][N] = {}, dbias[N] = {};
#pragma unroll
  for (int j = 1; j < KM; ++j) load_input<T, N>(x, state, s, b, t0 - KM + j, c_in, inputs[j]);
  T* dx_out = &dx.at(b * s.T + t0, c_in);  // the next output's row
  for (int chunk = 0; chunk < chunks; ++chunk) {
    ptx::cp_async_wait_groups<kStages - 2>();
    __syncthreads();  // the stage is in for every thread; the one computed before it is free to refill
    const int next = chunk + kStages - 1;
    copy_chunk(stages[next % kStages], x, dy, s, b, c0, t0 + next * kChunk, valid - next * kChunk, copy16);
    ptx::cp_async_commit();
    const ConvStage<T, N>& stage = stages[chunk % kStages];
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
      const int step = chunk * kChunk + k;
      if (step >= steps) break;
      shift(inputs);
      shift(dpre);
      float(&d)[N] = dpre[KM - 1];
      if (step < valid) {
        const Pack<T, N> x_now = *reinterpret_cast<const Pack<T, N>*>(&stage.x[k][threadIdx.x * N]);
        const Pack<T, N> dy_now = *reinterpret_cast<const Pack<T, N>*>(&stage.dy[k][threadIdx.x * N]);
#pragma unroll
        for (int n = 0; n < N; ++n) {
          inputs[KM - 1][n] = to_float(x_now.v[n]);
          d[n] = to_float(dy_now.v[n]);
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
      if (step < tile) {
#pragma unroll
        for (int n = 0; n < N; ++n) {
          dbias[n] += d[n];
#pragma unroll
          for (int j = 0; j < KM; ++j) dw[j][n] += d[n] * inputs[j][n];
        }
      }
      if (step < s.K - 1) continue;  // no output has all its dpre yet
      float dxv[N];
#pragma unroll
      for (int n = 0; n < N; ++n) {
        dxv[n] = 0.0f;
#pragma unroll
        for (int j = 0; j < KM; ++j) dxv[n] += flipped[j][n] * dpre[j][n];
      }
      if (active) store_pack<N>(dx_out, dxv);
      dx_out += dx.ld;
    }
  }
  if (!partial || !active) return;
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
    const bool copy16 = packs_fit(kPack<T>, {&x, &dy});
    auto launch = [&]<int N, int KM>() {
      const int64_t blocks = n_parts * ((C + kThreads * N - 1) / (kThreads * N));
      conv_backward_kernel<T, N, KM><<<unsigned(blocks), kThreads, 0, stream()>>>(
          rows_of<const T>(x), w.data<float>(), bias.defined() ? bias.data<float>() : nullptr,
          optional_rows_of<const float>(state), rows_of<const T>(dy), rows_of<T>(dx),
          partial.defined() ? partial.data<float>() : nullptr, s, silu, copy16);
      SSM_CUDA_CHECK_LAUNCH("{} of x {} with K {}", op, shape_str(x.shape()), K);
    };
    // Packs of 2 channels: five windows of KM × N floats stay in registers.
    with_conv_window<2>(K, packs_fit(2, {&x, &dy, &dx, &bias, &state}), launch);
  });
  if (dw) add_column_sums(partial.data<float>(), n_parts, (K + 1) * C, C * K, dw->data<float>(), op);
  if (dbias) add_column_sums(partial.data<float>() + C * K, n_parts, (K + 1) * C, C, dbias->data<float>(), op);
}

}  // namespace ssm::ops::cuda
