// mlstm_backward, soft_cap_backward and group_layernorm_backward against central finite
// differences of the double references.
#include <gtest/gtest.h>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/mlstm.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct MlstmCase {
  int64_t batch, T, H, dk, dv, chunk;
  double i_offset;
};

class BackwardMlstm : public ::testing::TestWithParam<MlstmCase> {};

TEST_P(BackwardMlstm, MatchesFiniteDifferences) {
  const MlstmCase c = GetParam();
  Rng rng(uint64_t(c.T * 31 + c.chunk));
  const int64_t rows = c.batch * c.T;
  ref::MlstmRefInputs in;
  in.q = randn(rng, rows * c.H * c.dk);
  in.k = randn(rng, rows * c.H * c.dk);
  in.v = randn(rng, rows * c.H * c.dv);
  in.i = randn(rng, rows * c.H, 2.0, c.i_offset);
  in.f = randn(rng, rows * c.H, 2.0, 1.0);
  const Vec wy = randn(rng, rows * c.H * c.dv);
  const ref::MlstmDims dims{c.batch, c.T, c.H, c.dk, c.dv};
  const auto loss = [&] { return dot(wy, ref::mlstm(dims, in)); };

  ops::MlstmInputs t;
  t.q = make_strided({c.batch, c.T, c.H * c.dk}, in.q, 2);
  t.k = make({c.batch, c.T, c.H * c.dk}, in.k);
  t.v = make_strided({c.batch, c.T, c.H * c.dv}, in.v, 1);
  t.i = make_strided({c.batch, c.T, c.H}, in.i, 3);
  t.f = make({c.batch, c.T, c.H}, in.f);
  t.n_heads = c.H;
  t.chunk_size = c.chunk;
  ops::MlstmGrads g;
  g.dq = Tensor::empty(t.q.shape());
  g.dk = make_strided(t.k.shape(), Vec(size_t(t.k.numel()), 0.0), 4);
  g.dv = Tensor::empty(t.v.shape());
  g.di = Tensor::empty(t.i.shape());
  g.df = Tensor::empty(t.f.shape());
  ops::mlstm_backward(t, make({c.batch, c.T, c.H * c.dv}, wy), g);

  constexpr double kTol = 2e-3;
  EXPECT_GRAD_NEAR(to_vec(g.dq), central_diff(in.q, loss), kTol, "q");
  EXPECT_GRAD_NEAR(to_vec(g.dk), central_diff(in.k, loss), kTol, "k");
  EXPECT_GRAD_NEAR(to_vec(g.dv), central_diff(in.v, loss), kTol, "v");
  EXPECT_GRAD_NEAR(to_vec(g.di), central_diff(in.i, loss), kTol, "i");
  EXPECT_GRAD_NEAR(to_vec(g.df), central_diff(in.f, loss), kTol, "f");
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardMlstm,
                         ::testing::Values(MlstmCase{2, 11, 2, 4, 3, 4, 0.0}, MlstmCase{1, 9, 3, 2, 5, 16, 0.0},
                                           MlstmCase{2, 7, 1, 3, 4, 1, -6.0}, MlstmCase{1, 13, 2, 4, 4, 5, -6.0}),
                         CaseIndexName());

TEST(BackwardSoftCapAndGroupLayernorm, MatchFiniteDifferences) {
  Rng rng(3);
  const int64_t rows = 5, width = 6, group = 3;
  Vec x = randn(rng, rows * width, 10.0), w = randn(rng, width, 0.3, 1.0), b = randn(rng, width);
  const Vec wy = randn(rng, rows * width);
  Tensor dx = Tensor::empty({rows, width});
  ops::soft_cap_backward(make({rows, width}, x), 15.0f, make({rows, width}, wy), dx);
  EXPECT_GRAD_NEAR(to_vec(dx), central_diff(x, [&] { return dot(wy, ref::soft_cap(x, 15.0)); }), 1e-4, "soft cap x");

  const auto loss = [&] { return dot(wy, ref::group_layernorm(x, w, b, rows, width, group, 1e-5)); };
  Tensor dw = make({width}, Vec(size_t(width), 0.5)), db = make({width}, Vec(size_t(width), -0.25));
  ops::group_layernorm_backward(make_strided({rows, width}, x), make({width}, w), group, 1e-5f,
                                make({rows, width}, wy), dx, &dw, &db);
  EXPECT_GRAD_NEAR(to_vec(dx), central_diff(x, loss), 1e-3, "layernorm x");
  Vec want_dw = central_diff(w, loss), want_db = central_diff(b, loss);
  for (double& v : want_dw) v += 0.5;  // accumulated onto the starting values
  for (double& v : want_db) v -= 0.25;
  EXPECT_GRAD_NEAR(to_vec(dw), want_dw, 1e-3, "layernorm w");
  EXPECT_GRAD_NEAR(to_vec(db), want_db, 1e-3, "layernorm b");
}

}  // namespace
}  // namespace ssm
