// Double-precision oracle for ops::mamba3 / ops::mamba3_step: the recurrence of ops/ops.h one token at
// a time (mamba_ssm's mamba3_siso_step_ref; for MIMO the recurrence of mamba3_MIMO_chunk_ref in its
// tests/ops/tilelang/test_mamba3_mimo.py, token by token). A pure function of its inputs.
//
// Layouts (contiguous, row-major; R = rank, rank-major columns): x [batch, T, R*H*P]; B, C
// [batch, T, R*G*N]; dt, A, trap [batch, T, H]; angles [batch, T, S]; dt_bias [H]; B_bias, C_bias
// [H, R, N]; D [H] (empty: none); returns y [batch, T, R*H*P].
// State: angle [batch, H, S] (in [0, 2π)), ssm [batch, H, P, N], k [batch, H, R, N], x [batch, H, R, P].
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

struct Mamba3Dims {
  int64_t batch = 1, T = 1, heads = 1, head_dim = 1, groups = 1, d_state = 2, angles = 1;
  int64_t rank = 1;
  bool rotate_halves = false;  // pairs (j, j + N/2) (MIMO) instead of (2j, 2j + 1) (SISO)
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

// MIMO's projections (ops::mamba3_mimo_expand / _contract): rows of narrow [H*P] and wide [R*H*P], w [H, R, P].
std::vector<double> mamba3_mimo_expand(const std::vector<double>& narrow, const std::vector<double>& w, int64_t rows,
                                       int64_t H, int64_t R, int64_t P);
std::vector<double> mamba3_mimo_contract(const std::vector<double>& wide, const std::vector<double>& w, int64_t rows,
                                         int64_t H, int64_t R, int64_t P);

}  // namespace ssm::ref
