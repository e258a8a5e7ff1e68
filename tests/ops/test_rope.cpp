// ops::rope against the double reference in ops/ref/rope.h (positions up to 1e5, partial rotary,
// several thetas, strided rows, one-token form), ops::rope_backward against central differences of
// the reference and as the exact inverse, and one clear error per kind of bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/rope.h"
#include "ops/test_backward_util.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

Tensor positions_tensor(const Shape& shape, const std::vector<int32_t>& values) {
  Tensor t = Tensor::empty(shape, DType::I32);
  std::copy(values.begin(), values.end(), t.data<int32_t>());
  return t;
}

std::vector<int32_t> random_positions(Rng& rng, int64_t n, int32_t max) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int32_t& e : p) e = int32_t(rng.uniform(0.0f, float(max)));
  if (n > 0) p[0] = max;  // the largest position always appears
  return p;
}

struct RopeCase {
  Shape shape;  // [B,T,H*head_dim] or [B,H*head_dim]
  int64_t head_dim, rotary_dim;
  float theta;
  int32_t max_position;
  bool strided;
};

TEST(OpsRope, MatchesReference) {
  const RopeCase cases[] = {
      {{2, 7, 4 * 16}, 16, 16, 10000.0f, 100000, false},   // full rotary, long positions
      {{3, 5, 6 * 64}, 64, 32, 10000.0f, 100000, true},    // partial rotary (factor 0.5), strided
      {{1, 33, 2 * 128}, 128, 128, 1e11f, 100000, false},  // Falcon-H1's large theta
      {{4, 3 * 80}, 80, 40, 500000.0f, 70000, true},       // one token per sequence
      {{2, 9, 1 * 6}, 6, 2, 10000.0f, 50, false},          // a single rotating pair
  };
  Rng rng(21);
  for (const RopeCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << shape_str(c.shape) << " rotary " << c.rotary_dim << " theta " << c.theta);
    const int64_t width = c.shape.back(), rows = shape_numel(c.shape) / width;
    const std::vector<int32_t> pos = random_positions(rng, rows, c.max_position);
    Tensor x = test::random_tensor(c.shape, rng, -2, 2, c.strided);
    const test::Vec want = ref::rope(test::to_vec(x), pos, width, c.head_dim, c.rotary_dim, c.theta);
    const Shape pos_shape(c.shape.begin(), c.shape.end() - 1);
    ops::rope(x, positions_tensor(pos_shape, pos), {c.head_dim, c.rotary_dim, c.theta});
    EXPECT_LT(test::max_rel_err(test::to_vec(x), want), 1e-6);
  }
}

TEST(BackwardRope, MatchesFiniteDifferencesAndInvertsTheForward) {
  Rng rng(8);
  const Shape shape{2, 5, 3 * 12};
  const int64_t rows = 10, width = 36, head_dim = 12, rotary_dim = 8;
  const float theta = 10000.0f;
  const std::vector<int32_t> pos = random_positions(rng, rows, 100000);
  const Tensor positions = positions_tensor({2, 5}, pos);
  testing::Vec x = testing::randn(rng, rows * width), wy = testing::randn(rng, rows * width);
  auto loss = [&] { return testing::dot(wy, ref::rope(x, pos, width, head_dim, rotary_dim, theta)); };
  Tensor dx = testing::make_strided(shape, wy);
  ops::rope_backward(dx, positions, {head_dim, rotary_dim, theta});
  EXPECT_GRAD_NEAR(testing::to_vec(dx), testing::central_diff(x, loss), 1e-6, "x");

  // The backward is the inverse rotation: forward then backward gives x back.
  Tensor y = testing::make(shape, x);
  ops::rope(y, positions, {head_dim, rotary_dim, theta});
  ops::rope_backward(y, positions, {head_dim, rotary_dim, theta});
  EXPECT_LT(test::max_rel_err(test::to_vec(y), x), 1e-6);
}

TEST(OpsRope, RejectsBadInput) {
  Tensor x = Tensor::zeros({2, 3, 32});
  const Tensor pos = Tensor::zeros({2, 3}, DType::I32);
  test::expect_error([&] { ops::rope(x, pos, {12, 12}); }, {"rope", "head_dim 12", "width 32"});
  test::expect_error([&] { ops::rope(x, pos, {16, 7}); }, {"rope", "rotary_dim 7"});
  test::expect_error([&] { ops::rope(x, pos, {16, 18}); }, {"rope", "rotary_dim 18"});
  test::expect_error(
      [&] {
        ops::rope(x, Tensor::zeros({2, 4}, DType::I32), {16, 16});
      },
      {"rope", "positions must be I32 [2, 3]", "[2, 4]"});
  test::expect_error([&] { ops::rope(x, Tensor::zeros({2, 3}), {16, 16}); }, {"rope", "positions", "F32"});
  test::expect_error([&] { ops::rope_backward(x, pos, {16, 16, -1.0f}); }, {"rope_backward", "theta -1"});
}

}  // namespace
}  // namespace ssm
