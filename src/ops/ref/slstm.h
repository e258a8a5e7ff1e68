// Double-precision oracle for ops::slstm / ops::slstm_step: the recurrence of ops/ops.h one token at
// a time, as NX-AI's vanilla sLSTM cell (slstm_forward_pointwise) computes it, with its fresh-state
// rule applied per unit as its CUDA kernel does. A pure function of its inputs.
//
// Layouts (contiguous, row-major, D = heads · dh): wx [batch, T, 4·D] (gates i, f, z, o, each
// [heads, dh]); R [heads, dh, 4·dh]; bias [heads, 4, dh]; returns y [batch, T, D]. State: c, n, m,
// h [batch, D] each.
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

struct SlstmDims {
  int64_t batch = 1, T = 1, heads = 1, dh = 1;
};

struct SlstmRefInputs {
  std::vector<double> wx, R, bias;
};

struct SlstmRefState {
  std::vector<double> c, n, m, h;  // empty: zeros
};

// state (optional): the starting state (empty vectors = zeros), replaced by the final one.
// Throws ssm::Error when a size does not match the dims.
std::vector<double> slstm(const SlstmDims& dims, const SlstmRefInputs& in, SlstmRefState* state = nullptr);

}  // namespace ssm::ref
