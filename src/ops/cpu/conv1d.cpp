// ops::conv1d_causal and ops::conv1d_causal_step on the CPU (depthwise, causal):
//   y[b,t,c] = bias[c] + sum_j w[c,j] · x[b, t-(K-1)+j, c],   x at negative times read from the state.
// The taps are transposed once to [K, C] so that every inner loop runs over contiguous channels,
// 16 at a time in one register. Work is split into (batch, chunk of kTimeChunk tokens) tasks spread
// over OpenMP threads; a task walks whole rows, which the hardware prefetchers stream (a task per
// channel block would jump a row stride per token, which they do not follow). The state is
// rewritten after all tasks have read it. The step (T = 1 with a state) moves each row's state as it
// goes instead (step_run), so that its output may overwrite its input.
#include <algorithm>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/cpu/scratch.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using namespace vec;
using detail::describe;

constexpr int64_t kTimeChunk = 32;

struct ConvArgs {
  const float* x;  // row (b, t) at (b*T + t) * ldx
  int64_t ldx;
  const float* w;  // [C, K]
  const float* bias;
  float* state;  // row (b, j) at (b*(K-1) + j) * lds; null: zeros, not written
  int64_t lds;
  float* y;
  int64_t ldy;
  int64_t batch, T, C, K;
  bool silu;
};

// One token a row (decoding), a row a task: for each vector of channels the state's rows and x are
// read, the state moves up with x as its last row, then y is written. A row's inputs are read before
// its outputs are written, so y may be x; and the state moves on the threads, row by row, not after.
// The same sums in the same order as conv_run's.
void step_run(const ConvArgs& a, const float* taps) {
  const int64_t K = a.K, C = a.C;
#pragma omp parallel for schedule(static) if (a.batch * C * K >= (1 << 16))
  for (int64_t b = 0; b < a.batch; ++b) {
    float* sb = a.state + b * (K - 1) * a.lds;
    const float* xb = a.x + b * a.ldx;
    float* yb = a.y + b * a.ldy;
    for_each_vector(C, [&](auto tail, int64_t c, int64_t n) {
      constexpr bool kTail = decltype(tail)::value;
      f32x16 acc = a.bias ? load_n<kTail>(a.bias + c, n) : f32x16{};
      f32x16 row = load_n<kTail>(sb + c, n);
      for (int64_t j = 0; j < K - 1; ++j) {
        acc += load_n<kTail>(&taps[size_t(j * C + c)], n) * row;
        if (j + 1 < K - 1) {
          const f32x16 next = load_n<kTail>(sb + (j + 1) * a.lds + c, n);
          if (j > 0) store_n<kTail>(sb + (j - 1) * a.lds + c, row, n);
          row = next;
        } else if (j > 0) {
          store_n<kTail>(sb + (j - 1) * a.lds + c, row, n);
        }
      }
      const f32x16 last = load_n<kTail>(xb + c, n);
      acc += load_n<kTail>(&taps[size_t((K - 1) * C + c)], n) * last;
      store_n<kTail>(sb + (K - 2) * a.lds + c, last, n);
      store_n<kTail>(yb + c, a.silu ? silu(acc) : acc, n);
    });
  }
}

void conv_run(const ConvArgs& a) {
  const int64_t K = a.K, T = a.T, C = a.C;
  thread_local detail::Scratch taps_scratch;
  float* taps = taps_scratch.get<float>(size_t(K * C));  // [K, C]
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t j = 0; j < K; ++j) taps[size_t(j * C + c)] = a.w[c * K + j];
  }
  if (a.state && T == 1) return step_run(a, taps);
  const int64_t chunks = (T + kTimeChunk - 1) / kTimeChunk;
#pragma omp parallel if (a.batch * T * C * K >= (1 << 16))
  {
    thread_local detail::Scratch rows_scratch;
    const float** rows = rows_scratch.get<const float*>(size_t(K));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < a.batch * chunks; ++task) {
      const int64_t b = task / chunks, t0 = task % chunks * kTimeChunk;
      for (int64_t t = t0; t < std::min(T, t0 + kTimeChunk); ++t) {
        for (int64_t j = 0; j < K; ++j) {
          const int64_t src = t - (K - 1) + j;
          rows[size_t(j)] = src >= 0  ? a.x + (b * T + src) * a.ldx
                            : a.state ? a.state + (b * (K - 1) + K - 1 + src) * a.lds
                                      : nullptr;
        }
        float* yr = a.y + (b * T + t) * a.ldy;
        for_each_vector(C, [&](auto tail, int64_t c, int64_t n) {
          constexpr bool kTail = decltype(tail)::value;
          f32x16 acc = a.bias ? load_n<kTail>(a.bias + c, n) : f32x16{};
          for (int64_t j = 0; j < K; ++j) {  // null rows: zero padding
            if (rows[size_t(j)])
              acc += load_n<kTail>(&taps[size_t(j * C + c)], n) * load_n<kTail>(rows[size_t(j)] + c, n);
          }
          store_n<kTail>(yr + c, a.silu ? silu(acc) : acc, n);
        });
      }
    }
  }
  if (!a.state) return;
  // The new state is the last K-1 inputs: surviving old rows move up (reading ahead of the
  // writes), then the rows of x.
  const int64_t keep = (K - 1) - std::min(T, K - 1);
  for (int64_t b = 0; b < a.batch; ++b) {
    float* sb = a.state + b * (K - 1) * a.lds;
    for (int64_t j = 0; j < K - 1; ++j) {
      const float* src = j < keep ? sb + (j + T) * a.lds : a.x + (b * T + T - (K - 1) + j) * a.ldx;
      std::copy(src, src + C, sb + j * a.lds);
    }
  }
}

// Checks w, bias, y and state against x [B, (T,) C]; fills the shared fields of ConvArgs.
ConvArgs check_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, bool silu,
                    const Tensor* state, const Tensor& y, int64_t dims) {
  SSM_CHECK(detail::is_f32_rows(x) && x.dim() == dims, "{}: x must be F32 rows {}, got {}", op,
            dims == 3 ? "[B, T, C]" : "[B, C]", describe(x));
  const int64_t C = x.size(-1);
  SSM_CHECK(w.defined() && w.device() == Device::CPU && w.dtype() == DType::F32 && w.dim() == 2 && w.size(0) == C &&
                w.size(1) >= 1 && w.is_contiguous(),
            "{}: w must be contiguous F32 [{}, K] for x {}, got {}", op, C, describe(x), describe(w));
  const int64_t K = w.size(1);
  SSM_CHECK(!bias.defined() || detail::is_f32_vec(bias, C), "{}: bias must be F32 [{}], got {}", op, C, describe(bias));
  SSM_CHECK(detail::is_f32_rows(y, x.shape()), "{}: y must be F32 rows of x's shape {}, got {}", op,
            shape_str(x.shape()), describe(y));
  const int64_t batch = x.size(0);
  if (state) {
    const Shape expected{batch, K - 1, C};
    SSM_CHECK(detail::is_f32_rows(*state, expected), "{}: state must be F32 rows {} for x {} and w {}, got {}", op,
              shape_str(expected), describe(x), describe(w), describe(*state));
  }
  ConvArgs a{};
  a.x = x.data<float>();
  a.ldx = x.row_stride();
  a.w = w.data<float>();
  a.bias = bias.defined() ? bias.data<float>() : nullptr;
  a.state = state && K > 1 ? state->data<float>() : nullptr;
  a.lds = state && K > 1 ? state->row_stride() : 0;
  a.y = y.data<float>();
  a.ldy = y.row_stride();
  a.batch = batch;
  a.T = dims == 3 ? x.size(1) : 1;
  a.C = C;
  a.K = K;
  a.silu = silu;
  return a;
}

}  // namespace

void conv1d_causal(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor* state, Tensor& y) {
  SSM_GPU_DISPATCH(y, conv1d_causal, x, w, bias, silu, state, y);
  conv_run(check_args("conv1d_causal", x, w, bias, silu, state && state->defined() ? state : nullptr, y, 3));
}

void conv1d_causal_step(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor& state, Tensor& y) {
  SSM_GPU_DISPATCH(y, conv1d_causal_step, x, w, bias, silu, state, y);
  SSM_CHECK(state.defined(), "conv1d_causal_step: state is required");
  conv_run(check_args("conv1d_causal_step", x, w, bias, silu, &state, y, 2));
}

}  // namespace ssm::ops
