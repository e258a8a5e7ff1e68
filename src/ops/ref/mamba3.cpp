#include "ops/ref/mamba3.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace ssm::ref {

namespace {
void zeros_if_empty(std::vector<double>& v, int64_t n) {
  if (v.empty()) v.assign(size_t(n), 0.0);
}
}  // namespace

std::vector<double> mamba3(const Mamba3Dims& d, const Mamba3RefInputs& in, Mamba3RefState* state) {
  const int64_t H = d.heads, P = d.head_dim, G = d.groups, N = d.d_state, S = d.angles, rows = d.batch * d.T;
  const auto sized = [](const std::vector<double>& v, int64_t n) { return int64_t(v.size()) == n; };
  SSM_CHECK(G > 0 && H % G == 0 && 2 * S <= N && sized(in.x, rows * H * P) && sized(in.B, rows * G * N) &&
                sized(in.C, rows * G * N) && sized(in.dt, rows * H) && sized(in.A, rows * H) &&
                sized(in.trap, rows * H) && sized(in.angles, rows * S) && sized(in.dt_bias, H) &&
                sized(in.B_bias, H * N) && sized(in.C_bias, H * N) && (in.D.empty() || sized(in.D, H)),
            "ref::mamba3: input sizes do not match batch {} T {} heads {} P {} groups {} N {} angles {}", d.batch,
            d.T, H, P, G, N, S);
  Mamba3RefState own;
  Mamba3RefState& s = state ? *state : own;
  zeros_if_empty(s.angle, d.batch * H * S);
  zeros_if_empty(s.ssm, d.batch * H * P * N);
  zeros_if_empty(s.k, d.batch * H * N);
  zeros_if_empty(s.x, d.batch * H * P);
  SSM_CHECK(sized(s.angle, d.batch * H * S) && sized(s.ssm, d.batch * H * P * N) && sized(s.k, d.batch * H * N) &&
                sized(s.x, d.batch * H * P),
            "ref::mamba3: state sizes do not match");
  const double pi = std::numbers::pi;
  std::vector<double> y(static_cast<size_t>(rows * H * P)), k(static_cast<size_t>(N)), q(static_cast<size_t>(N));
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h, g = h / (H / G);
      double* phi = &s.angle[size_t(bh * S)];
      double* ssm = &s.ssm[size_t(bh * P * N)];
      double* k_prev = &s.k[size_t(bh * N)];
      double* x_prev = &s.x[size_t(bh * P)];
      for (int64_t t = 0; t < d.T; ++t) {
        const int64_t row = b * d.T + t;
        const double v = in.dt[size_t(row * H + h)] + in.dt_bias[size_t(h)];
        const double dt = v > 20 ? v : std::log1p(std::exp(v));
        const double A_raw = in.A[size_t(row * H + h)];
        const double heavy = A_raw >= 0 ? 1 + A_raw : 1 / (1 - A_raw);
        const double a = std::min(-heavy, -in.A_floor);
        const double alpha = std::exp(a * dt);
        const double lambda = 1 / (1 + std::exp(-in.trap[size_t(row * H + h)]));
        const double beta = (1 - lambda) * dt * alpha, gamma = lambda * dt;
        for (int64_t n = 0; n < N; ++n) {
          k[size_t(n)] = in.B[size_t((row * G + g) * N + n)] + in.B_bias[size_t(h * N + n)];
          q[size_t(n)] = in.C[size_t((row * G + g) * N + n)] + in.C_bias[size_t(h * N + n)];
        }
        for (int64_t j = 0; j < S; ++j) {
          double angle = phi[j] + pi * std::tanh(in.angles[size_t(row * S + j)]) * dt;
          angle -= 2 * pi * std::floor(angle / (2 * pi));
          phi[j] = angle;
          const double c = std::cos(angle), sn = std::sin(angle);
          for (std::vector<double>* r : {&k, &q}) {
            const double r0 = (*r)[size_t(2 * j)], r1 = (*r)[size_t(2 * j + 1)];
            (*r)[size_t(2 * j)] = r0 * c - r1 * sn;
            (*r)[size_t(2 * j + 1)] = r0 * sn + r1 * c;
          }
        }
        const double* x = &in.x[size_t(row * H * P + h * P)];
        const double D = in.D.empty() ? 0.0 : in.D[size_t(h)];
        for (int64_t p = 0; p < P; ++p) {
          double out = 0;
          for (int64_t n = 0; n < N; ++n) {
            double& e = ssm[p * N + n];
            e = alpha * e + beta * x_prev[p] * k_prev[n] + gamma * x[p] * k[size_t(n)];
            out += e * q[size_t(n)];
          }
          y[size_t(row * H * P + h * P + p)] = out + D * x[p];
        }
        for (int64_t n = 0; n < N; ++n) k_prev[n] = k[size_t(n)];
        for (int64_t p = 0; p < P; ++p) x_prev[p] = x[p];
      }
    }
  return y;
}

}  // namespace ssm::ref
