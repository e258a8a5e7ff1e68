// ops::mlstm (chunkwise-parallel form) and ops::mlstm_step on the CPU, one (sequence, head) per task
// (ops/cuda/mlstm.cu has the GPU kernels).
// Per chunk of L tokens starting from the state (C, n, m), with b_t the cumulative logσ(f) inside
// the chunk, as transformers' mlstm_chunkwise_parallel_fw_H and _recurrent_fw_C compute it:
//   log D_ts = b_t − b_s + i_s (s ≤ t),   m_t = max(b_t + m, max_s log D_ts)
//   num_t = e^{b_t + m − m_t} q̂_tᵀ C + Σ_s (q̂_t·k_s) e^{log D_ts − m_t} v_s,   den_t likewise with n and 1
//   h_t = num_t / (max(|den_t|, e^{−m_t}) + eps)
// and at the chunk end, with g = b_last and a_s = g − b_s + i_s: m' = max(g + m, max_s a_s),
//   C' = e^{g + m − m'} C + Σ_s e^{a_s − m'} k_s v_sᵀ,  n' likewise with k_s.
#include <vector>

#include "ops/cpu/mlstm_common.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

using detail::MlstmDims;
using detail::MlstmHead;

MlstmState MlstmState::zeros(int64_t batch, int64_t n_heads, int64_t dk, int64_t dv, Device device) {
  return {Tensor::zeros({batch, n_heads, dk, dv}, DType::F32, device),
          Tensor::zeros({batch, n_heads, dk}, DType::F32, device), Tensor::zeros({batch, n_heads}, DType::F32, device)};
}

namespace {

void head_forward(const MlstmHead& x, const MlstmDims& d, int64_t L, float eps, float* C, float* n, float& m,
                  float* h, int64_t ldh) {
  const int64_t dk = d.dk, dv = d.dv;
  const float scale = 1.0f / std::sqrt(float(dk));
  std::vector<float> b(static_cast<size_t>(L)), log_d(static_cast<size_t>(L * L));
  for (int64_t c0 = 0; c0 < d.T; c0 += L) {
    const int64_t nc = std::min(L, d.T - c0);
    float acc = 0;
    for (int64_t t = 0; t < nc; ++t) b[size_t(t)] = acc += detail::log_sigmoid(x.f[(c0 + t) * x.ldf]);
    for (int64_t t = 0; t < nc; ++t) {
      const float* q = x.q + (c0 + t) * x.ldq;
      float mt = b[size_t(t)] + m;
      for (int64_t s = 0; s <= t; ++s) {
        const float ld_ts = b[size_t(t)] - b[size_t(s)] + x.i[(c0 + s) * x.ldi];
        log_d[size_t(t * L + s)] = ld_ts;
        mt = std::max(mt, ld_ts);
      }
      float* ht = h + (c0 + t) * ldh;
      const float inter = std::exp(b[size_t(t)] + m - mt) * scale;
      float den = 0;
      for (int64_t j = 0; j < dv; ++j) ht[j] = 0;
      for (int64_t r = 0; r < dk; ++r) {
        const float qr = q[r] * inter;
        const float* row = C + r * dv;
        for (int64_t j = 0; j < dv; ++j) ht[j] += qr * row[j];
        den += qr * n[r];
      }
      for (int64_t s = 0; s <= t; ++s) {
        const float* k = x.k + (c0 + s) * x.ldk;
        float qk = 0;
        for (int64_t r = 0; r < dk; ++r) qk += q[r] * k[r];
        const float w = qk * scale * std::exp(log_d[size_t(t * L + s)] - mt);
        const float* v = x.v + (c0 + s) * x.ldv;
        for (int64_t j = 0; j < dv; ++j) ht[j] += w * v[j];
        den += w;
      }
      const float denom = std::max(std::fabs(den), std::exp(-mt)) + eps;
      for (int64_t j = 0; j < dv; ++j) ht[j] /= denom;
    }
    const float g = b[size_t(nc - 1)];
    float m_next = g + m;
    for (int64_t s = 0; s < nc; ++s) m_next = std::max(m_next, g - b[size_t(s)] + x.i[(c0 + s) * x.ldi]);
    const float decay = std::exp(g + m - m_next);
    for (int64_t e = 0; e < dk * dv; ++e) C[e] *= decay;
    for (int64_t r = 0; r < dk; ++r) n[r] *= decay;
    for (int64_t s = 0; s < nc; ++s) {
      const float w = std::exp(g - b[size_t(s)] + x.i[(c0 + s) * x.ldi] - m_next);
      const float* k = x.k + (c0 + s) * x.ldk;
      const float* v = x.v + (c0 + s) * x.ldv;
      for (int64_t r = 0; r < dk; ++r) {
        const float wk = w * k[r];
        float* row = C + r * dv;
        for (int64_t j = 0; j < dv; ++j) row[j] += wk * v[j];
        n[r] += wk;
      }
    }
    m = m_next;
  }
}

}  // namespace

void mlstm(const MlstmInputs& in, MlstmState* state, Tensor& h) {
  SSM_GPU_DISPATCH(h, mlstm, in, state, h);
  const char* op = "mlstm";
  const MlstmDims d = detail::check_mlstm_inputs(op, in, false);
  SSM_CHECK(detail::is_f32_rows(h, {d.B, d.T, d.H * d.dv}), "{}: h must be F32 rows [{}, {}, {}], got {}", op, d.B,
            d.T, d.H * d.dv, detail::describe(h));
  if (state) detail::check_mlstm_state(op, *state, d);
  if (d.B == 0 || d.T == 0) return;
  const int64_t ldh = h.row_stride(), L = in.chunk_size;
#pragma omp parallel for schedule(dynamic) if (d.B * d.H > 1 && d.T * d.dk * d.dv >= (1 << 14))
  for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
    const int64_t b = bh / d.H, hd = bh % d.H;
    std::vector<float> own;  // a zero state when the caller gives none
    float *C, *n, *m;
    float m_zero = 0;
    if (state) {
      C = state->C.data<float>() + bh * d.dk * d.dv;
      n = state->n.data<float>() + bh * d.dk;
      m = state->m.data<float>() + bh;
    } else {
      own.assign(size_t(d.dk * d.dv + d.dk), 0.0f);
      C = own.data();
      n = own.data() + d.dk * d.dv;
      m = &m_zero;
    }
    head_forward(MlstmHead(in, d, b, hd), d, L, in.eps, C, n, *m, h.data<float>() + b * d.T * ldh + hd * d.dv, ldh);
  }
}

void mlstm_step(const MlstmInputs& in, MlstmState& state, Tensor& h) {
  SSM_GPU_DISPATCH(h, mlstm_step, in, state, h);
  const char* op = "mlstm_step";
  const MlstmDims d = detail::check_mlstm_inputs(op, in, true);
  SSM_CHECK(detail::is_f32_rows(h, {d.B, d.H * d.dv}), "{}: h must be F32 rows [{}, {}], got {}", op, d.B,
            d.H * d.dv, detail::describe(h));
  detail::check_mlstm_state(op, state, d);
  const int64_t ldh = detail::ld(h);
#pragma omp parallel for schedule(static) if (d.B * d.H * d.dk * d.dv >= (1 << 16))
  for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
    const int64_t b = bh / d.H, hd = bh % d.H;
    const MlstmHead x(in, d, b, hd);
    detail::mlstm_head_step(x.q, x.k, x.v, *x.i, *x.f, d.dk, d.dv, in.eps, state.C.data<float>() + bh * d.dk * d.dv,
                            state.n.data<float>() + bh * d.dk, state.m.data<float>()[bh],
                            h.data<float>() + b * ldh + hd * d.dv);
  }
}

}  // namespace ssm::ops
