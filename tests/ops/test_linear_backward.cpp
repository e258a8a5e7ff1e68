// linear_backward and embedding_backward against central differences of the double references.
#include <gtest/gtest.h>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/linear.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct LinearCase {
  int64_t batch, T, N, K;
  bool bias, strided;
};

class BackwardLinear : public ::testing::TestWithParam<LinearCase> {};

TEST_P(BackwardLinear, MatchesFiniteDifferences) {
  const LinearCase c = GetParam();
  Rng rng(7 + c.N * 3 + c.K);
  const int64_t M = c.batch * c.T;
  Vec x = randn(rng, M * c.K), w = randn(rng, c.N * c.K, 0.5), b = c.bias ? randn(rng, c.N) : Vec{};
  const Vec wy = randn(rng, M * c.N);
  auto loss = [&] { return dot(wy, ref::linear(x, w, b, M, c.N, c.K)); };

  const Shape xs{c.batch, c.T, c.K};
  Tensor xt = c.strided ? make_strided(xs, x) : make(xs, x);
  Tensor wt = make({c.N, c.K}, w);
  Tensor dy = c.strided ? make_strided({c.batch, c.T, c.N}, wy, 5) : make({c.batch, c.T, c.N}, wy);
  Tensor dx = c.strided ? make_strided(xs, Vec(size_t(M * c.K), 0.0), 2) : Tensor::empty(xs);
  Tensor dw = Tensor::zeros({c.N, c.K}), db = Tensor::zeros({c.N});
  ops::linear_backward(xt, wt, dy, &dx, &dw, c.bias ? &db : nullptr);

  EXPECT_GRAD_NEAR(to_vec(dx), central_diff(x, loss), 1e-4, "x");
  EXPECT_GRAD_NEAR(to_vec(dw), central_diff(w, loss), 1e-4, "w");
  if (c.bias) EXPECT_GRAD_NEAR(to_vec(db), central_diff(b, loss), 1e-4, "bias");

  // Parameter gradients accumulate; dx accumulates when asked.
  const Vec dx1 = to_vec(dx), dw1 = to_vec(dw);
  ops::linear_backward(xt, wt, dy, &dx, &dw, nullptr, /*accumulate_dx=*/true);
  const Vec dx2 = to_vec(dx), dw2 = to_vec(dw);
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_NEAR(dx2[i], 2 * dx1[i], 1e-5 * (1 + std::abs(dx1[i])));
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_NEAR(dw2[i], 2 * dw1[i], 1e-5 * (1 + std::abs(dw1[i])));
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardLinear,
                         ::testing::Values(LinearCase{1, 1, 1, 1, true, false}, LinearCase{2, 7, 5, 3, true, true},
                                           LinearCase{3, 5, 17, 9, false, false},
                                           LinearCase{2, 13, 8, 33, true, true}),
                         ssm::testing::CaseIndexName());

TEST(BackwardLinear, SixteenBitWeightGivesDx) {
  for (DType dtype : {DType::BF16, DType::F16}) {
    Rng rng(3);
    const int64_t M = 6, N = 5, K = 37;  // K: two 16-lane vectors and a tail
    Vec x = randn(rng, M * K), w = randn(rng, N * K), wy = randn(rng, M * N);
    Tensor wt = make({N, K}, w).to(dtype);
    const Vec wr = to_vec(wt.to(DType::F32));  // the rounded weights
    Tensor dx = Tensor::empty({M, K});
    ops::linear_backward(make({M, K}, x), wt, make({M, N}, wy), &dx, nullptr, nullptr);
    Vec want(size_t(M * K), 0.0);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) want[size_t(m * K + k)] += wy[size_t(m * N + n)] * wr[size_t(n * K + k)];
    EXPECT_GRAD_NEAR(to_vec(dx), want, 1e-5, std::string("x (") + std::string(dtype_name(dtype)) + " w)");
  }
}

TEST(BackwardEmbedding, ScatterAddsRepeatedIds) {
  Rng rng(5);
  const int64_t V = 11, D = 6;
  const std::vector<int32_t> ids{3, 0, 3, 10, 7, 3, 0};
  const int64_t M = int64_t(ids.size());
  Tensor idt = Tensor::empty({1, M}, DType::I32);
  std::copy(ids.begin(), ids.end(), idt.data<int32_t>());
  const Vec dout = randn(rng, M * D);
  Tensor dtable = Tensor::zeros({V, D});
  dtable.data<float>()[0] = 1.0f;  // accumulates on top of what is there
  ops::embedding_backward(idt, make_strided({1, M, D}, dout), dtable);
  Vec want(size_t(V * D), 0.0);
  want[0] = 1.0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t d = 0; d < D; ++d) want[size_t(ids[size_t(i)] * D + d)] += dout[size_t(i * D + d)];
  EXPECT_GRAD_NEAR(to_vec(dtable), want, 1e-6, "table");

  idt.data<int32_t>()[2] = int32_t(V);
  EXPECT_THROW(ops::embedding_backward(idt, make({1, M, D}, dout), dtable), Error);
}

}  // namespace
}  // namespace ssm
