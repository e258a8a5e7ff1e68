// activation_backward and gated_activation_backward against central differences of the double
// references in ops/ref/activation.h.
#include <gtest/gtest.h>

#include "core/random.h"
#include "ops/ops_backward.h"
#include "ops/ref/activation.h"
#include "ops/test_backward_util.h"
#include "ops/test_threads.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;
using ops::Activation;

constexpr Activation kAll[] = {Activation::Silu, Activation::Gelu, Activation::GeluTanh, Activation::Relu2,
                               Activation::Sigmoid};

Vec scaled(Vec v, double factor) {
  for (double& e : v) e *= factor;
  return v;
}

TEST(BackwardActivation, MatchesFiniteDifferences) {
  for (Activation act : kAll) {
    SCOPED_TRACE(ops::activation_name(act));
    Rng rng(31);
    const int64_t rows = 7, width = 13;
    const Shape s{rows, width};
    Vec x = randn(rng, rows * width, 2.0), wy = randn(rng, rows * width);
    auto loss = [&] { return dot(wy, ref::activation(act, x)); };
    const Vec want = central_diff(x, loss);
    const Tensor xt = make_strided(s, x, 2);
    Tensor dx = make_strided(s, Vec(size_t(rows * width), 0.0), 5);
    ops::activation_backward(act, xt, make(s, wy), dx);
    EXPECT_GRAD_NEAR(to_vec(dx), want, 1e-5, "x");
    ops::activation_backward(act, xt, make(s, wy), dx, /*accumulate_dx=*/true);
    EXPECT_GRAD_NEAR(to_vec(dx), scaled(want, 2.0), 1e-5, "x accumulated");
    Tensor dy_in_place = make(s, wy);  // dx written over dy
    ops::activation_backward(act, xt, dy_in_place, dy_in_place);
    EXPECT_GRAD_NEAR(to_vec(dy_in_place), want, 1e-5, "x in place");
  }
}

struct GatedCase {
  Activation act;
  double gate_scale;
};

class BackwardGatedActivation : public ::testing::TestWithParam<GatedCase> {};

TEST_P(BackwardGatedActivation, MatchesFiniteDifferences) {
  const GatedCase c = GetParam();
  Rng rng(40 + int(c.act));
  const int64_t rows = 5, width = 11;
  const Shape s{rows, width};
  Vec gate = randn(rng, rows * width, 1.5), up = randn(rng, rows * width), wy = randn(rng, rows * width);
  auto loss = [&] { return dot(wy, ref::gated_activation(c.act, gate, up, c.gate_scale)); };
  const Vec want_gate = central_diff(gate, loss), want_up = central_diff(up, loss);
  const float scale = float(c.gate_scale);

  // gate and up: the halves of one projection output; dgate and dup: the halves of its gradient.
  Tensor projection = make({rows, 2 * width}, Vec(size_t(rows * 2 * width), 0.0));
  Tensor gate_t = projection.slice(1, 0, width), up_t = projection.slice(1, width, width);
  fill(gate_t, gate);
  fill(up_t, up);
  Tensor dprojection = Tensor::empty({rows, 2 * width});
  Tensor dgate = dprojection.slice(1, 0, width), dup = dprojection.slice(1, width, width);
  const Tensor dy = make(s, wy);
  ops::gated_activation_backward(c.act, gate_t, up_t, scale, dy, &dgate, &dup);
  EXPECT_GRAD_NEAR(to_vec(dgate), want_gate, 1e-5, "gate");
  EXPECT_GRAD_NEAR(to_vec(dup), want_up, 1e-5, "up");

  ops::gated_activation_backward(c.act, gate_t, up_t, scale, dy, &dgate, nullptr, /*accumulate=*/true);
  EXPECT_GRAD_NEAR(to_vec(dgate), scaled(want_gate, 2.0), 1e-5, "gate accumulated");
  EXPECT_GRAD_NEAR(to_vec(dup), want_up, 1e-5, "up untouched");
  ops::gated_activation_backward(c.act, gate_t, up_t, scale, dy, nullptr, &dup, /*accumulate=*/true);
  EXPECT_GRAD_NEAR(to_vec(dup), scaled(want_up, 2.0), 1e-5, "up accumulated");

  // In place over the saved projection output: dgate over gate, dup over up.
  ops::gated_activation_backward(c.act, gate_t, up_t, scale, dy, &gate_t, &up_t);
  EXPECT_GRAD_NEAR(to_vec(gate_t), want_gate, 1e-5, "gate in place");
  EXPECT_GRAD_NEAR(to_vec(up_t), want_up, 1e-5, "up in place");
}

INSTANTIATE_TEST_SUITE_P(Activations, BackwardGatedActivation,
                         ::testing::Values(GatedCase{Activation::Silu, 1.0}, GatedCase{Activation::Silu, 0.6},
                                           GatedCase{Activation::Gelu, 1.0}, GatedCase{Activation::Gelu, 1.7},
                                           GatedCase{Activation::GeluTanh, 1.0}, GatedCase{Activation::GeluTanh, 0.6},
                                           GatedCase{Activation::Relu2, 1.0}, GatedCase{Activation::Relu2, 0.6},
                                           GatedCase{Activation::Sigmoid, 1.0}, GatedCase{Activation::Sigmoid, 0.6}),
                         ssm::testing::CaseIndexName());

// The rows spread over threads give what one thread gives.
TEST(BackwardActivation, ThreadCountDoesNotChangeResults) {
  Rng rng(50);
  const Shape s{301, 131};
  const int64_t n = 301 * 131;
  const Tensor gate = make_strided(s, randn(rng, n, 2.0)), up = make(s, randn(rng, n)), dy = make(s, randn(rng, n));
  for (Activation act : kAll) {
    SCOPED_TRACE(ops::activation_name(act));
    Vec dx[2], dgate[2], dup[2];
    for (int threads : {1, 3}) {
      const test::ScopedThreads scoped(threads);
      Tensor dx_t = Tensor::empty(s), dgate_t = Tensor::empty(s), dup_t = Tensor::empty(s);
      ops::activation_backward(act, gate, dy, dx_t);
      ops::gated_activation_backward(act, gate, up, 0.8f, dy, &dgate_t, &dup_t);
      dx[threads > 1] = to_vec(dx_t);
      dgate[threads > 1] = to_vec(dgate_t);
      dup[threads > 1] = to_vec(dup_t);
    }
    EXPECT_EQ(dx[0], dx[1]);
    EXPECT_EQ(dgate[0], dgate[1]);
    EXPECT_EQ(dup[0], dup[1]);
  }
}

TEST(BackwardActivation, RejectsMismatchedShapes) {
  const Tensor x = Tensor::zeros({3, 8});
  Tensor dx = Tensor::empty({3, 8}), dup = Tensor::empty({8, 3});
  test::expect_error(
      [&] {
        ops::activation_backward(Activation::Relu2, x, Tensor::zeros({3, 9}), dx);
      },
      {"activation_backward relu2", "[3, 9]"});
  test::expect_error([&] { ops::gated_activation_backward(Activation::Silu, x, x, 1.0f, x, nullptr, &dup); },
                     {"gated_activation_backward", "dup must be F32 rows [3, 8], got [8, 3]"});
}

}  // namespace
}  // namespace ssm
