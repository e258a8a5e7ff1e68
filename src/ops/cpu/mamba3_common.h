// What ops::mamba3, ops::mamba3_step and ops::mamba3_backward share on the CPU (SISO and MIMO alike:
// SISO is rank 1): the input checks, one head's view of the inputs, the per-token coefficients, the
// rotation pairs and the recurrent token update (the backward recomputes states with it).
#pragma once
#include <cmath>
#include <cstdint>
#include <numbers>

#include "core/error.h"
#include "ops/cpu/op_util.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

struct Mamba3Dims {
  int64_t B = 0, T = 1, H = 0, P = 0, G = 0, N = 0, S = 0, R = 1;  // R: the MIMO rank
};

// Checks the inputs ([B,T,·] rows, or [B,·] for a step) and returns the sizes.
Mamba3Dims check_mamba3_inputs(const char* op, const Mamba3Inputs& in, bool step);
void check_mamba3_state(const char* op, const Mamba3State& s, const Mamba3Dims& d);

constexpr float kPi = std::numbers::pi_v<float>;
constexpr float kTwoPi = 2.0f * kPi;

// The scalars of one token of one head (ops.h's equations) and what their gradients need.
struct Mamba3Coefs {
  float dt, dt_grad;  // dt = softplus(dt_raw + dt_bias), dt_grad its derivative
  float a, a_grad;    // a = min(−f(A_raw), −A_floor), a_grad = da / dA_raw
  float alpha, lambda, beta, gamma;
};
inline Mamba3Coefs mamba3_coefs(float dt_raw, float dt_bias, float A_raw, float A_floor, float trap_raw) {
  Mamba3Coefs c;
  const float v = dt_raw + dt_bias;
  c.dt = softplus_f(v);
  c.dt_grad = softplus_grad_f(v);
  // The heavy-tail activation f(u) = 1 + u (u ≥ 0), 1 / (1 − u) (u < 0); f'(u) = 1, 1 / (1 − u)².
  const float f = A_raw >= 0 ? 1.0f + A_raw : 1.0f / (1.0f - A_raw);
  const float f_grad = A_raw >= 0 ? 1.0f : f * f;
  const bool floored = -f > -A_floor;
  c.a = floored ? -A_floor : -f;
  c.a_grad = floored ? 0.0f : -f_grad;
  c.alpha = std::exp(c.a * c.dt);
  c.lambda = 1.0f / (1.0f + std::exp(-trap_raw));
  c.beta = (1.0f - c.lambda) * c.dt * c.alpha;
  c.gamma = c.lambda * c.dt;
  return c;
}

// The state channels that rotation pair j turns (ops.h's Mamba3Rotation).
struct Mamba3Pair {
  int64_t first, second;
};
inline Mamba3Pair mamba3_pair(Mamba3Rotation rotation, int64_t N, int64_t j) {
  return rotation == Mamba3Rotation::AdjacentPairs ? Mamba3Pair{2 * j, 2 * j + 1} : Mamba3Pair{j, j + N / 2};
}

// Sequence b, head h of the inputs: row t of each at base + t · stride, rank r's columns at + r · rank
// stride (x: H·P, B and C: G·N).
struct Mamba3Head {
  const float *x, *B, *C, *dt, *A, *trap, *angles;
  int64_t sx, sB, sC, sdt, sA, strap, sangles;
  int64_t rx, rB;  // rank strides of x and of B and C
  const float *B_bias, *C_bias;  // [R, N] of this head
  float dt_bias, D, A_floor;
  int64_t P, N, S, R;
  Mamba3Rotation rotation;

  Mamba3Head(const Mamba3Inputs& in, const Mamba3Dims& d, int64_t b, int64_t h);
  Mamba3Coefs coefs(int64_t t) const {
    return mamba3_coefs(dt[t * sdt], dt_bias, A[t * sA], A_floor, trap[t * strap]);
  }
  // Rank r's x of token t (P channels).
  const float* x_at(int64_t t, int64_t r) const { return x + t * sx + r * rx; }
  // Copies rank by rank the x of token t into out [R, P].
  void gather_x(int64_t t, float* out) const;
  // Advances φ (S angles, kept in [0, 2π)) by token t and writes its rotated k and q ([R, N] each).
  void rotate(int64_t t, float dt_t, float* phi, float* k, float* q) const;
};

// h = α h + β Σ_r x_prev,r k_prev,rᵀ + γ Σ_r x_r k_rᵀ (h [P,N]; x's [R, P], k's [R, N], contiguous), then
// y_r = h q_r + D x_r (y_r at y + r · y_rank_stride) when y is given (q may be null when it is not: it is
// then never read).
inline void mamba3_update(int64_t P, int64_t N, int64_t R, const Mamba3Coefs& c, const float* x_prev,
                          const float* k_prev, const float* x, const float* k, const float* q, float D, float* h,
                          float* y, int64_t y_rank_stride) {
  for (int64_t p = 0; p < P; ++p) {
    float* row = h + p * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) row[n] *= c.alpha;
    for (int64_t r = 0; r < R; ++r) {
      const float bx = c.beta * x_prev[r * P + p], gx = c.gamma * x[r * P + p];
      const float *kp = k_prev + r * N, *kr = k + r * N;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) row[n] += bx * kp[n] + gx * kr[n];
    }
    if (!y) continue;
    for (int64_t r = 0; r < R; ++r) {
      const float* qr = q + r * N;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t n = 0; n < N; ++n) acc += row[n] * qr[n];
      y[r * y_rank_stride + p] = acc + D * x[r * P + p];
    }
  }
}

}  // namespace ssm::ops::detail
