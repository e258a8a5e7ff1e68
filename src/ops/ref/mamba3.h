// Double-precision oracle for ops::mamba3 / ops::mamba3_step: the recurrence of ops/ops.h one token at
// a time (mamba_ssm's mamba3_siso_step_ref). A pure function of its inputs.
//
// Layouts (contiguous, row-major): x [batch, T, H*P]; B, C [batch, T, G*N]; dt, A, trap [batch, T, H];
// angles [batch, T, S]; dt_bias [H]; B_bias, C_bias [H, N]; D [H] (empty: none); returns y [batch, T, H*P].
// State: angle [batch, H, S] (in [0, 2π)), ssm [batch, H, P, N], k [batch, H, N], x [batch, H, P].
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

struct Mamba3Dims {
  int64_t batch = 1, T = 1, heads = 1, head_dim = 1, groups = 1, d_state = 2, angles = 1;
};

struct Mamba3RefInputs {
  std::vector<double> x, B, C, dt, A, trap, angles;
  std::vector<double> dt_bias, B_bias, C_bias, D;
  double A_floor = 1e-4;
};

struct Mamba3RefState {
  std::vector<double> angle, ssm, k, x;  // empty: zeros
};

// state (optional): the starting state (empty vectors = zeros), replaced by the final one.
// Throws ssm::Error when a size does not match the dims.
std::vector<double> mamba3(const Mamba3Dims& dims, const Mamba3RefInputs& in, Mamba3RefState* state = nullptr);

}  // namespace ssm::ref
