// ops::slstm_backward on the CPU. Each (sequence, head) task recomputes its forward, keeping every
// step's pre-activations and states, then goes back in time carrying dc, dn and the gradient into
// h_{t-1} through R; with m held constant (see ops_backward.h), per unit and step:
//   dc_t += dh_t σ(õ)/n_t,   dn_t −= dh_t σ(õ) c_t/n_t²,   dõ = dh_t (c_t/n_t) σ'(õ)
//   dĩ = (dc_t tanh z̃ + dn_t) i',   df̃ = (dc_t c_{t-1} + dn_t n_{t-1}) f' σ(−f̃),   dz̃ = dc_t i' (1 − tanh² z̃)
//   dc_{t-1} = dc_t f',   dn_{t-1} = dn_t f',   dh_{t-1} = dy_{t-1} + R [dĩ, df̃, dz̃, dõ]_t
// dR = Σ h_{t-1} ⊗ dwx_t and dbias = Σ dwx_t are summed afterwards, each row of dR by one thread.
#include "ops/cpu/scratch.h"
#include "ops/cpu/slstm_common.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::SlstmDims;

namespace {

// Sequence b, head hd: fills dwx's rows for the head and hs (the forward's h_t, [B·T, D]).
void head_backward(const SlstmInputs& in, const Tensor& dy, const SlstmDims& d, int64_t b, int64_t hd, float* hs,
                   Tensor& dwx) {
  const int64_t D = d.width(), dh = d.dh, T = d.T;
  const float* R = in.R.data<float>() + hd * dh * 4 * dh;
  const float* bias = in.bias.data<float>() + hd * 4 * dh;
  thread_local detail::Scratch scratch;
  // raw [T, 4dh]; c, n, m [T+1, dh] (row 0: the zero state); the forward's running h; going back,
  // the carried gradients into h_{t-1}, c and n, and one step's pre-activation gradients [4dh].
  float* raw = scratch.get<float>(size_t(T * 4 * dh + 3 * (T + 1) * dh + 8 * dh));
  float *cs = raw + T * 4 * dh, *ns = cs + (T + 1) * dh, *ms = ns + (T + 1) * dh;
  float *h = ms + (T + 1) * dh, *dh_next = h + dh, *dc = dh_next + dh, *dn = dc + dh, *draw = dn + dh;
  std::fill(cs, cs + dh, 0.0f);
  std::fill(ns, ns + dh, 0.0f);
  std::fill(ms, ms + dh, 0.0f);
  std::fill(h, h + 4 * dh, 0.0f);  // h, dh_next, dc, dn
  const int64_t ldx = in.wx.row_stride(), ldy = dy.row_stride(), ldd = dwx.row_stride();
  for (int64_t t = 0; t < T; ++t) {
    float *c = cs + (t + 1) * dh, *n = ns + (t + 1) * dh, *m = ms + (t + 1) * dh;
    std::copy(c - dh, c, c);
    std::copy(n - dh, n, n);
    std::copy(m - dh, m, m);
    const int64_t row = b * T + t;
    detail::slstm_head_step(in.wx.data<float>() + row * ldx + hd * dh, D, R, bias, dh, raw + t * 4 * dh, c, n, m, h);
    std::copy(h, h + dh, hs + row * D + hd * dh);
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t row = b * T + t;
    const float* r = raw + t * 4 * dh;
    const float* dyt = dy.data<float>() + row * ldy + hd * dh;
    for (int64_t k = 0; k < dh; ++k) {
      const float dht = dyt[k] + dh_next[k];
      const float c_prev = cs[t * dh + k], n_prev = ns[t * dh + k], m_prev = ms[t * dh + k];
      const float c = cs[(t + 1) * dh + k], n = ns[(t + 1) * dh + k], m = ms[(t + 1) * dh + k];
      const float i_raw = r[k], f_raw = r[dh + k], z_raw = r[2 * dh + k], o_raw = r[3 * dh + k];
      const float o = detail::sigmoid_f(o_raw), z = std::tanh(z_raw);
      const float i_gate = std::exp(i_raw - m), f_gate = std::exp(detail::log_sigmoid(f_raw) + m_prev - m);
      const float dct = dc[k] + dht * o / n, dnt = dn[k] - dht * o * c / (n * n);
      draw[k] = (dct * z + dnt) * i_gate;
      draw[dh + k] = (dct * c_prev + dnt * n_prev) * f_gate * detail::sigmoid_f(-f_raw);
      draw[2 * dh + k] = dct * i_gate * (1.0f - z * z);
      draw[3 * dh + k] = dht * (c / n) * o * (1.0f - o);
      dc[k] = dct * f_gate;
      dn[k] = dnt * f_gate;
    }
    float* dwxt = dwx.data<float>() + row * ldd + hd * dh;
    for (int64_t g = 0; g < 4; ++g) std::copy(draw + g * dh, draw + (g + 1) * dh, dwxt + g * D);
    for (int64_t j = 0; j < dh; ++j) {
      const float* Rj = R + j * 4 * dh;
      float acc = 0;
      for (int64_t q = 0; q < 4 * dh; ++q) acc += Rj[q] * draw[q];
      dh_next[j] = acc;
    }
  }
}

}  // namespace

void slstm_backward(const SlstmInputs& in, const Tensor& dy, SlstmGrads& grads) {
  SSM_GPU_DISPATCH(dy, slstm_backward, in, dy, grads);
  const char* op = "slstm_backward";
  const SlstmDims d = detail::check_slstm_inputs(op, in, false);
  const int64_t D = d.width(), dh = d.dh;
  SSM_CHECK(detail::is_f32_rows(dy, {d.B, d.T, D}), "{}: dy must be F32 rows [{}, {}, {}], got {}", op, d.B, d.T, D,
            detail::describe(dy));
  SSM_CHECK(detail::is_f32_rows(grads.dwx, in.wx.shape()), "{}: dwx must be F32 rows {}, got {}", op,
            shape_str(in.wx.shape()), detail::describe(grads.dwx));
  SSM_CHECK(detail::is_f32_contig(grads.dR, in.R.shape()) && detail::is_f32_vec(grads.dbias, 4 * D),
            "{}: dR and dbias must be contiguous F32 {} and [{}], got {} and {}", op, shape_str(in.R.shape()), 4 * D,
            detail::describe(grads.dR), detail::describe(grads.dbias));
  if (d.B == 0 || d.T == 0) return;
  thread_local detail::Scratch hs_scratch;
  float* hs = hs_scratch.get<float>(size_t(d.B * d.T * D));
  const bool threads = d.B * d.H > 1 && d.B * d.T * D * dh >= (1 << 14);
#pragma omp parallel for schedule(dynamic) if (threads)
  for (int64_t bh = 0; bh < d.B * d.H; ++bh) head_backward(in, dy, d, bh / d.H, bh % d.H, hs, grads.dwx);

  const float* dwx = grads.dwx.data<float>();
  const int64_t ldd = grads.dwx.row_stride();
#pragma omp parallel for schedule(static) if (d.B * d.T * D * dh >= (1 << 16))
  for (int64_t hj = 0; hj < D; ++hj) {  // row j of head hd's R: dR[hd, j, :] += Σ h_{t-1}[j] dwx_t
    const int64_t hd = hj / dh;
    float* dR = grads.dR.data<float>() + hj * 4 * dh;
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t t = 1; t < d.T; ++t) {
        const float a = hs[(b * d.T + t - 1) * D + hj];
        const float* g = dwx + (b * d.T + t) * ldd + hd * dh;
        for (int64_t gate = 0; gate < 4; ++gate)
          for (int64_t k = 0; k < dh; ++k) dR[gate * dh + k] += a * g[gate * D + k];
      }
  }
  float* dbias = grads.dbias.data<float>();
  for (int64_t row = 0; row < d.B * d.T; ++row)
    for (int64_t hd = 0; hd < d.H; ++hd)
      for (int64_t gate = 0; gate < 4; ++gate)
        for (int64_t k = 0; k < dh; ++k) dbias[(hd * 4 + gate) * dh + k] += dwx[row * ldd + gate * D + hd * dh + k];
}

}  // namespace ssm::ops
