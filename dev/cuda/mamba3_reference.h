// The Mamba-3 host checks' cases, random inputs and the recurrence of ops.h in double (mamba3_host_check.cpp and
// mamba3_backward_host_check.cpp). Include after check_util.h and mamba3_kernels.cuh.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <vector>

struct Case {
  int batch, T, H, P, G, N, S, R;
  bool halves;
  int chunks;  // of the forward
  int steps;   // tokens after the forward, one step each
};

// Every token's inputs ([B, tokens, width] rows) and the starting state (in double: a finite difference's inputs).
template <class V>
struct InputsOf {
  std::vector<V> x, B, C, dt, A, trap, angles, dt_bias, B_bias, C_bias, D;
  std::vector<V> angle0, ssm0, k0, x0;
};
using Inputs = InputsOf<float>;

template <class T>
Inputs make_inputs(const Case& k, int tokens, unsigned seed) {
  std::mt19937 gen(seed);
  NormalFill<T> fill{gen};
  Inputs in;
  const size_t rows = size_t(k.batch) * tokens, heads = size_t(k.batch) * k.H;
  fill(in.x, rows * k.R * k.H * k.P, 1.0f, 0.0f, true);
  fill(in.B, rows * k.R * k.G * k.N, 1.0f, 0.0f, true);
  fill(in.C, rows * k.R * k.G * k.N, 1.0f, 0.0f, true);
  fill(in.dt, rows * k.H, 1.0f, -0.5f, true);
  fill(in.A, rows * k.H, 2.0f, 0.0f, true);
  fill(in.trap, rows * k.H, 2.0f, 0.0f, true);
  fill(in.angles, rows * k.S, 1.5f, 0.0f, true);
  fill(in.dt_bias, k.H, 0.5f, -1.0f, false);
  fill(in.B_bias, size_t(k.H) * k.R * k.N, 0.5f, 1.0f, false);
  fill(in.C_bias, size_t(k.H) * k.R * k.N, 0.5f, 1.0f, false);
  fill(in.D, k.H, 0.5f, 1.0f, false);
  std::uniform_real_distribution<float> circle(0.0f, 6.28f);
  in.angle0.resize(heads * k.S);
  for (float& a : in.angle0) a = circle(gen);
  fill(in.ssm0, heads * k.P * k.N, 0.5f, 0.0f, false);
  fill(in.k0, heads * k.R * k.N, 1.0f, 0.0f, false);
  fill(in.x0, heads * k.R * k.P, 1.0f, 0.0f, false);
  return in;
}

// The walk's threads as mamba3.cu lays them out (threads_of), one chunk of `count` tokens.
inline ssm::ops::cuda::mamba3_kernels::Layout walk_layout(const Case& k, int count) {
  namespace kernels = ssm::ops::cuda::mamba3_kernels;
  kernels::Layout lay{};
  lay.tpr = int(std::bit_ceil(unsigned((k.N + 4 * kernels::kPieces - 1) / (4 * kernels::kPieces))));
  lay.rows = std::min(k.P, kernels::kMaxThreads / lay.tpr);
  lay.threads = std::max((lay.rows * lay.tpr + 31) / 32 * 32, (k.S + 31) / 32 * 32);
  lay.chunks = 1;
  lay.chunk_len = count;
  return lay;
}

// The walks' view of `count` tokens' inputs (the activations as T rows) and of y (may be null).
template <class T>
ssm::ops::cuda::mamba3_kernels::Args<T> walk_args(const Case& k, int count, const std::vector<T>* activations[7],
                                                  const Inputs& in, T* y, float A_floor) {
  const int x_width = k.R * k.H * k.P, bc_width = k.R * k.G * k.N;
  const auto rows = [&](int i, int width) { return ssm::ops::cuda::Rows<const T>{activations[i]->data(), width}; };
  return {rows(0, x_width),
          rows(1, bc_width),
          rows(2, bc_width),
          rows(3, k.H),
          rows(4, k.H),
          rows(5, k.H),
          rows(6, k.S),
          in.dt_bias.data(),
          in.B_bias.data(),
          in.C_bias.data(),
          in.D.data(),
          {y, x_width},
          count,
          k.H,
          k.P,
          k.G,
          k.N,
          k.S,
          k.R,
          k.halves,
          A_floor};
}

// The recurrence of ops.h in double, token by token: y [B, tokens, R·H·P], the state advanced in place.
struct Reference {
  std::vector<double> angle, ssm, k, x;
  template <class V>
  void run(const Case& c, int tokens, const InputsOf<V>& in, const float A_floor, std::vector<double>& y) {
    const int RN = c.R * c.N, RP = c.R * c.P;
    y.assign(size_t(c.batch) * tokens * RP * c.H, 0.0);
    std::vector<double> kt(RN), qt(RN), xt(RP);
    for (int b = 0; b < c.batch; ++b)
      for (int h = 0; h < c.H; ++h) {
        const size_t bh = size_t(b) * c.H + h;
        const int g = h / (c.H / c.G);
        for (int t = 0; t < tokens; ++t) {
          const size_t row = size_t(b) * tokens + t;
          const double v = double(in.dt[row * c.H + h]) + in.dt_bias[h];
          const double dt = v > 20 ? v : std::log1p(std::exp(v)), A_raw = in.A[row * c.H + h];
          const double f = A_raw >= 0 ? 1 + A_raw : 1 / (1 - A_raw), a = std::min(-f, -double(A_floor));
          const double alpha = std::exp(a * dt), lambda = 1 / (1 + std::exp(-double(in.trap[row * c.H + h])));
          const double beta = (1 - lambda) * dt * alpha, gamma = lambda * dt;
          for (int r = 0; r < c.R; ++r)
            for (int n = 0; n < c.N; ++n) {
              const size_t column = row * c.R * c.G * c.N + (size_t(r) * c.G + g) * c.N + n;
              kt[r * c.N + n] = double(in.B[column]) + in.B_bias[(size_t(h) * c.R + r) * c.N + n];
              qt[r * c.N + n] = double(in.C[column]) + in.C_bias[(size_t(h) * c.R + r) * c.N + n];
            }
          for (int j = 0; j < c.S; ++j) {
            double& phi = angle[bh * c.S + j];
            phi += M_PI * std::tanh(double(in.angles[row * c.S + j])) * dt;
            phi -= 2 * M_PI * std::floor(phi / (2 * M_PI));
            const int lo = c.halves ? j : 2 * j, hi = c.halves ? j + c.N / 2 : 2 * j + 1;
            for (int r = 0; r < c.R; ++r)
              for (double* w : {&kt[r * c.N], &qt[r * c.N]}) {
                const double w0 = w[lo], w1 = w[hi];
                w[lo] = w0 * std::cos(phi) - w1 * std::sin(phi);
                w[hi] = w0 * std::sin(phi) + w1 * std::cos(phi);
              }
          }
          for (int r = 0; r < c.R; ++r)
            for (int p = 0; p < c.P; ++p) xt[r * c.P + p] = in.x[row * RP * c.H + (size_t(r) * c.H + h) * c.P + p];
          double* hs = &ssm[bh * c.P * c.N];
          const double *kp = &k[bh * RN], *xp = &x[bh * RP];
          for (int p = 0; p < c.P; ++p)
            for (int n = 0; n < c.N; ++n) {
              double& e = hs[p * c.N + n];
              e *= alpha;
              for (int r = 0; r < c.R; ++r)
                e += beta * xp[r * c.P + p] * kp[r * c.N + n] + gamma * xt[r * c.P + p] * kt[r * c.N + n];
            }
          for (int r = 0; r < c.R; ++r)
            for (int p = 0; p < c.P; ++p) {
              double acc = in.D[h] * xt[r * c.P + p];
              for (int n = 0; n < c.N; ++n) acc += hs[p * c.N + n] * qt[r * c.N + n];
              y[row * RP * c.H + (size_t(r) * c.H + h) * c.P + p] = acc;
            }
          std::copy(kt.begin(), kt.end(), k.begin() + bh * RN);
          std::copy(xt.begin(), xt.end(), x.begin() + bh * RP);
        }
      }
  }
};
