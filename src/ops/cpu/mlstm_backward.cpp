// ops::mlstm_backward on the CPU: reverse mode through the recurrent form (the same function as the
// chunkwise forward), one (sequence, head) per task. The states at each chunk start are kept from a
// forward pass; going back, a chunk's per-token states are recomputed from its start, then each token
// is undone. With Cp, np, mp the state before token t and dC, dn, dm the gradients arriving at the
// state after it:
//   a = logσ(f) + mp, m = max(a, i), f' = e^{a−m}, i' = e^{i−m}, C = f'Cp + i' k vᵀ, n = f'np + i' k,
//   dot = q̂·n, den = max(|dot|, e^{−m}) + eps, h = q̂ᵀC / den
//   dC += q̂ (dh/den)ᵀ,  dn += q̂ ddot with ddot, dm from d den = −Σ dh ⊙ h / den through the max,
//   dq̂ = C dh/den + n ddot,  dk = i' (dC v + dn),  dv = i' dCᵀ k,
//   df' = ⟨dC, Cp⟩ + ⟨dn, np⟩,  di' = kᵀ(dC v + dn),  then through m = max(a, i) to a, i and mp.
#include <tuple>
#include <vector>

#include "ops/cpu/mlstm_common.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::MlstmDims;
using detail::MlstmHead;

namespace {

// Where one (sequence, head) writes its gradients: row t at base + t · stride.
struct HeadGrads {
  float *dq, *dk, *dv, *di, *df;
  int64_t ldq, ldk, ldv, ldi, ldf;
};

// Splits the gradient g of max(x, y) between x and y (halves at a tie, as torch does).
void max_grad(float x, float y, double g, double& gx, double& gy) {
  if (x > y) gx += g;
  else if (y > x) gy += g;
  else gx += 0.5 * g, gy += 0.5 * g;
}

void head_backward(const MlstmHead& x, const float* dh, int64_t lddh, const HeadGrads& out, const MlstmDims& d,
                   int64_t L, float eps) {
  const int64_t dk = d.dk, dv = d.dv, S = dk * dv + dk + 1;  // one state: C, n, m
  const int64_t n_chunks = (d.T + L - 1) / L;
  const float scale = 1.0f / std::sqrt(float(dk));
  std::vector<float> starts(size_t(n_chunks * S), 0.0f), states(size_t(L * S));
  {
    std::vector<float> s(size_t(S), 0.0f);
    for (int64_t t = 0; t < d.T; ++t) {
      if (t % L == 0) std::copy(s.begin(), s.end(), starts.begin() + (t / L) * S);
      detail::mlstm_head_step(nullptr, x.k + t * x.ldk, x.v + t * x.ldv, x.i[t * x.ldi], x.f[t * x.ldf], dk, dv, eps,
                              s.data(), s.data() + dk * dv, s[size_t(S - 1)], nullptr);
    }
  }
  std::vector<float> dC(size_t(dk * dv), 0.0f), dn(size_t(dk), 0.0f), C(size_t(dk * dv), 0.0f),
      n(size_t(dk), 0.0f), h(size_t(dv), 0.0f), dnum(size_t(dv), 0.0f), dCv(size_t(dk), 0.0f);
  double dm = 0;
  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t c0 = c * L, nc = std::min(L, d.T - c0);
    std::copy(starts.begin() + c * S, starts.begin() + (c + 1) * S, states.begin());
    for (int64_t t = 1; t < nc; ++t) {
      float* s = states.data() + t * S;
      std::copy(s - S, s, s);
      detail::mlstm_head_step(nullptr, x.k + (c0 + t - 1) * x.ldk, x.v + (c0 + t - 1) * x.ldv,
                              x.i[(c0 + t - 1) * x.ldi], x.f[(c0 + t - 1) * x.ldf], dk, dv, eps, s, s + dk * dv,
                              s[S - 1], nullptr);
    }
    for (int64_t t = nc - 1; t >= 0; --t) {
      const int64_t tt = c0 + t;
      const float* Cp = states.data() + t * S;
      const float* np = Cp + dk * dv;
      const float mp = Cp[S - 1];
      const float *q = x.q + tt * x.ldq, *k = x.k + tt * x.ldk, *v = x.v + tt * x.ldv, *dht = dh + tt * lddh;
      const float i = x.i[tt * x.ldi], f = x.f[tt * x.ldf];
      const float a = detail::log_sigmoid(f) + mp, m = std::max(a, i);
      const float fa = std::exp(a - m), ia = std::exp(i - m), e = std::exp(-m);
      // The state after the token and the output.
      double dot = 0;
      for (int64_t r = 0; r < dk; ++r) {
        for (int64_t j = 0; j < dv; ++j) C[size_t(r * dv + j)] = fa * Cp[r * dv + j] + ia * k[r] * v[j];
        n[size_t(r)] = fa * np[r] + ia * k[r];
        dot += double(q[r]) * scale * n[size_t(r)];
      }
      const double den = std::max(std::fabs(dot), double(e)) + eps;
      double dden = 0;
      for (int64_t j = 0; j < dv; ++j) {
        double num = 0;
        for (int64_t r = 0; r < dk; ++r) num += double(q[r]) * scale * C[size_t(r * dv + j)];
        h[size_t(j)] = float(num / den);
        dnum[size_t(j)] = float(dht[j] / den);
        dden -= double(dht[j]) * h[size_t(j)] / den;
      }
      double ddot_abs = 0, dm_local = 0;
      max_grad(float(std::fabs(dot)), e, dden, ddot_abs, dm_local);
      const double ddot = dot >= 0 ? ddot_abs : -ddot_abs;
      dm_local *= -double(e);
      // The gradients at C and n in full, then the query's.
      for (int64_t r = 0; r < dk; ++r) {
        const float qs = q[r] * scale;
        double dq = 0;
        for (int64_t j = 0; j < dv; ++j) {
          dC[size_t(r * dv + j)] += qs * dnum[size_t(j)];
          dq += double(C[size_t(r * dv + j)]) * dnum[size_t(j)];
        }
        dn[size_t(r)] += float(qs * ddot);
        out.dq[tt * out.ldq + r] = float(scale * (dq + n[size_t(r)] * ddot));
      }
      // Through C = f'Cp + i' k vᵀ and n = f'np + i' k.
      double dfa = 0, dia = 0;
      for (int64_t r = 0; r < dk; ++r) {
        double cv = 0;
        for (int64_t j = 0; j < dv; ++j) {
          cv += double(dC[size_t(r * dv + j)]) * v[j];
          dfa += double(dC[size_t(r * dv + j)]) * Cp[r * dv + j];
        }
        dfa += double(dn[size_t(r)]) * np[r];
        dCv[size_t(r)] = float(cv + dn[size_t(r)]);
        dia += double(k[r]) * dCv[size_t(r)];
        out.dk[tt * out.ldk + r] = ia * dCv[size_t(r)];
      }
      for (int64_t j = 0; j < dv; ++j) {
        double s = 0;
        for (int64_t r = 0; r < dk; ++r) s += double(dC[size_t(r * dv + j)]) * k[r];
        out.dv[tt * out.ldv + j] = float(ia * s);
      }
      for (float& g : dC) g *= fa;
      for (float& g : dn) g *= fa;
      // Through f' = e^{a−m}, i' = e^{i−m} and m = max(a, i).
      double da = dfa * fa, di = dia * ia;
      max_grad(a, i, dm + dm_local - dfa * fa - dia * ia, da, di);
      out.di[tt * out.ldi] = float(di);
      out.df[tt * out.ldf] = float(da / (1.0 + std::exp(double(f))));  // d logσ(f) / df = σ(−f)
      dm = da;
    }
  }
}

}  // namespace

void mlstm_backward(const MlstmInputs& in, const Tensor& dh, MlstmGrads& g) {
  SSM_GPU_DISPATCH(dh, mlstm_backward, in, dh, g);
  const char* op = "mlstm_backward";
  const MlstmDims d = detail::check_mlstm_inputs(op, in, false);
  SSM_CHECK(detail::is_f32_rows(dh, {d.B, d.T, d.H * d.dv}), "{}: dh must be F32 rows [{}, {}, {}], got {}", op, d.B,
            d.T, d.H * d.dv, detail::describe(dh));
  const Shape qk = in.q.shape(), vs = in.v.shape(), gates = in.i.shape();
  for (auto [grad, shape, name] : {std::tuple{&g.dq, qk, "dq"}, {&g.dk, qk, "dk"}, {&g.dv, vs, "dv"},
                                   {&g.di, gates, "di"}, {&g.df, gates, "df"}})
    SSM_CHECK(detail::is_f32_rows(*grad, shape), "{}: {} must be F32 rows {}, got {}", op, name, shape_str(shape),
              detail::describe(*grad));
  if (d.B == 0 || d.T == 0) return;
  const int64_t lddh = dh.row_stride();
#pragma omp parallel for schedule(dynamic) if (d.B * d.H > 1 && d.T * d.dk * d.dv >= (1 << 14))
  for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
    const int64_t b = bh / d.H, hd = bh % d.H;
    const auto at = [&](Tensor& t, int64_t width) { return t.data<float>() + b * d.T * detail::ld(t) + hd * width; };
    const HeadGrads out{at(g.dq, d.dk), at(g.dk, d.dk), at(g.dv, d.dv), at(g.di, 1), at(g.df, 1),
                        detail::ld(g.dq), detail::ld(g.dk), detail::ld(g.dv), detail::ld(g.di), detail::ld(g.df)};
    head_backward(MlstmHead(in, d, b, hd), dh.data<float>() + b * d.T * lddh + hd * d.dv, lddh, out, d,
                  in.chunk_size, in.eps);
  }
}

}  // namespace ssm::ops
