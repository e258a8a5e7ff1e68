// ops::conv1d_causal and ops::conv1d_causal_step on the CPU (depthwise, causal):
//   y[b,t,c] = bias[c] + sum_j w[c,j] · x[b, t-(K-1)+j, c],   x at negative times read from the state.
// Work is split into (batch, block of kChannelBlock channels) tasks spread over OpenMP threads;
// inside a task the taps are transposed to [K, block] so that every inner loop runs over
// contiguous channels. The step is the same kernel with T = 1.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "ops/cpu/checks.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using detail::describe;

constexpr int64_t kChannelBlock = 64;

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

void conv_run(const ConvArgs& a) {
  const int64_t K = a.K, T = a.T;
  const int64_t blocks = (a.C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel if (a.batch * T * a.C * K >= (1 << 15))
  {
    std::vector<float> taps(size_t(K * kChannelBlock));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < a.batch * blocks; ++task) {
      const int64_t b = task / blocks, c0 = task % blocks * kChannelBlock;
      const int64_t nc = std::min(kChannelBlock, a.C - c0);
      for (int64_t c = 0; c < nc; ++c) {
        for (int64_t j = 0; j < K; ++j) taps[size_t(j * kChannelBlock + c)] = a.w[(c0 + c) * K + j];
      }
      const float* xb = a.x + b * T * a.ldx + c0;
      float* sb = a.state ? a.state + b * (K - 1) * a.lds + c0 : nullptr;
      for (int64_t t = 0; t < T; ++t) {
        float acc[kChannelBlock];
        for (int64_t c = 0; c < nc; ++c) acc[c] = a.bias ? a.bias[c0 + c] : 0.0f;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t src = t - (K - 1) + j;
          if (src < 0 && !sb) continue;  // zero left padding
          const float* row = src < 0 ? sb + (K - 1 + src) * a.lds : xb + src * a.ldx;
          const float* tap = taps.data() + j * kChannelBlock;
#pragma omp simd
          for (int64_t c = 0; c < nc; ++c) acc[c] += tap[c] * row[c];
        }
        float* yr = a.y + (b * T + t) * a.ldy + c0;
        if (a.silu) {
#pragma omp simd
          for (int64_t c = 0; c < nc; ++c) yr[c] = vec::silu(acc[c]);
        } else {
          std::copy(acc, acc + nc, yr);
        }
      }
      if (sb) {  // the new state is the last K-1 inputs: surviving old rows shift up, then x
        const int64_t keep = (K - 1) - std::min(T, K - 1);
        for (int64_t j = 0; j < K - 1; ++j) {
          const float* src = j < keep ? sb + (j + T) * a.lds : xb + (T - (K - 1) + j) * a.ldx;
          std::copy(src, src + nc, sb + j * a.lds);
        }
      }
    }
  }
}

// Checks w, bias, y and state against x [B, (T,) C]; fills the shared fields of ConvArgs.
ConvArgs check_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, bool silu,
                    const Tensor* state, const Tensor& y, int64_t dims) {
  SSM_CHECK(detail::is_f32_rows(x, dims), "{}: x must be F32 rows {}, got {}", op,
            dims == 3 ? "[B, T, C]" : "[B, C]", describe(x));
  const int64_t C = x.size(-1);
  SSM_CHECK(w.defined() && w.dtype() == DType::F32 && w.dim() == 2 && w.size(0) == C && w.size(1) >= 1 &&
                w.is_contiguous(),
            "{}: w must be contiguous F32 [{}, K] for x {}, got {}", op, C, describe(x), describe(w));
  const int64_t K = w.size(1);
  SSM_CHECK(!bias.defined() || detail::is_f32_vector(bias, C), "{}: bias must be F32 [{}], got {}", op, C,
            describe(bias));
  SSM_CHECK(detail::is_f32_rows(y, dims) && y.shape() == x.shape(), "{}: y must be F32 rows of x's shape {}, got {}",
            op, shape_str(x.shape()), describe(y));
  const int64_t batch = x.size(0);
  if (state) {
    const Shape expected{batch, K - 1, C};
    SSM_CHECK(detail::is_f32_rows(*state, 3) && state->shape() == expected,
              "{}: state must be F32 rows {} for x {} and w {}, got {}", op, shape_str(expected), describe(x),
              describe(w), describe(*state));
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
  conv_run(check_args("conv1d_causal", x, w, bias, silu, state && state->defined() ? state : nullptr, y, 3));
}

void conv1d_causal_step(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu, Tensor& state, Tensor& y) {
  SSM_CHECK(state.defined(), "conv1d_causal_step: state is required");
  conv_run(check_args("conv1d_causal_step", x, w, bias, silu, &state, y, 2));
}

}  // namespace ssm::ops
