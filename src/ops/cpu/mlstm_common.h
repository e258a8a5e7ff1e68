// What ops::mlstm, ops::mlstm_step and ops::mlstm_backward share on the CPU: the input checks, one
// head's view of the inputs, and the recurrent step (the backward recomputes states with it).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "ops/cpu/op_util.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

struct MlstmDims {
  int64_t B = 0, T = 1, H = 0, dk = 0, dv = 0;
};

// Checks q, k, v, i, f ([B,T,·] rows, or [B,·] for a step) and returns the sizes.
inline MlstmDims check_mlstm_inputs(const char* op, const MlstmInputs& in, bool step) {
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(in.n_heads > 0, "{}: n_heads must be positive, got {}", op, in.n_heads);
  SSM_CHECK(is_f32_rows(in.q) && in.q.dim() == dims, "{}: q must be F32 rows of {} dims, got {}", op, dims,
            describe(in.q));
  MlstmDims d;
  d.B = in.q.size(0);
  if (!step) d.T = in.q.size(1);
  d.H = in.n_heads;
  const int64_t qk_width = in.q.size(-1);
  SSM_CHECK(qk_width % d.H == 0, "{}: q's width {} is not a multiple of {} heads", op, qk_width, d.H);
  d.dk = qk_width / d.H;
  Shape lead = step ? Shape{d.B} : Shape{d.B, d.T};
  const auto with = [&](int64_t width) {
    Shape s = lead;
    s.push_back(width);
    return s;
  };
  SSM_CHECK(is_f32_rows(in.k, in.q.shape()), "{}: k must be F32 rows {}, got {}", op, shape_str(in.q.shape()),
            describe(in.k));
  SSM_CHECK(is_f32_rows(in.v) && in.v.dim() == dims && in.v.size(0) == d.B && (step || in.v.size(1) == d.T) &&
                in.v.size(-1) % d.H == 0,
            "{}: v must be F32 rows {}[{} heads × dv], got {}", op, shape_str(lead), d.H, describe(in.v));
  d.dv = in.v.size(-1) / d.H;
  SSM_CHECK(is_f32_rows(in.i, with(d.H)) && is_f32_rows(in.f, with(d.H)), "{}: i and f must be F32 rows {}, got {} and {}",
            op, shape_str(with(d.H)), describe(in.i), describe(in.f));
  SSM_CHECK(d.dk > 0 && d.dv > 0, "{}: empty heads (dk {}, dv {})", op, d.dk, d.dv);
  SSM_CHECK(in.chunk_size > 0, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  SSM_CHECK(std::isfinite(in.eps) && in.eps >= 0, "{}: eps must not be negative, got {}", op, in.eps);
  return d;
}

inline void check_mlstm_state(const char* op, const MlstmState& s, const MlstmDims& d) {
  SSM_CHECK(is_f32_contig(s.C, {d.B, d.H, d.dk, d.dv}) && is_f32_contig(s.n, {d.B, d.H, d.dk}) &&
                is_f32_contig(s.m, {d.B, d.H}),
            "{}: the state must be contiguous F32 C [{}, {}, {}, {}], n [{}, {}, {}], m [{}, {}], got {}, {} and {}", op,
            d.B, d.H, d.dk, d.dv, d.B, d.H, d.dk, d.B, d.H, describe(s.C), describe(s.n), describe(s.m));
}

// Sequence b, head h of the inputs: row t of each at base + t · stride.
struct MlstmHead {
  const float *q, *k, *v, *i, *f;
  int64_t ldq, ldk, ldv, ldi, ldf;
  MlstmHead(const MlstmInputs& in, const MlstmDims& d, int64_t b, int64_t h)
      : q(in.q.data<float>() + b * d.T * ld(in.q) + h * d.dk),
        k(in.k.data<float>() + b * d.T * ld(in.k) + h * d.dk),
        v(in.v.data<float>() + b * d.T * ld(in.v) + h * d.dv),
        i(in.i.data<float>() + b * d.T * ld(in.i) + h),
        f(in.f.data<float>() + b * d.T * ld(in.f) + h),
        ldq(ld(in.q)), ldk(ld(in.k)), ldv(ld(in.v)), ldi(ld(in.i)), ldf(ld(in.f)) {}
};

// One recurrent step of one head on its state C [dk, dv], n [dk], m; writes h [dv] when given.
inline void mlstm_head_step(const float* q, const float* k, const float* v, float i, float f, int64_t dk, int64_t dv,
                            float eps, float* C, float* n, float& m, float* h) {
  const float lf = log_sigmoid(f), m_new = std::max(lf + m, i);
  const float fa = std::exp(lf + m - m_new), ia = std::exp(i - m_new);
  m = m_new;
  for (int64_t r = 0; r < dk; ++r) {
    const float ik = ia * k[r];
    float* row = C + r * dv;
    for (int64_t j = 0; j < dv; ++j) row[j] = fa * row[j] + ik * v[j];
    n[r] = fa * n[r] + ik;
  }
  if (!h) return;
  const float scale = 1.0f / std::sqrt(float(dk));
  float dot = 0;
  for (int64_t j = 0; j < dv; ++j) h[j] = 0;
  for (int64_t r = 0; r < dk; ++r) {
    const float qs = q[r] * scale;
    const float* row = C + r * dv;
    for (int64_t j = 0; j < dv; ++j) h[j] += qs * row[j];
    dot += qs * n[r];
  }
  const float den = std::max(std::fabs(dot), std::exp(-m_new)) + eps;
  for (int64_t j = 0; j < dv; ++j) h[j] /= den;
}

}  // namespace ssm::ops::detail
