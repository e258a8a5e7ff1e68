// Double-precision oracle for ops::selective_scan (Mamba-1 S6): the sequential recurrence, token by
// token. Pure function of its inputs.
//
// Layouts (all contiguous, row-major, index order as written):
//   u, delta, z  [batch, T, D]   delta raw, before delta_bias and softplus; z empty = no gate
//   delta_bias   [D]             empty = zeros
//   A            [D, N]          already -exp(A_log)
//   B, C         [batch, T, N]
//   Dskip        [D]             empty = none
//   state0       [batch, D, N]   empty = zeros
// Outputs: y [batch, T, D], state [batch, D, N] (the state after the last token).
//
//   dt_t = softplus(delta_t + delta_bias) (delta_t + delta_bias when !delta_softplus)
//   h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[n] u_t[d]
//   y_t[d] = (sum_n C_t[n] h_t[d, n] + Dskip[d] u_t[d]) · silu(z_t[d])
// The step form is this with T = 1.
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

struct SelectiveScanDims {
  int64_t batch = 1, T = 1, channels = 1, state_dim = 1;  // batch, T, D, N
};

struct SelectiveScanRefInputs {
  std::vector<double> u, delta, delta_bias, A, B, C, Dskip, z, state0;
  bool delta_softplus = true;
};

struct SelectiveScanRefOutputs {
  std::vector<double> y, state;
};

// Throws ssm::Error when a vector's size does not match the dims.
SelectiveScanRefOutputs selective_scan(const SelectiveScanDims& dims, const SelectiveScanRefInputs& in);

}  // namespace ssm::ref
