// The fused head + cross-entropy: loss against ref::cross_entropy, gradients against its central
// differences, and vocabulary chunking / row blocking that do not change the result.
#include <gtest/gtest.h>

#include <cmath>

#include "core/random.h"
#include "ops/ops_backward.h"
#include "ops/ref/cross_entropy.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct CeResult {
  double loss;
  Vec dh, dw;
  int64_t counted;
};

CeResult run(const Vec& h, const Vec& w, const std::vector<int32_t>& t, int64_t M, int64_t D, int64_t V,
             ops::CrossEntropyOptions opt) {
  Tensor tt = Tensor::empty({M}, DType::I32);
  std::copy(t.begin(), t.end(), tt.data<int32_t>());
  Tensor dh = make_strided({M, D}, Vec(size_t(M * D), 9.0), 2);
  Tensor dw = Tensor::zeros({V, D});
  CeResult r;
  r.loss = ops::cross_entropy(make_strided({M, D}, h, 3), make({V, D}, w), tt, &dh, &dw, opt, &r.counted);
  r.dh = to_vec(dh);
  r.dw = to_vec(dw);
  return r;
}

TEST(BackwardCrossEntropy, MatchesReferenceAndFiniteDifferences) {
  for (auto [M, D, V] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 2}, {7, 5, 11}, {13, 8, 37}}) {
    SCOPED_TRACE(::testing::Message() << M << "x" << D << " V " << V);
    Rng rng(40 + V);
    Vec h = randn(rng, M * D), w = randn(rng, V * D, 0.7);
    std::vector<int32_t> t(static_cast<size_t>(M));
    for (auto& v : t) v = int32_t(rng.below(uint64_t(V)));
    if (M > 3) t[2] = -1;  // ignored row
    auto loss = [&] { return ref::cross_entropy(h, w, t, M, D, V); };
    for (int64_t chunk : {int64_t(1), int64_t(4), V}) {
      for (int64_t block : {int64_t(1), int64_t(3), M}) {
        SCOPED_TRACE(::testing::Message() << "vocab chunk " << chunk << " row block " << block);
        const CeResult r = run(h, w, t, M, D, V, {chunk, block, 1.0f});
        EXPECT_NEAR(r.loss, loss(), 1e-5 * (1 + loss()));
        EXPECT_EQ(r.counted, M > 3 ? M - 1 : M);
        EXPECT_GRAD_NEAR(r.dh, central_diff(h, loss), 1e-4, "hidden");
        EXPECT_GRAD_NEAR(r.dw, central_diff(w, loss), 1e-4, "weight");
      }
    }
  }
}

// With a logit soft cap (small, so that tanh bends): loss and gradients of the capped logits' loss, chunked or not.
TEST(BackwardCrossEntropy, SoftCapMatchesReferenceAndFiniteDifferences) {
  const int64_t M = 7, D = 5, V = 11;
  Rng rng(77);
  Vec h = randn(rng, M * D, 1.5), w = randn(rng, V * D, 1.5);
  std::vector<int32_t> t(static_cast<size_t>(M));
  for (auto& v : t) v = int32_t(rng.below(uint64_t(V)));
  t[3] = -1;
  const double cap = 2.0;
  auto loss = [&] { return ref::cross_entropy(h, w, t, M, D, V, cap); };
  ASSERT_GT(std::fabs(loss() - ref::cross_entropy(h, w, t, M, D, V)), 0.05);  // the cap matters here
  for (int64_t chunk : {int64_t(4), V}) {
    SCOPED_TRACE(::testing::Message() << "vocab chunk " << chunk);
    ops::CrossEntropyOptions options{chunk, 3, 1.0f};
    options.logit_soft_cap = float(cap);
    const CeResult r = run(h, w, t, M, D, V, options);
    EXPECT_NEAR(r.loss, loss(), 1e-5 * (1 + loss()));
    EXPECT_GRAD_NEAR(r.dh, central_diff(h, loss), 1e-4, "hidden");
    EXPECT_GRAD_NEAR(r.dw, central_diff(w, loss), 1e-4, "weight");
  }
}

TEST(BackwardCrossEntropy, GradScaleAndErrors) {
  Rng rng(2);
  const int64_t M = 4, D = 3, V = 5;
  const Vec h = randn(rng, M * D), w = randn(rng, V * D);
  const std::vector<int32_t> t{0, 4, 2, 1};
  const CeResult one = run(h, w, t, M, D, V, {});
  const CeResult half = run(h, w, t, M, D, V, {8192, 512, 0.5f});
  EXPECT_DOUBLE_EQ(one.loss, half.loss);
  for (size_t i = 0; i < one.dh.size(); ++i) EXPECT_NEAR(half.dh[i], 0.5 * one.dh[i], 1e-7);
  // A uniform predictor's loss is log V.
  const CeResult zero = run(Vec(size_t(M * D), 0.0), w, t, M, D, V, {});
  EXPECT_NEAR(zero.loss, std::log(double(V)), 1e-6);
  Tensor tt = Tensor::empty({M}, DType::I32);
  std::copy(t.begin(), t.end(), tt.data<int32_t>());
  tt.data<int32_t>()[1] = int32_t(V);
  EXPECT_THROW(ops::cross_entropy(make({M, D}, h), make({V, D}, w), tt, nullptr, nullptr), Error);
  // No row counts: loss 0, no gradient.
  std::fill(tt.data<int32_t>(), tt.data<int32_t>() + M, -1);
  Tensor dh = Tensor::empty({M, D});
  EXPECT_EQ(ops::cross_entropy(make({M, D}, h), make({V, D}, w), tt, &dh, nullptr), 0.0);
  for (double v : to_vec(dh)) EXPECT_EQ(v, 0.0);
}

}  // namespace
}  // namespace ssm
