// conv1d_causal_backward against central differences of ref::conv1d_causal.
#include <gtest/gtest.h>

#include "core/random.h"
#include "ops/ops_backward.h"
#include "ops/ref/conv1d.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct ConvCase {
  int64_t batch, T, C, K;
  bool silu, bias, state;
};

class BackwardConv1d : public ::testing::TestWithParam<ConvCase> {};

TEST_P(BackwardConv1d, MatchesFiniteDifferences) {
  const ConvCase c = GetParam();
  Rng rng(31 + c.T * 7 + c.C);
  Vec x = randn(rng, c.batch * c.T * c.C), w = randn(rng, c.C * c.K, 0.5), b = c.bias ? randn(rng, c.C) : Vec{};
  const Vec s0 = c.state ? randn(rng, c.batch * (c.K - 1) * c.C) : Vec{};
  const Vec wy = randn(rng, c.batch * c.T * c.C);
  auto loss = [&] { return dot(wy, ref::conv1d_causal(x, w, b, s0, c.silu, c.batch, c.T, c.C, c.K).y); };

  const Shape s{c.batch, c.T, c.C};
  Tensor dx = make_strided(s, Vec(size_t(c.batch * c.T * c.C), 7.0));  // overwritten
  Tensor dw = Tensor::zeros({c.C, c.K}), db = Tensor::zeros({c.C});
  ops::conv1d_causal_backward(make_strided(s, x), make({c.C, c.K}, w), c.bias ? make({c.C}, b) : Tensor(), c.silu,
                              c.state ? make({c.batch, c.K - 1, c.C}, s0) : Tensor(), make_strided(s, wy, 1), dx, &dw,
                              c.bias ? &db : nullptr);
  EXPECT_GRAD_NEAR(to_vec(dx), central_diff(x, loss), 1e-4, "x");
  EXPECT_GRAD_NEAR(to_vec(dw), central_diff(w, loss), 1e-4, "w");
  if (c.bias) EXPECT_GRAD_NEAR(to_vec(db), central_diff(b, loss), 1e-4, "bias");
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardConv1d,
                         ::testing::Values(ConvCase{2, 9, 5, 4, true, true, false},
                                           ConvCase{2, 9, 5, 4, false, true, true},
                                           ConvCase{1, 3, 3, 4, true, true, true},      // T < K
                                           ConvCase{3, 11, 37, 4, true, false, false},  // channels over one block
                                           ConvCase{2, 300, 3, 3, true, true, true},    // time over one tile
                                           ConvCase{1, 5, 2, 1, true, true, false}),
                         ssm::testing::CaseIndexName());   // K = 1

}  // namespace
}  // namespace ssm
