// Double-precision oracle for the Mamba-2 SSD op (ops::ssd / ops::ssd_step): the plain sequential
// recurrence, token by token, no chunking. Pure functions of their inputs.
//
// Layouts (all contiguous, row-major, index order as written):
//   x       [batch, T, H, P]      (= [batch, T, H*P])
//   dt      [batch, T, H]         raw, before dt_bias and softplus
//   dt_bias [H]                   empty = zeros
//   A       [H]                   already -exp(A_log)
//   B, C    [batch, T, G, N]      (= [batch, T, G*N]); head h reads group h / (H/G)
//   D       [H]                   empty = absent
//   state0  [batch, H, P, N]      empty = zeros
// Outputs: y [batch, T, H, P], state [batch, H, P, N] (the state after the last token).
//
//   dt_t = clamp(softplus(dt + dt_bias), dt_min, dt_max)   (softplus(v) = v for v > 20, as torch)
//   h_t  = exp(dt_t A_h) h_{t-1} + dt_t x_t B_tᵀ;   y_t = h_t C_t + D_h x_t.
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

namespace ssm::ref {

struct SsdDims {
  int64_t batch = 1, T = 1, heads = 1, head_dim = 1, groups = 1, state_dim = 1;
};

struct SsdRefInputs {
  std::vector<double> x, dt, dt_bias, A, B, C, D, state0;
  double dt_min = 0.0;
  double dt_max = std::numeric_limits<double>::infinity();
};

struct SsdRefOutputs {
  std::vector<double> y, state;
};

double softplus(double v);

// Whole sequence. Throws ssm::Error when a vector's size does not match the dims.
SsdRefOutputs ssd(const SsdDims& dims, const SsdRefInputs& in);
// One token: the same with T = 1 (x [batch, H*P], dt [batch, H], B/C [batch, G*N]).
SsdRefOutputs ssd_step(SsdDims dims, const SsdRefInputs& in);

}  // namespace ssm::ref
