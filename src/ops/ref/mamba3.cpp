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
  const int64_t H = d.heads, P = d.head_dim, G = d.groups, N = d.d_state, S = d.angles, R = d.rank;
  const int64_t rows = d.batch * d.T;
  const auto sized = [](const std::vector<double>& v, int64_t n) { return int64_t(v.size()) == n; };
  SSM_CHECK(G > 0 && H % G == 0 && R > 0 && 2 * S <= N && (!d.rotate_halves || N % 2 == 0) &&
                sized(in.x, rows * R * H * P) && sized(in.B, rows * R * G * N) && sized(in.C, rows * R * G * N) &&
                sized(in.dt, rows * H) && sized(in.A, rows * H) && sized(in.trap, rows * H) &&
                sized(in.angles, rows * S) && sized(in.dt_bias, H) && sized(in.B_bias, H * R * N) &&
                sized(in.C_bias, H * R * N) && (in.D.empty() || sized(in.D, H)),
            "ref::mamba3: input sizes do not match batch {} T {} heads {} P {} groups {} N {} angles {} rank {}",
            d.batch, d.T, H, P, G, N, S, R);
  Mamba3RefState own;
  Mamba3RefState& s = state ? *state : own;
  zeros_if_empty(s.angle, d.batch * H * S);
  zeros_if_empty(s.ssm, d.batch * H * P * N);
  zeros_if_empty(s.k, d.batch * H * R * N);
  zeros_if_empty(s.x, d.batch * H * R * P);
  SSM_CHECK(sized(s.angle, d.batch * H * S) && sized(s.ssm, d.batch * H * P * N) &&
                sized(s.k, d.batch * H * R * N) && sized(s.x, d.batch * H * R * P),
            "ref::mamba3: state sizes do not match");
  const double pi = std::numbers::pi;
  std::vector<double> y(static_cast<size_t>(rows * R * H * P)), k(size_t(R * N)), q(size_t(R * N)),
      x(size_t(R * P));
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h, g = h / (H / G);
      double* phi = &s.angle[size_t(bh * S)];
      double* ssm = &s.ssm[size_t(bh * P * N)];
      double* k_prev = &s.k[size_t(bh * R * N)];
      double* x_prev = &s.x[size_t(bh * R * P)];
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
        for (int64_t r = 0; r < R; ++r) {
          const int64_t bc = (row * R + r) * G + g;
          for (int64_t n = 0; n < N; ++n) {
            k[size_t(r * N + n)] = in.B[size_t(bc * N + n)] + in.B_bias[size_t((h * R + r) * N + n)];
            q[size_t(r * N + n)] = in.C[size_t(bc * N + n)] + in.C_bias[size_t((h * R + r) * N + n)];
          }
          for (int64_t p = 0; p < P; ++p) x[size_t(r * P + p)] = in.x[size_t(((row * R + r) * H + h) * P + p)];
        }
        for (int64_t j = 0; j < S; ++j) {
          double angle = phi[j] + pi * std::tanh(in.angles[size_t(row * S + j)]) * dt;
          angle -= 2 * pi * std::floor(angle / (2 * pi));
          phi[j] = angle;
          const double c = std::cos(angle), sn = std::sin(angle);
          const int64_t i0 = d.rotate_halves ? j : 2 * j, i1 = d.rotate_halves ? j + N / 2 : 2 * j + 1;
          for (std::vector<double>* vec : {&k, &q})
            for (int64_t r = 0; r < R; ++r) {
              double& e0 = (*vec)[size_t(r * N + i0)];
              double& e1 = (*vec)[size_t(r * N + i1)];
              const double r0 = e0, r1 = e1;
              e0 = r0 * c - r1 * sn;
              e1 = r0 * sn + r1 * c;
            }
        }
        const double D = in.D.empty() ? 0.0 : in.D[size_t(h)];
        for (int64_t p = 0; p < P; ++p)
          for (int64_t n = 0; n < N; ++n) {
            double& e = ssm[p * N + n];
            e *= alpha;
            for (int64_t r = 0; r < R; ++r)
              e += beta * x_prev[r * P + p] * k_prev[r * N + n] + gamma * x[size_t(r * P + p)] * k[size_t(r * N + n)];
          }
        for (int64_t r = 0; r < R; ++r)
          for (int64_t p = 0; p < P; ++p) {
            double out = 0;
            for (int64_t n = 0; n < N; ++n) out += ssm[p * N + n] * q[size_t(r * N + n)];
            y[size_t(((row * R + r) * H + h) * P + p)] = out + D * x[size_t(r * P + p)];
          }
        std::copy(k.begin(), k.end(), k_prev);
        std::copy(x.begin(), x.end(), x_prev);
      }
    }
  return y;
}

std::vector<double> mamba3_mimo_expand(const std::vector<double>& narrow, const std::vector<double>& w, int64_t rows,
                                       int64_t H, int64_t R, int64_t P) {
  SSM_CHECK(int64_t(narrow.size()) == rows * H * P && int64_t(w.size()) == H * R * P,
            "ref::mamba3_mimo_expand: sizes do not match");
  std::vector<double> wide(size_t(rows * R * H * P));
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t p = 0; p < P; ++p) {
          const size_t at = size_t(((m * R + r) * H + h) * P + p);
          wide[at] = narrow[size_t((m * H + h) * P + p)] * w[size_t((h * R + r) * P + p)];
        }
  return wide;
}

std::vector<double> mamba3_mimo_contract(const std::vector<double>& wide, const std::vector<double>& w, int64_t rows,
                                         int64_t H, int64_t R, int64_t P) {
  SSM_CHECK(int64_t(wide.size()) == rows * R * H * P && int64_t(w.size()) == H * R * P,
            "ref::mamba3_mimo_contract: sizes do not match");
  std::vector<double> narrow(size_t(rows * H * P), 0.0);
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t p = 0; p < P; ++p) {
          const size_t at = size_t(((m * R + r) * H + h) * P + p);
          narrow[size_t((m * H + h) * P + p)] += wide[at] * w[size_t((h * R + r) * P + p)];
        }
  return narrow;
}

}  // namespace ssm::ref
