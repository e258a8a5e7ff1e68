// mamba3_backward against central finite differences of the double reference ref::mamba3: every
// input and parameter, SISO and MIMO (ranks 1 to 3, both rotation pairings), several heads and groups,
// partial and full rotation, the A floor acting,
// chunks that do not divide T, strided inputs and gradients.
#include <gtest/gtest.h>

#include "ops/mamba3_test_data.h"
#include "ops/ops_backward.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct BackwardCase {
  int64_t batch, T, H, P, G, N, S, chunk;
  double A_floor;
  int64_t R = 1;
  bool halves = false;
};

class BackwardMamba3 : public ::testing::TestWithParam<BackwardCase> {};

TEST_P(BackwardMamba3, MatchesFiniteDifferences) {
  const BackwardCase bc = GetParam();
  Mamba3Case c;
  c.batch = bc.batch;
  c.T = bc.T;
  c.H = bc.H;
  c.P = bc.P;
  c.G = bc.G;
  c.N = bc.N;
  c.S = bc.S;
  c.A_floor = bc.A_floor;
  c.R = bc.R;
  c.rotate_halves = bc.halves;
  c.strided = true;
  c.seed = uint64_t(bc.T * 17 + bc.chunk);
  ref::Mamba3RefInputs in = make_mamba3_data(c);
  Rng rng(c.seed + 1);
  const Vec wy = randn(rng, c.batch * c.T * c.R * c.H * c.P);
  const auto loss = [&] { return dot(wy, ref::mamba3(c.dims(), in)); };

  c.chunk = bc.chunk;
  const ops::Mamba3Inputs t = make_mamba3_inputs(c, in, 0, c.T);
  const auto zeros = [](const Shape& shape) { return Tensor::zeros(shape); };
  ops::Mamba3Grads g;
  g.dx = make_strided(t.x.shape(), Vec(size_t(t.x.numel()), 7.0), 2);  // written over, not added to
  g.dB = zeros(t.B.shape());
  g.dC = make_strided(t.C.shape(), Vec(size_t(t.C.numel()), -3.0), 1);
  g.ddt = zeros(t.dt.shape());
  g.dA = zeros(t.A.shape());
  g.dtrap = zeros(t.trap.shape());
  g.dangles = zeros(t.angles.shape());
  g.ddt_bias = make({c.H}, Vec(size_t(c.H), 0.5));  // accumulated onto
  g.dB_bias = zeros({c.H, c.R * c.N});
  g.dC_bias = zeros({c.H, c.R * c.N});
  g.dD = make({c.H}, Vec(size_t(c.H), -0.25));
  ops::mamba3_backward(t, make_strided({c.batch, c.T, c.R * c.H * c.P}, wy, 1), g);

  constexpr double kTol = 2e-3;
  EXPECT_GRAD_NEAR(to_vec(g.dx), central_diff(in.x, loss), kTol, "x");
  EXPECT_GRAD_NEAR(to_vec(g.dB), central_diff(in.B, loss), kTol, "B");
  EXPECT_GRAD_NEAR(to_vec(g.dC), central_diff(in.C, loss), kTol, "C");
  EXPECT_GRAD_NEAR(to_vec(g.ddt), central_diff(in.dt, loss), kTol, "dt");
  EXPECT_GRAD_NEAR(to_vec(g.dA), central_diff(in.A, loss), kTol, "A");
  EXPECT_GRAD_NEAR(to_vec(g.dtrap), central_diff(in.trap, loss), kTol, "trap");
  EXPECT_GRAD_NEAR(to_vec(g.dangles), central_diff(in.angles, loss), kTol, "angles");
  EXPECT_GRAD_NEAR(to_vec(g.dB_bias), central_diff(in.B_bias, loss), kTol, "B_bias");
  EXPECT_GRAD_NEAR(to_vec(g.dC_bias), central_diff(in.C_bias, loss), kTol, "C_bias");
  Vec want_dt_bias = central_diff(in.dt_bias, loss), want_D = central_diff(in.D, loss);
  for (double& v : want_dt_bias) v += 0.5;
  for (double& v : want_D) v -= 0.25;
  EXPECT_GRAD_NEAR(to_vec(g.ddt_bias), want_dt_bias, kTol, "dt_bias");
  EXPECT_GRAD_NEAR(to_vec(g.dD), want_D, kTol, "D");
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardMamba3,
                         ::testing::Values(BackwardCase{2, 11, 4, 3, 2, 8, 2, 4, 1e-4},
                                           BackwardCase{1, 9, 2, 4, 1, 6, 3, 64, 0.3},
                                           BackwardCase{3, 7, 2, 2, 2, 4, 1, 1, 1e-4},
                                           BackwardCase{1, 13, 3, 3, 1, 8, 4, 5, 0.3},
                                           BackwardCase{2, 11, 4, 3, 2, 8, 2, 4, 1e-4, 2, true},
                                           BackwardCase{1, 9, 2, 4, 1, 6, 3, 64, 0.3, 3, true},
                                           BackwardCase{3, 7, 2, 2, 2, 4, 1, 3, 1e-4, 1, true},
                                           BackwardCase{1, 13, 3, 3, 1, 8, 4, 5, 0.3, 2, false}),
                         CaseIndexName());

TEST(BackwardMamba3Checks, BadShapesAreErrors) {
  Mamba3Case c;
  const ref::Mamba3RefInputs data = make_mamba3_data(c);
  const ops::Mamba3Inputs in = make_mamba3_inputs(c, data, 0, c.T);
  ops::Mamba3Grads g;
  g.dx = Tensor::zeros(in.x.shape());
  Tensor dy = Tensor::zeros({c.batch, c.T, c.H * c.P});
  EXPECT_THROW(ops::mamba3_backward(in, Tensor::zeros({c.batch, c.T + 1, c.H * c.P}), g), Error);
  ops::Mamba3Inputs no_chunk = in;
  no_chunk.chunk_size = 0;
  EXPECT_THROW(ops::mamba3_backward(no_chunk, dy, g), Error);
  g.dB = Tensor::zeros({c.batch, c.T, c.H * c.N});  // per head instead of per group
  EXPECT_THROW(ops::mamba3_backward(in, dy, g), Error);
  g.dB = Tensor();
  g.dD = Tensor::zeros({c.H + 1});
  EXPECT_THROW(ops::mamba3_backward(in, dy, g), Error);
}

}  // namespace
}  // namespace ssm
