#include "ops/ref/mlstm.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ssm::ref {

std::vector<double> mlstm(const MlstmDims& d, const MlstmRefInputs& in, MlstmRefState* state) {
  const int64_t H = d.heads, dk = d.dk, dv = d.dv, rows = d.batch * d.T;
  SSM_CHECK(int64_t(in.q.size()) == rows * H * dk && int64_t(in.k.size()) == rows * H * dk &&
                int64_t(in.v.size()) == rows * H * dv && int64_t(in.i.size()) == rows * H &&
                int64_t(in.f.size()) == rows * H,
            "ref::mlstm: input sizes do not match batch {} T {} heads {} dk {} dv {}", d.batch, d.T, H, dk, dv);
  MlstmRefState own;
  MlstmRefState& s = state ? *state : own;
  if (s.C.empty()) s.C.assign(size_t(d.batch * H * dk * dv), 0.0);
  if (s.n.empty()) s.n.assign(size_t(d.batch * H * dk), 0.0);
  if (s.m.empty()) s.m.assign(size_t(d.batch * H), 0.0);
  SSM_CHECK(int64_t(s.C.size()) == d.batch * H * dk * dv && int64_t(s.n.size()) == d.batch * H * dk &&
                int64_t(s.m.size()) == d.batch * H,
            "ref::mlstm: state sizes do not match");
  const double scale = 1.0 / std::sqrt(double(dk));
  std::vector<double> h(size_t(rows * H * dv));
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t hd = 0; hd < H; ++hd) {
      double* C = &s.C[size_t((b * H + hd) * dk * dv)];
      double* n = &s.n[size_t((b * H + hd) * dk)];
      double& m = s.m[size_t(b * H + hd)];
      for (int64_t t = 0; t < d.T; ++t) {
        const int64_t row = b * d.T + t;
        const double* q = &in.q[size_t(row * H * dk + hd * dk)];
        const double* k = &in.k[size_t(row * H * dk + hd * dk)];
        const double* v = &in.v[size_t(row * H * dv + hd * dv)];
        const double i = in.i[size_t(row * H + hd)], f = in.f[size_t(row * H + hd)];
        const double log_f = -std::log1p(std::exp(-f)), m_new = std::max(log_f + m, i);
        const double fa = std::exp(log_f + m - m_new), ia = std::exp(i - m_new);
        m = m_new;
        double dot = 0;
        for (int64_t r = 0; r < dk; ++r) {
          for (int64_t j = 0; j < dv; ++j) C[r * dv + j] = fa * C[r * dv + j] + ia * k[r] * v[j];
          n[r] = fa * n[r] + ia * k[r];
          dot += q[r] * scale * n[r];
        }
        const double den = std::max(std::fabs(dot), std::exp(-m)) + in.eps;
        for (int64_t j = 0; j < dv; ++j) {
          double num = 0;
          for (int64_t r = 0; r < dk; ++r) num += q[r] * scale * C[r * dv + j];
          h[size_t(row * H * dv + hd * dv + j)] = num / den;
        }
      }
    }
  return h;
}

std::vector<double> soft_cap(const std::vector<double>& x, double cap) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = cap * std::tanh(x[i] / cap);
  return y;
}

std::vector<double> group_layernorm(const std::vector<double>& x, const std::vector<double>& w,
                                    const std::vector<double>& b, int64_t rows, int64_t width, int64_t group_size,
                                    double eps) {
  SSM_CHECK(int64_t(x.size()) == rows * width && int64_t(w.size()) == width &&
                (b.empty() || int64_t(b.size()) == width) && group_size > 0 && width % group_size == 0,
            "ref::group_layernorm: sizes x {} w {} b {} do not match rows {} width {} group {}", x.size(), w.size(),
            b.size(), rows, width, group_size);
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g0 = 0; g0 < width; g0 += group_size) {
      const double* xr = &x[size_t(r * width + g0)];
      double mean = 0, var = 0;
      for (int64_t i = 0; i < group_size; ++i) mean += xr[i];
      mean /= double(group_size);
      for (int64_t i = 0; i < group_size; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      const double rstd = 1.0 / std::sqrt(var / double(group_size) + eps);
      for (int64_t i = 0; i < group_size; ++i)
        y[size_t(r * width + g0 + i)] =
            (xr[i] - mean) * rstd * w[size_t(g0 + i)] + (b.empty() ? 0.0 : b[size_t(g0 + i)]);
    }
  return y;
}

}  // namespace ssm::ref
