// ops::slstm and ops::slstm_step on the CPU: one (sequence, head) per task, token after token (the
// recurrence through h_{t-1} leaves nothing to parallelise in time). ops/cuda/slstm.cu: the GPU's.
#include "ops/cpu/scratch.h"
#include "ops/cpu/slstm_common.h"
#include "ops/dispatch.h"

namespace ssm::ops {

using detail::SlstmDims;

SlstmState SlstmState::zeros(int64_t batch, int64_t width, Device device) {
  const auto zeros = [&] { return Tensor::zeros({batch, width}, DType::F32, device); };
  return {zeros(), zeros(), zeros(), zeros()};
}

namespace {

// Work enough to be worth the threads: the recurrent products of all tasks over all steps.
bool worth_threads(const SlstmDims& d) { return d.B * d.H > 1 && d.B * d.T * d.H * d.dh * d.dh >= (1 << 14); }

}  // namespace

void slstm(const SlstmInputs& in, SlstmState* state, Tensor& y) {
  SSM_GPU_DISPATCH(y, slstm, in, state, y);
  const char* op = "slstm";
  const SlstmDims d = detail::check_slstm_inputs(op, in, false);
  SSM_CHECK(detail::is_f32_rows(y, {d.B, d.T, d.width()}), "{}: y must be F32 rows [{}, {}, {}], got {}", op, d.B, d.T,
            d.width(), detail::describe(y));
  if (state) detail::check_slstm_state(op, *state, d);
  if (d.B == 0 || d.T == 0) return;
  const int64_t D = d.width(), dh = d.dh, ldx = in.wx.row_stride(), ldy = y.row_stride();
#pragma omp parallel for schedule(dynamic) if (worth_threads(d))
  for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
    const int64_t b = bh / d.H, hd = bh % d.H;
    thread_local detail::Scratch scratch;
    float* raw = scratch.get<float>(size_t(8 * dh));
    float *c = raw + 4 * dh, *n = c + dh, *m = n + dh, *h = m + dh;  // a zero state when the caller gives none
    if (state) {
      const int64_t at = b * D + hd * dh;
      c = state->c.data<float>() + at, n = state->n.data<float>() + at, m = state->m.data<float>() + at;
      h = state->h.data<float>() + at;
    } else {
      std::fill(c, c + 4 * dh, 0.0f);
    }
    const float* R = in.R.data<float>() + hd * dh * 4 * dh;
    const float* bias = in.bias.data<float>() + hd * 4 * dh;
    for (int64_t t = 0; t < d.T; ++t) {
      const int64_t row = b * d.T + t;
      detail::slstm_head_step(in.wx.data<float>() + row * ldx + hd * dh, D, R, bias, dh, raw, c, n, m, h);
      std::copy(h, h + dh, y.data<float>() + row * ldy + hd * dh);
    }
  }
}

void slstm_step(const SlstmInputs& in, SlstmState& state, Tensor& y) {
  SSM_GPU_DISPATCH(y, slstm_step, in, state, y);
  const char* op = "slstm_step";
  const SlstmDims d = detail::check_slstm_inputs(op, in, true);
  SSM_CHECK(detail::is_f32_rows(y, {d.B, d.width()}), "{}: y must be F32 rows [{}, {}], got {}", op, d.B, d.width(),
            detail::describe(y));
  detail::check_slstm_state(op, state, d);
  const int64_t D = d.width(), dh = d.dh, ldx = detail::ld(in.wx), ldy = detail::ld(y);
#pragma omp parallel for schedule(static) if (d.B * d.H > 1 && d.B * d.H * dh * dh >= (1 << 16))
  for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
    const int64_t b = bh / d.H, hd = bh % d.H, at = b * D + hd * dh;
    thread_local detail::Scratch scratch;
    float* raw = scratch.get<float>(size_t(4 * dh));
    float* h = state.h.data<float>() + at;
    detail::slstm_head_step(in.wx.data<float>() + b * ldx + hd * dh, D, in.R.data<float>() + hd * dh * 4 * dh,
                            in.bias.data<float>() + hd * 4 * dh, dh, raw, state.c.data<float>() + at,
                            state.n.data<float>() + at, state.m.data<float>() + at, h);
    std::copy(h, h + dh, y.data<float>() + b * ldy + hd * dh);
  }
}

}  // namespace ssm::ops
