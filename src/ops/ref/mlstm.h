// Double-precision oracles for xLSTM's pieces: ops::mlstm / ops::mlstm_step as the plain recurrence
// (one token at a time, the equations in ops/ops.h, transformers' mlstm_recurrent_step_native),
// ops::soft_cap and ops::group_layernorm. Pure functions of their inputs.
//
// Layouts (contiguous, row-major): q, k [batch, T, H*dk]; v [batch, T, H*dv]; i, f [batch, T, H];
// returns h [batch, T, H*dv]. State: C [batch, H, dk, dv], n [batch, H, dk], m [batch, H].
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

struct MlstmDims {
  int64_t batch = 1, T = 1, heads = 1, dk = 1, dv = 1;
};

struct MlstmRefInputs {
  std::vector<double> q, k, v, i, f;
  double eps = 1e-6;
};

struct MlstmRefState {
  std::vector<double> C, n, m;  // empty: zeros
};

// state (optional): the starting state (empty vectors = zeros), replaced by the final one.
// Throws ssm::Error when a size does not match the dims.
std::vector<double> mlstm(const MlstmDims& dims, const MlstmRefInputs& in, MlstmRefState* state = nullptr);

// cap · tanh(x / cap), elementwise.
std::vector<double> soft_cap(const std::vector<double>& x, double cap);

// LayerNorm of each group of group_size channels of x [rows, width]: (x − μ) / sqrt(σ² + eps) · w + b
// (σ² biased; b empty = none).
std::vector<double> group_layernorm(const std::vector<double>& x, const std::vector<double>& w,
                                    const std::vector<double>& b, int64_t rows, int64_t width, int64_t group_size,
                                    double eps);

}  // namespace ssm::ref
