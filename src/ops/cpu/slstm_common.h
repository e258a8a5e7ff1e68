// What ops::slstm, ops::slstm_step and ops::slstm_backward share on the CPU: the input checks and
// one head's recurrent step (the backward recomputes the forward with it).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "ops/cpu/op_util.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

struct SlstmDims {
  int64_t B = 0, T = 1, H = 0, dh = 0;
  int64_t width() const { return H * dh; }  // D
};

// Checks wx ([B,T,4·D] rows, or [B,4·D] for a step), R and bias, and returns the sizes.
inline SlstmDims check_slstm_inputs(const char* op, const SlstmInputs& in, bool step) {
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(in.n_heads > 0, "{}: n_heads must be positive, got {}", op, in.n_heads);
  SSM_CHECK(is_f32_rows(in.wx) && in.wx.dim() == dims, "{}: wx must be F32 rows of {} dims, got {}", op, dims,
            describe(in.wx));
  SlstmDims d;
  d.B = in.wx.size(0);
  if (!step) d.T = in.wx.size(1);
  d.H = in.n_heads;
  const int64_t gates_width = in.wx.size(-1);
  SSM_CHECK(gates_width > 0 && gates_width % (4 * d.H) == 0,
            "{}: wx's width {} is not 4 gates × {} heads × a positive head size", op, gates_width, d.H);
  d.dh = gates_width / (4 * d.H);
  SSM_CHECK(is_f32_contig(in.R, {d.H, d.dh, 4 * d.dh}), "{}: R must be contiguous F32 [{}, {}, {}], got {}", op, d.H,
            d.dh, 4 * d.dh, describe(in.R));
  SSM_CHECK(is_f32_vec(in.bias, 4 * d.width()), "{}: bias must be contiguous F32 [{}], got {}", op, 4 * d.width(),
            describe(in.bias));
  return d;
}

inline void check_slstm_state(const char* op, const SlstmState& s, const SlstmDims& d) {
  const Shape shape{d.B, d.width()};
  SSM_CHECK(is_f32_contig(s.c, shape) && is_f32_contig(s.n, shape) && is_f32_contig(s.m, shape) &&
                is_f32_contig(s.h, shape),
            "{}: the state must be contiguous F32 c, n, m, h [{}, {}], got {}, {}, {} and {}", op, d.B, d.width(),
            describe(s.c), describe(s.n), describe(s.m), describe(s.h));
}

// The gates of one unit from its pre-activations: advances c, n, m and returns h.
inline float slstm_unit(float i_raw, float f_raw, float z_raw, float o_raw, float& c, float& n, float& m) {
  const float log_f = log_sigmoid(f_raw) + m;
  // NX-AI's kernels start a fresh unit (n = 0, so c = 0 too) at m = ĩ; f' then multiplies zeros.
  const float m_new = n == 0.0f ? i_raw : std::max(i_raw, log_f);
  const float i_gate = std::exp(i_raw - m_new), f_gate = std::exp(log_f - m_new);
  c = f_gate * c + i_gate * std::tanh(z_raw);
  n = f_gate * n + i_gate;
  m = m_new;
  return sigmoid_f(o_raw) * c / n;
}

// One token of one head. wx: the head's first input (gate g of unit k at wx[g·D + k]); R, bias: the
// head's [dh, 4·dh] and [4·dh]; raw (4·dh) receives the pre-activations; c, n, m, h: the head's
// state, h = h_{t-1} on entry and h_t on exit.
inline void slstm_head_step(const float* wx, int64_t D, const float* R, const float* bias, int64_t dh, float* raw,
                            float* c, float* n, float* m, float* h) {
  for (int64_t g = 0; g < 4; ++g)
    for (int64_t k = 0; k < dh; ++k) raw[g * dh + k] = wx[g * D + k] + bias[g * dh + k];
  for (int64_t j = 0; j < dh; ++j) {
    const float a = h[j];
    const float* row = R + j * 4 * dh;
    for (int64_t q = 0; q < 4 * dh; ++q) raw[q] += a * row[q];
  }
  for (int64_t k = 0; k < dh; ++k)
    h[k] = slstm_unit(raw[k], raw[dh + k], raw[2 * dh + k], raw[3 * dh + k], c[k], n[k], m[k]);
}

}  // namespace ssm::ops::detail
