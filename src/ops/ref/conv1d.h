// Double-precision oracle for ops::conv1d_causal (depthwise, causal). Pure function of its inputs.
//
// Layouts (contiguous, row-major):
//   x      [batch, T, C]
//   w      [C, K]
//   bias   [C]            empty = none
//   state0 [batch, K-1, C] the K-1 inputs before x[:, 0], oldest first; empty = zeros
// Outputs: y [batch, T, C]; state [batch, K-1, C] = the last K-1 inputs of concat(state0, x).
//
//   y[b, t, c] = act(bias[c] + sum_{j<K} w[c, j] · xs[b, t + j, c]),  xs = concat(state0, x) over time,
//   act = silu (v / (1 + e^-v)) when `silu`, else identity.
// The step form is this with T = 1.
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

struct Conv1dOutputs {
  std::vector<double> y, state;
};

Conv1dOutputs conv1d_causal(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& bias,
                            const std::vector<double>& state0, bool silu, int64_t batch, int64_t T, int64_t C,
                            int64_t K);

}  // namespace ssm::ref
