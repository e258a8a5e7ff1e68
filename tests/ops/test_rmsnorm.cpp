// ops::rmsnorm and ops::add_rmsnorm against the double-precision reference in ops/ref/rmsnorm.h.
#include <gtest/gtest.h>

#include "ops/ops.h"
#include "ops/ref/rmsnorm.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

TEST(OpsRmsnorm, MatchesReference) {
  Rng rng(11);
  const float eps = 1e-5f;
  for (const Shape& shape : {Shape{1, 768}, Shape{7, 33}, Shape{2, 130, 17}, Shape{5}}) {
    const int64_t width = shape.back(), rows = shape_numel(shape) / width;
    for (int mode = 0; mode < 3; ++mode) {  // 0: contiguous, 1: strided x and y, 2: y aliases x
      const bool strided = mode == 1;
      Tensor x = test::random_tensor(shape, rng, -2, 2, strided);
      const Tensor w = test::random_tensor({width}, rng, 0.5, 1.5);
      const test::Vec want = ref::rmsnorm(test::to_vec(x), test::to_vec(w), rows, width, eps);
      Tensor y = mode == 2 ? x : test::nan_tensor(shape, strided);
      ops::rmsnorm(x, w, eps, y);
      EXPECT_LT(test::max_rel_err(test::to_vec(y), want), 1e-6) << shape_str(shape) << " mode " << mode;
    }
  }
}

// h += s · delta, then the norm of the sum: h holds the sum afterwards.
TEST(OpsRmsnorm, AddRmsnormMatchesAddThenReference) {
  Rng rng(12);
  const float eps = 1e-5f;
  for (const Shape& shape : {Shape{1, 768}, Shape{7, 33}, Shape{2, 130, 17}}) {
    for (const bool strided : {false, true}) {
      const int64_t width = shape.back(), rows = shape_numel(shape) / width;
      Tensor h = test::random_tensor(shape, rng, -2, 2, strided);
      const Tensor delta = test::random_tensor(shape, rng, -2, 2, strided);
      const Tensor w = test::random_tensor({width}, rng, 0.5, 1.5);
      test::Vec sum = test::to_vec(h);
      const test::Vec d = test::to_vec(delta);
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += 0.75 * d[i];
      const test::Vec want = ref::rmsnorm(sum, test::to_vec(w), rows, width, eps);
      Tensor y = test::nan_tensor(shape, strided);
      ops::add_rmsnorm(h, delta, 0.75f, w, eps, y);
      EXPECT_LT(test::max_rel_err(test::to_vec(y), want), 1e-6) << shape_str(shape);
      EXPECT_LT(test::max_rel_err(test::to_vec(h), sum), 1e-6) << shape_str(shape);
    }
  }
  Tensor h = Tensor::zeros({3, 8}), y = Tensor::empty({3, 8});
  test::expect_error([&] { ops::add_rmsnorm(h, Tensor::zeros({3, 7}), 1.0f, Tensor::zeros({8}), eps, y); },
                     {"add_rmsnorm", "delta", "[3, 8]", "[3, 7]"});
}

TEST(OpsRmsnorm, RejectsMismatchedShapes) {
  const Tensor x = Tensor::zeros({3, 8});
  const Tensor w = Tensor::zeros({7});
  Tensor y = Tensor::empty({3, 8});
  test::expect_error([&] { ops::rmsnorm(x, w, 1e-5f, y); }, {"rmsnorm", "[3, 8]", "[7]"});
  const Tensor w_ok = Tensor::zeros({8});
  Tensor y_bad = Tensor::empty({8, 3});
  test::expect_error([&] { ops::rmsnorm(x, w_ok, 1e-5f, y_bad); }, {"rmsnorm", "[3, 8]", "[8, 3]"});
}

}  // namespace
}  // namespace ssm
