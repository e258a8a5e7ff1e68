#include "ops/ref/slstm.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ssm::ref {

std::vector<double> slstm(const SlstmDims& d, const SlstmRefInputs& in, SlstmRefState* state) {
  const int64_t H = d.heads, dh = d.dh, D = H * dh, rows = d.batch * d.T;
  SSM_CHECK(int64_t(in.wx.size()) == rows * 4 * D && int64_t(in.R.size()) == H * dh * 4 * dh &&
                int64_t(in.bias.size()) == 4 * D,
            "ref::slstm: input sizes do not match batch {} T {} heads {} dh {}", d.batch, d.T, H, dh);
  SlstmRefState own;
  SlstmRefState& s = state ? *state : own;
  for (std::vector<double>* v : {&s.c, &s.n, &s.m, &s.h}) {
    if (v->empty()) v->assign(size_t(d.batch * D), 0.0);
    SSM_CHECK(int64_t(v->size()) == d.batch * D, "ref::slstm: state sizes do not match");
  }
  const auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  std::vector<double> y(size_t(rows * D)), raw(size_t(4 * D));
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t t = 0; t < d.T; ++t) {
      const int64_t row = b * d.T + t;
      double* h = &s.h[size_t(b * D)];
      for (int64_t hd = 0; hd < H; ++hd)
        for (int64_t g = 0; g < 4; ++g)
          for (int64_t k = 0; k < dh; ++k) {
            double v = in.wx[size_t(row * 4 * D + g * D + hd * dh + k)] + in.bias[size_t((hd * 4 + g) * dh + k)];
            for (int64_t j = 0; j < dh; ++j)
              v += h[hd * dh + j] * in.R[size_t((hd * dh + j) * 4 * dh + g * dh + k)];
            raw[size_t(g * D + hd * dh + k)] = v;
          }
      for (int64_t u = 0; u < D; ++u) {
        const size_t at = size_t(b * D + u);
        const double i_raw = raw[size_t(u)], f_raw = raw[size_t(D + u)];
        const double z = std::tanh(raw[size_t(2 * D + u)]), o = sigmoid(raw[size_t(3 * D + u)]);
        const double log_f = -std::log1p(std::exp(-f_raw)) + s.m[at];
        const double m_new = s.n[at] == 0.0 ? i_raw : std::max(i_raw, log_f);
        const double i_gate = std::exp(i_raw - m_new), f_gate = std::exp(log_f - m_new);
        s.c[at] = f_gate * s.c[at] + i_gate * z;
        s.n[at] = f_gate * s.n[at] + i_gate;
        s.m[at] = m_new;
        h[u] = o * s.c[at] / s.n[at];
        y[size_t(row * D + u)] = h[u];
      }
    }
  return y;
}

}  // namespace ssm::ref
