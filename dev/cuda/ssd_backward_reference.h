// The Mamba-2 SSD backward of the plain recurrence in double, token by token: the reference of
// dev/cuda/ssd_backward.cu and ssd_backward_host_check.cpp. Per (batch b, head h; group g = h / (H/G)):
//   dt_t = clamp(softplus(dt_t + dt_bias), dt_min, dt_max),  h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ,
//   y_t = h_t C_t + D x_t;  the gradients of <dy, y> + <dfinal, h_T>.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace ssd_reference {

// Row-major F32 inputs: x, dy [B,T,H*P], dt [B,T,H], B, C [B,T,G*N], dt_bias, A, D [H], state0 and
// dfinal [B,H,P,N]; D, state0 and dfinal empty when absent.
struct Problem {
  int batch, T, H, P, G, N;
  float dt_min, dt_max;
  std::vector<float> x, dt, B, C, dt_bias, A, D, state0, dy, dfinal;
};

// Random inputs and dy for p's sizes, drawn through `fill` (check_util.h's NormalFill: activations
// rounded to the dtype under test): x, dy ~ N(0, 1), dt ~ N(0, dt_noise), B, C ~ N(0, 0.5),
// dt_bias ~ -3 + N(0, 0.3), A = -exp(U[0, ln 16]); D ~ N(0, 1), state0, dfinal ~ N(0, 0.5) when asked.
template <class Fill>
void fill_random(Problem& p, Fill& fill, float dt_noise, bool with_D, bool with_state0, bool with_dfinal) {
  std::uniform_real_distribution<float> uniform(0.0f, std::log(16.0f));
  const size_t rows = size_t(p.batch) * p.T, states = size_t(p.batch) * p.H * p.P * p.N;
  fill(p.x, rows * p.H * p.P, 1.0f, 0.0f, true);
  fill(p.dt, rows * p.H, dt_noise, 0.0f, true);
  fill(p.B, rows * p.G * p.N, 0.5f, 0.0f, true);
  fill(p.C, rows * p.G * p.N, 0.5f, 0.0f, true);
  fill(p.dy, rows * p.H * p.P, 1.0f, 0.0f, true);
  fill(p.dt_bias, p.H, 0.3f, -3.0f, false);
  p.A.resize(p.H);
  for (float& a : p.A) a = -std::exp(uniform(fill.gen));
  if (with_D) fill(p.D, p.H, 1.0f, 0.0f, false);
  if (with_state0) fill(p.state0, states, 0.5f, 0.0f, false);
  if (with_dfinal) fill(p.dfinal, states, 0.5f, 0.0f, false);
}

// The gradients (the parameter gradients dA, dD, dbias from zero).
struct Gradients {
  std::vector<double> dx, ddt, dB, dC, dA, dD, dbias, dstate0;
};

inline Gradients backward(const Problem& p) {
  const int HP = p.H * p.P, GN = p.G * p.N, PN = p.P * p.N;
  const bool with_D = !p.D.empty();
  Gradients r;
  r.dx.assign(size_t(p.batch) * p.T * HP, 0.0);
  r.ddt.assign(size_t(p.batch) * p.T * p.H, 0.0);
  r.dB.assign(size_t(p.batch) * p.T * GN, 0.0);
  r.dC.assign(size_t(p.batch) * p.T * GN, 0.0);
  r.dA.assign(p.H, 0.0);
  r.dD.assign(p.H, 0.0);
  r.dbias.assign(p.H, 0.0);
  r.dstate0.assign(size_t(p.batch) * p.H * PN, 0.0);
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.H; ++h) {
      const int g = h / (p.H / p.G);
      const size_t bh = size_t(b) * p.H + h;
      std::vector<double> dt(p.T), dfac(p.T), decay(p.T), states(size_t(p.T + 1) * PN, 0.0);
      if (!p.state0.empty())
        for (int e = 0; e < PN; ++e) states[e] = p.state0[bh * PN + e];
      for (int t = 0; t < p.T; ++t) {
        const size_t row = size_t(b) * p.T + t;
        const double raw = double(p.dt[row * p.H + h]) + p.dt_bias[h];
        const double sp = raw > 20.0 ? raw : std::log1p(std::exp(raw));
        dt[t] = std::min(std::max(sp, double(p.dt_min)), double(p.dt_max));
        dfac[t] = sp >= p.dt_min && sp <= p.dt_max ? (raw > 20.0 ? 1.0 : 1.0 / (1.0 + std::exp(-raw))) : 0.0;
        decay[t] = std::exp(dt[t] * p.A[h]);
        for (int q = 0; q < p.P; ++q)
          for (int n = 0; n < p.N; ++n)
            states[size_t(t + 1) * PN + q * p.N + n] =
                decay[t] * states[size_t(t) * PN + q * p.N + n] +
                dt[t] * p.x[row * HP + h * p.P + q] * p.B[row * GN + g * p.N + n];
      }
      std::vector<double> G(PN, 0.0);  // the gradient at h_t, walking back
      if (!p.dfinal.empty())
        for (int e = 0; e < PN; ++e) G[e] = p.dfinal[bh * PN + e];
      for (int t = p.T - 1; t >= 0; --t) {
        const size_t row = size_t(b) * p.T + t;
        const float* x = &p.x[row * HP + h * p.P];
        const float* dy = &p.dy[row * HP + h * p.P];
        const float* Bv = &p.B[row * GN + g * p.N];
        const float* Cv = &p.C[row * GN + g * p.N];
        const double* now = &states[size_t(t + 1) * PN];
        const double* before = &states[size_t(t) * PN];
        double d_dt = 0.0, g_before = 0.0;
        for (int q = 0; q < p.P; ++q) {
          if (with_D) {
            r.dD[h] += double(dy[q]) * x[q];
            r.dx[row * HP + h * p.P + q] += p.D[h] * double(dy[q]);
          }
          for (int n = 0; n < p.N; ++n) {
            double& gv = G[q * p.N + n];
            gv += double(dy[q]) * Cv[n];
            r.dC[row * GN + g * p.N + n] += double(dy[q]) * now[q * p.N + n];
            r.dx[row * HP + h * p.P + q] += dt[t] * gv * Bv[n];
            r.dB[row * GN + g * p.N + n] += dt[t] * gv * x[q];
            d_dt += gv * x[q] * Bv[n];
            g_before += gv * before[q * p.N + n];
          }
        }
        d_dt += p.A[h] * decay[t] * g_before;
        r.dA[h] += dt[t] * decay[t] * g_before;
        for (double& gv : G) gv *= decay[t];
        r.ddt[row * p.H + h] = d_dt * dfac[t];
        r.dbias[h] += d_dt * dfac[t];
      }
      for (int e = 0; e < PN; ++e) r.dstate0[bh * PN + e] = G[e];
    }
  return r;
}

}  // namespace ssd_reference
