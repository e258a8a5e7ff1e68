#include "ops/ref/selective_scan.h"

#include <cmath>

#include "core/error.h"
#include "ops/ref/ssd.h"  // ref::softplus

namespace ssm::ref {

namespace {
void check_size(const char* name, const std::vector<double>& v, int64_t expected, bool optional) {
  if (optional && v.empty()) return;
  SSM_CHECK(int64_t(v.size()) == expected, "ref::selective_scan: {} has {} values, expected {}", name, v.size(),
            expected);
}
}  // namespace

SelectiveScanRefOutputs selective_scan(const SelectiveScanDims& dims, const SelectiveScanRefInputs& in) {
  const int64_t Bt = dims.batch, T = dims.T, D = dims.channels, N = dims.state_dim;
  check_size("u", in.u, Bt * T * D, false);
  check_size("delta", in.delta, Bt * T * D, false);
  check_size("delta_bias", in.delta_bias, D, true);
  check_size("A", in.A, D * N, false);
  check_size("B", in.B, Bt * T * N, false);
  check_size("C", in.C, Bt * T * N, false);
  check_size("Dskip", in.Dskip, D, true);
  check_size("z", in.z, Bt * T * D, true);
  check_size("state0", in.state0, Bt * D * N, true);

  SelectiveScanRefOutputs out;
  out.y.assign(size_t(Bt * T * D), 0.0);
  out.state = in.state0.empty() ? std::vector<double>(size_t(Bt * D * N), 0.0) : in.state0;
  for (int64_t b = 0; b < Bt; ++b) {
    for (int64_t d = 0; d < D; ++d) {
      double* h = &out.state[size_t((b * D + d) * N)];
      for (int64_t t = 0; t < T; ++t) {
        const size_t i = size_t((b * T + t) * D + d);
        const double raw = in.delta[i] + (in.delta_bias.empty() ? 0.0 : in.delta_bias[size_t(d)]);
        const double dt = in.delta_softplus ? softplus(raw) : raw;
        const double* Bv = &in.B[size_t((b * T + t) * N)];
        const double* Cv = &in.C[size_t((b * T + t) * N)];
        double y = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(dt * in.A[size_t(d * N + n)]) * h[n] + dt * Bv[n] * in.u[i];
          y += Cv[n] * h[n];
        }
        if (!in.Dskip.empty()) y += in.Dskip[size_t(d)] * in.u[i];
        if (!in.z.empty()) y *= in.z[i] / (1.0 + std::exp(-in.z[i]));
        out.y[i] = y;
      }
    }
  }
  return out;
}

}  // namespace ssm::ref
