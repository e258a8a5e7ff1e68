// slstm_backward (back-propagation through time) against central finite differences of the double
// reference ref::slstm: the gradients of the gate inputs, of R and of the bias; dR and dbias accumulate.
#include <gtest/gtest.h>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/slstm.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct SlstmCase {
  int64_t batch, T, H, dh;
  double r_scale;  // of R: how strongly h_{t-1} feeds the gates
};

class BackwardSlstm : public ::testing::TestWithParam<SlstmCase> {};

TEST_P(BackwardSlstm, MatchesFiniteDifferences) {
  const SlstmCase c = GetParam();
  const int64_t D = c.H * c.dh;
  Rng rng(uint64_t(c.T * 17 + c.dh));
  ref::SlstmRefInputs in;
  in.wx = randn(rng, c.batch * c.T * 4 * D, 1.5);
  in.R = randn(rng, c.H * c.dh * 4 * c.dh, c.r_scale);
  in.bias = randn(rng, 4 * D, 0.5);
  const Vec wy = randn(rng, c.batch * c.T * D);
  const ref::SlstmDims dims{c.batch, c.T, c.H, c.dh};
  const auto loss = [&] { return dot(wy, ref::slstm(dims, in)); };

  ops::SlstmInputs t;
  t.wx = make_strided({c.batch, c.T, 4 * D}, in.wx, 3);
  t.R = make({c.H, c.dh, 4 * c.dh}, in.R);
  t.bias = make({4 * D}, in.bias);
  t.n_heads = c.H;
  ops::SlstmGrads g;
  g.dwx = make_strided(t.wx.shape(), Vec(size_t(t.wx.numel()), std::nan("")), 2);
  g.dR = make(t.R.shape(), Vec(size_t(t.R.numel()), 0.5));
  g.dbias = make(t.bias.shape(), Vec(size_t(t.bias.numel()), -0.25));
  ops::slstm_backward(t, make_strided({c.batch, c.T, D}, wy, 1), g);

  constexpr double kTol = 1e-3;
  EXPECT_GRAD_NEAR(to_vec(g.dwx), central_diff(in.wx, loss), kTol, "wx");
  Vec want_dR = central_diff(in.R, loss), want_dbias = central_diff(in.bias, loss);
  for (double& v : want_dR) v += 0.5;  // accumulated onto the starting values
  for (double& v : want_dbias) v -= 0.25;
  EXPECT_GRAD_NEAR(to_vec(g.dR), want_dR, kTol, "R");
  EXPECT_GRAD_NEAR(to_vec(g.dbias), want_dbias, kTol, "bias");
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardSlstm,
                         ::testing::Values(SlstmCase{2, 9, 2, 3, 0.5}, SlstmCase{1, 1, 1, 4, 0.5},
                                           SlstmCase{3, 6, 3, 2, 1.0}, SlstmCase{1, 13, 1, 5, 0.3},
                                           SlstmCase{2, 7, 2, 1, 0.0}),
                         CaseIndexName());

}  // namespace
}  // namespace ssm
