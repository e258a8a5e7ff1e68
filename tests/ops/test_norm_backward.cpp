// rmsnorm_backward, gated_rmsnorm_backward, silu_backward and softplus_backward against central
// differences of the double references.
#include <gtest/gtest.h>

#include <cmath>

#include "core/random.h"
#include "ops/ops_backward.h"
#include "ops/ref/gated_rmsnorm.h"
#include "ops/ref/rmsnorm.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

TEST(BackwardRmsnorm, MatchesFiniteDifferences) {
  for (auto [batch, T, W] : {std::tuple{1, 1, 3}, {2, 7, 5}, {3, 5, 32}, {2, 3, 67}}) {
    SCOPED_TRACE(::testing::Message() << batch << "x" << T << "x" << W);
    Rng rng(11 + W);
    const int64_t rows = batch * T;
    const double eps = 1e-5;
    Vec x = randn(rng, rows * W), w = randn(rng, W, 0.5, 1.0), wy = randn(rng, rows * W);
    auto loss = [&] { return dot(wy, ref::rmsnorm(x, w, rows, W, eps)); };
    const Shape s{batch, T, W};
    Tensor xt = make_strided(s, x);
    Tensor dx = make_strided(s, Vec(size_t(rows * W), 0.0), 4);
    Tensor dw = Tensor::zeros({W});
    ops::rmsnorm_backward(xt, make({W}, w), float(eps), make(s, wy), dx, &dw);
    EXPECT_GRAD_NEAR(to_vec(dx), central_diff(x, loss), 1e-4, "x");
    EXPECT_GRAD_NEAR(to_vec(dw), central_diff(w, loss), 1e-4, "w");
    const Vec once = to_vec(dx);
    ops::rmsnorm_backward(xt, make({W}, w), float(eps), make(s, wy), dx, nullptr, /*accumulate_dx=*/true);
    EXPECT_GRAD_NEAR(
        to_vec(dx),
        [&] {
          Vec v = once;
          for (double& e : v) e *= 2;
          return v;
        }(),
        1e-6, "x twice");
  }
}

struct GatedCase {
  int64_t rows, width, group;
  bool before, gate;
};

class BackwardGatedRmsnorm : public ::testing::TestWithParam<GatedCase> {};

TEST_P(BackwardGatedRmsnorm, MatchesFiniteDifferences) {
  const GatedCase c = GetParam();
  Rng rng(100 + c.width + c.group + c.before);
  const double eps = 1e-5;
  Vec x = randn(rng, c.rows * c.width), z = c.gate ? randn(rng, c.rows * c.width) : Vec{},
      w = randn(rng, c.width, 0.5, 1.0), wy = randn(rng, c.rows * c.width);
  auto loss = [&] { return dot(wy, ref::gated_rmsnorm(x, z, w, c.rows, c.width, c.group, c.before, eps)); };
  const Shape s{c.rows, c.width};
  Tensor dx = Tensor::empty(s), dz = Tensor::empty(s), dw = Tensor::zeros({c.width});
  ops::gated_rmsnorm_backward(make_strided(s, x), c.gate ? make_strided(s, z, 2) : Tensor(), make({c.width}, w),
                              c.group, c.before, float(eps), make(s, wy), dx, c.gate ? &dz : nullptr, &dw);
  EXPECT_GRAD_NEAR(to_vec(dx), central_diff(x, loss), 1e-4, "x");
  if (c.gate) EXPECT_GRAD_NEAR(to_vec(dz), central_diff(z, loss), 1e-4, "z");
  EXPECT_GRAD_NEAR(to_vec(dw), central_diff(w, loss), 1e-4, "w");
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardGatedRmsnorm,
                         ::testing::Values(GatedCase{5, 8, 8, false, true}, GatedCase{5, 8, 8, true, true},
                                           GatedCase{7, 12, 4, false, true}, GatedCase{7, 12, 3, true, true},
                                           GatedCase{3, 10, 5, false, false}, GatedCase{1, 2, 2, false, true}),
                         ssm::testing::CaseIndexName());

TEST(BackwardActivations, SiluAndSoftplus) {
  Rng rng(9);
  const int64_t n = 40;
  Vec x = randn(rng, n, 3.0), wy = randn(rng, n);
  x[0] = 25.0;  // above softplus' threshold
  x[1] = -30.0;
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  auto softplus = [](double v) { return v > 20 ? v : std::log1p(std::exp(v)); };
  auto loss_with = [&](auto f) {
    return [&x, &wy, f] {
      double s = 0;
      for (size_t i = 0; i < x.size(); ++i) s += wy[i] * f(x[i]);
      return s;
    };
  };
  Tensor dx = Tensor::empty({4, 10});
  ops::silu_backward(make({4, 10}, x), make({4, 10}, wy), dx);
  EXPECT_GRAD_NEAR(to_vec(dx), central_diff(x, loss_with(silu)), 1e-5, "silu");
  ops::softplus_backward(make({4, 10}, x), make({4, 10}, wy), dx);
  EXPECT_GRAD_NEAR(to_vec(dx), central_diff(x, loss_with(softplus)), 1e-5, "softplus");
}

}  // namespace
}  // namespace ssm
