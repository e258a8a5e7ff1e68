// MIMO Mamba-3's projections: ops::mamba3_mimo_expand and _contract against the double reference
// (strided rows, outputs poisoned with NaN), mamba3_mimo_weight_grad and the input gradients (the other
// op) against central finite differences, and bad shapes.
#include <gtest/gtest.h>

#include <limits>

#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/mamba3.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

constexpr int64_t kRows = 7, H = 3, R = 4, P = 5;
const Shape kNarrow{1, kRows, H * P}, kWide{1, kRows, R * H * P};

Tensor poisoned(const Shape& shape) {
  return make_strided(shape, Vec(size_t(shape_numel(shape)), std::numeric_limits<double>::quiet_NaN()), 2);
}

TEST(OpsMamba3Mimo, ExpandAndContractMatchTheReference) {
  Rng rng(5);
  const Vec narrow = randn(rng, kRows * H * P), wide = randn(rng, kRows * R * H * P), w = randn(rng, H * R * P);
  const Tensor weight = make({H, R, P}, w);
  Tensor expanded = poisoned(kWide), contracted = poisoned(kNarrow);
  ops::mamba3_mimo_expand(make_strided(kNarrow, narrow, 3), weight, expanded);
  ops::mamba3_mimo_contract(make_strided(kWide, wide, 1), weight, contracted);
  EXPECT_LT(rel_err(to_vec(expanded), ref::mamba3_mimo_expand(narrow, w, kRows, H, R, P)), 1e-6);
  EXPECT_LT(rel_err(to_vec(contracted), ref::mamba3_mimo_contract(wide, w, kRows, H, R, P)), 1e-6);
}

TEST(OpsMamba3Mimo, GradientsMatchFiniteDifferences) {
  Rng rng(6);
  Vec narrow = randn(rng, kRows * H * P), wide = randn(rng, kRows * R * H * P), w = randn(rng, H * R * P);
  const Vec w_wide = randn(rng, kRows * R * H * P), w_narrow = randn(rng, kRows * H * P);
  const auto expand_loss = [&] { return dot(w_wide, ref::mamba3_mimo_expand(narrow, w, kRows, H, R, P)); };
  const auto contract_loss = [&] { return dot(w_narrow, ref::mamba3_mimo_contract(wide, w, kRows, H, R, P)); };
  const Tensor weight = make({H, R, P}, w);

  // expand: d(narrow) = contract(d(wide), w), dw += Σ d(wide) · narrow.
  Tensor dnarrow = poisoned(kNarrow), dw = make({H, R, P}, Vec(size_t(H * R * P), 0.5));
  ops::mamba3_mimo_contract(make_strided(kWide, w_wide, 1), weight, dnarrow);
  ops::mamba3_mimo_weight_grad(make_strided(kWide, w_wide, 1), make_strided(kNarrow, narrow, 2), dw);
  Vec want_dw = central_diff(w, expand_loss);
  for (double& v : want_dw) v += 0.5;  // accumulated onto
  EXPECT_GRAD_NEAR(to_vec(dnarrow), central_diff(narrow, expand_loss), 1e-6, "expand's input");
  EXPECT_GRAD_NEAR(to_vec(dw), want_dw, 1e-6, "expand's weight");

  // contract: d(wide) = expand(d(narrow), w), dw += Σ wide · d(narrow).
  Tensor dwide = poisoned(kWide);
  dw = Tensor::zeros({H, R, P});
  ops::mamba3_mimo_expand(make_strided(kNarrow, w_narrow, 1), weight, dwide);
  ops::mamba3_mimo_weight_grad(make_strided(kWide, wide, 3), make_strided(kNarrow, w_narrow, 1), dw);
  EXPECT_GRAD_NEAR(to_vec(dwide), central_diff(wide, contract_loss), 1e-6, "contract's input");
  EXPECT_GRAD_NEAR(to_vec(dw), central_diff(w, contract_loss), 1e-6, "contract's weight");
}

TEST(OpsMamba3Mimo, BadShapesAreErrors) {
  const Tensor narrow = Tensor::zeros(kNarrow), w = Tensor::zeros({H, R, P});
  Tensor wide = Tensor::zeros(kWide);
  Tensor short_wide = Tensor::zeros({1, kRows, (R - 1) * H * P});
  EXPECT_THROW(ops::mamba3_mimo_expand(narrow, w, short_wide), Error);
  EXPECT_THROW(ops::mamba3_mimo_expand(narrow, Tensor::zeros({H, R, P + 1}), wide), Error);
  EXPECT_THROW(ops::mamba3_mimo_expand(narrow, Tensor::zeros({H * R * P}), wide), Error);
  Tensor other_rows = Tensor::zeros({1, kRows + 1, H * P});
  EXPECT_THROW(ops::mamba3_mimo_contract(wide, w, other_rows), Error);
  Tensor dw = Tensor::zeros({H, R + 1, P});
  EXPECT_THROW(ops::mamba3_mimo_weight_grad(wide, narrow, dw), Error);
}

}  // namespace
}  // namespace ssm
