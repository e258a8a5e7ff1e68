#include "ops/ref/ssd.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ssm::ref {

double softplus(double v) { return v > 20.0 ? v : std::log1p(std::exp(v)); }

namespace {
void check_size(const char* name, const std::vector<double>& v, int64_t expected, bool optional) {
  if (optional && v.empty()) return;
  SSM_CHECK(int64_t(v.size()) == expected, "ref::ssd: {} has {} values, expected {}", name, v.size(), expected);
}
}  // namespace

SsdRefOutputs ssd(const SsdDims& d, const SsdRefInputs& in) {
  const int64_t Bt = d.batch, T = d.T, H = d.heads, P = d.head_dim, G = d.groups, N = d.state_dim;
  SSM_CHECK(Bt >= 0 && T >= 0 && H > 0 && P > 0 && G > 0 && N > 0 && H % G == 0,
            "ref::ssd: bad dims batch {} T {} H {} P {} G {} N {}", Bt, T, H, P, G, N);
  check_size("x", in.x, Bt * T * H * P, false);
  check_size("dt", in.dt, Bt * T * H, false);
  check_size("dt_bias", in.dt_bias, H, true);
  check_size("A", in.A, H, false);
  check_size("B", in.B, Bt * T * G * N, false);
  check_size("C", in.C, Bt * T * G * N, false);
  check_size("D", in.D, H, true);
  check_size("state0", in.state0, Bt * H * P * N, true);

  SsdRefOutputs out;
  out.y.assign(size_t(Bt * T * H * P), 0.0);
  out.state = in.state0.empty() ? std::vector<double>(size_t(Bt * H * P * N), 0.0) : in.state0;
  const int64_t heads_per_group = H / G;
  for (int64_t b = 0; b < Bt; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / heads_per_group;
      double* s = &out.state[size_t(((b * H) + h) * P * N)];
      for (int64_t t = 0; t < T; ++t) {
        const int64_t bt = b * T + t;
        const double bias = in.dt_bias.empty() ? 0.0 : in.dt_bias[size_t(h)];
        const double dtv = std::clamp(softplus(in.dt[size_t(bt * H + h)] + bias), in.dt_min, in.dt_max);
        const double decay = std::exp(dtv * in.A[size_t(h)]);
        const double* x = &in.x[size_t((bt * H + h) * P)];
        const double* Bv = &in.B[size_t((bt * G + g) * N)];
        const double* Cv = &in.C[size_t((bt * G + g) * N)];
        double* y = &out.y[size_t((bt * H + h) * P)];
        for (int64_t p = 0; p < P; ++p) {
          double acc = 0.0;
          for (int64_t n = 0; n < N; ++n) {
            double& sv = s[p * N + n];
            sv = decay * sv + dtv * x[p] * Bv[n];
            acc += sv * Cv[n];
          }
          y[p] = acc + (in.D.empty() ? 0.0 : in.D[size_t(h)] * x[p]);
        }
      }
    }
  }
  return out;
}

SsdRefOutputs ssd_step(SsdDims dims, const SsdRefInputs& in) {
  dims.T = 1;
  return ssd(dims, in);
}

}  // namespace ssm::ref
