// The mLSTM host checks' cases, random inputs and the recurrence of ops.h in double (mlstm_host_check.cpp and
// mlstm_backward_host_check.cpp). Include after check_util.h.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

struct Case {
  int batch, T, H, dk, dv, chunk;
  int64_t state_budget;  // bytes of chunk states a segment may hold (small: many segments)
  int steps;             // tokens after the forward, one step each
};

// Every token's inputs ([B, T, width] rows) and the starting state (in double: a finite difference's inputs).
template <class V>
struct InputsOf {
  std::vector<V> q, k, v, i, f, C0, n0, m0;
};
using Inputs = InputsOf<float>;

template <class T>
Inputs make_inputs(const Case& k, int tokens, unsigned seed) {
  std::mt19937 gen(seed);
  NormalFill<T> fill{gen};
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  Inputs in;
  const size_t rows = size_t(k.batch) * tokens;
  fill(in.q, rows * k.H * k.dk, 1.0f, 0.0f, true);
  fill(in.k, rows * k.H * k.dk, 1.0f, 0.0f, true);
  fill(in.v, rows * k.H * k.dv, 1.0f, 0.0f, true);
  // Input gates from far below zero (e^{−m} wins the denominator) to above; forget gates mostly open.
  in.i.resize(rows * k.H);
  for (float& x : in.i) x = -12.0f + 16.0f * uniform(gen);
  fill(in.f, rows * k.H, 2.0f, 2.0f, false);
  const size_t heads = size_t(k.batch) * k.H;
  fill(in.C0, heads * k.dk * k.dv, 0.5f, 0.0f, false);
  fill(in.n0, heads * k.dk, 0.5f, 0.0f, false);
  fill(in.m0, heads, 1.0f, 0.0f, false);
  return in;
}

// The recurrence of ops.h in double, token by token: h [B, tokens, H·dv], the state advanced in place; dots and ms
// (optional, [B·H, tokens]): every token's q̂·n_t and m_t.
template <class V>
void reference(const Case& k, int tokens, const InputsOf<V>& in, std::vector<double>& h, std::vector<double>& C,
               std::vector<double>& n, std::vector<double>& m, std::vector<double>* dots = nullptr,
               std::vector<double>* ms = nullptr) {
  const double scale = 1.0 / std::sqrt(double(k.dk)), eps = 1e-6;
  h.assign(size_t(k.batch) * tokens * k.H * k.dv, 0.0);
  for (int b = 0; b < k.batch; ++b)
    for (int hd = 0; hd < k.H; ++hd) {
      const size_t bh = size_t(b) * k.H + hd;
      double* Cs = &C[bh * k.dk * k.dv];
      double* ns = &n[bh * k.dk];
      for (int t = 0; t < tokens; ++t) {
        const size_t row = size_t(b) * tokens + t;
        const double i = in.i[row * k.H + hd], f = in.f[row * k.H + hd];
        const double log_f = std::min(f, 0.0) - std::log1p(std::exp(-std::fabs(f)));
        const double m_next = std::max(log_f + m[bh], i);
        const double forget = std::exp(log_f + m[bh] - m_next), input = std::exp(i - m_next);
        m[bh] = m_next;
        const V* q = &in.q[(row * k.H + hd) * k.dk];
        const V* kk = &in.k[(row * k.H + hd) * k.dk];
        const V* v = &in.v[(row * k.H + hd) * k.dv];
        double dot = 0.0;
        for (int r = 0; r < k.dk; ++r) {
          ns[r] = forget * ns[r] + input * kk[r];
          dot += q[r] * scale * ns[r];
        }
        const double denom = std::max(std::fabs(dot), std::exp(-m_next)) + eps;
        if (dots) (*dots)[bh * tokens + t] = dot, (*ms)[bh * tokens + t] = m_next;
        for (int c = 0; c < k.dv; ++c) {
          double num = 0.0;
          for (int r = 0; r < k.dk; ++r) {
            double& s = Cs[size_t(r) * k.dv + c];
            s = forget * s + input * kk[r] * v[c];
            num += q[r] * scale * s;
          }
          h[(row * k.H + hd) * k.dv + c] = num / denom;
        }
      }
    }
}
