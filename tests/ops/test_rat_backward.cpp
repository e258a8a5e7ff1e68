// rat_backward against central finite differences of the double reference ref::rat.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/rat.h"
#include "ops/test_backward_util.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct RatCase {
  int64_t batch, T, H, G, dh, L;
};

struct RatProblem {
  RatCase c;
  ref::RatDims dims;
  ref::RatRefInputs in;
  Vec wy;
  RatProblem(const RatCase& cs, uint64_t seed) : c(cs) {
    Rng rng(seed);
    dims = {c.batch, c.T, c.H, c.G, c.dh, c.L};
    const int64_t W = c.H * c.dh, QW = c.G * c.dh, rows = c.batch * c.T;
    in.q = randn(rng, rows * QW);
    in.k = randn(rng, rows * QW);
    in.v = randn(rng, rows * W);
    in.g = randn(rng, rows * W);
    in.gate_bias = randn(rng, W, 0.5, 1.0);
    wy = randn(rng, rows * W);
  }
  double loss() const { return dot(wy, ref::rat(dims, in)); }
  ops::RatInputs tensors() const {
    const int64_t W = c.H * c.dh, QW = c.G * c.dh;
    ops::RatInputs t;
    t.q = make_strided({c.batch, c.T, QW}, in.q, 2);
    t.k = make({c.batch, c.T, QW}, in.k);
    t.v = make_strided({c.batch, c.T, W}, in.v, 3);
    t.g = make_strided({c.batch, c.T, W}, in.g, 1);
    t.gate_bias = make({W}, in.gate_bias);
    t.n_heads = c.H;
    t.n_groups = c.G;
    t.chunk_size = c.L;
    return t;
  }
};

struct RatGradVecs {
  Vec dq, dk, dv, dg, dbias;
};

constexpr double kBiasStart = 0.25;  // dgate_bias starts here: the op must add to it

RatGradVecs run_backward(const RatProblem& p) {
  const RatCase& c = p.c;
  const int64_t W = c.H * c.dh, QW = c.G * c.dh, rows = c.batch * c.T;
  const double nan = std::numeric_limits<double>::quiet_NaN();  // every written gradient must be written
  ops::RatGrads g;
  g.dq = make_strided({c.batch, c.T, QW}, Vec(size_t(rows * QW), nan), 2);
  g.dk = make({c.batch, c.T, QW}, Vec(size_t(rows * QW), nan));
  g.dv = make_strided({c.batch, c.T, W}, Vec(size_t(rows * W), nan), 1);
  g.dg = make({c.batch, c.T, W}, Vec(size_t(rows * W), nan));
  g.dgate_bias = make({W}, Vec(size_t(W), kBiasStart));
  ops::rat_backward(p.tensors(), make_strided({c.batch, c.T, W}, p.wy, 4), g);
  RatGradVecs r{to_vec(g.dq), to_vec(g.dk), to_vec(g.dv), to_vec(g.dg), to_vec(g.dgate_bias)};
  for (double& e : r.dbias) e -= kBiasStart;
  return r;
}

class BackwardRat : public ::testing::TestWithParam<RatCase> {};

TEST_P(BackwardRat, MatchesFiniteDifferences) {
  const RatCase c = GetParam();
  RatProblem p(c, 700 + uint64_t(c.T * 5 + c.L));
  const RatGradVecs g = run_backward(p);
  auto loss = [&] { return p.loss(); };
  const double tol = 1e-4;
  if (c.T > c.L) {
    EXPECT_GRAD_NEAR(g.dq, central_diff(p.in.q, loss), tol, "q");
    EXPECT_GRAD_NEAR(g.dk, central_diff(p.in.k, loss), tol, "k");
  } else {  // one chunk: y = ṽ does not depend on q or k at all
    EXPECT_EQ(g.dq, Vec(g.dq.size(), 0.0));
    EXPECT_EQ(g.dk, Vec(g.dk.size(), 0.0));
  }
  EXPECT_GRAD_NEAR(g.dv, central_diff(p.in.v, loss), tol, "v");
  EXPECT_GRAD_NEAR(g.dg, central_diff(p.in.g, loss), tol, "g");
  EXPECT_GRAD_NEAR(g.dbias, central_diff(p.in.gate_bias, loss), tol, "gate_bias");
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardRat,
                         ::testing::Values(RatCase{2, 11, 4, 2, 4, 4},   // partial last chunk, two groups
                                           RatCase{1, 12, 2, 1, 6, 3},   // whole chunks only
                                           RatCase{2, 7, 2, 2, 4, 1},    // L = 1: attention over every token
                                           RatCase{2, 5, 2, 1, 4, 16},   // one partial chunk: a gated RNN
                                           RatCase{1, 75, 2, 1, 2, 2}),  // several blocks of chunk ends
                         ssm::testing::CaseIndexName());

TEST(BackwardRatErrors, BadShapes) {
  const RatCase c{2, 6, 4, 2, 4, 4};
  RatProblem p(c, 1);
  const ops::RatInputs in = p.tensors();
  const Tensor dy = Tensor::zeros({c.batch, c.T, c.H * c.dh});
  ops::RatGrads g;
  g.dq = Tensor::zeros({c.batch, c.T, c.H * c.dh});  // the heads' width where the groups' is expected
  test::expect_error([&] { ops::rat_backward(in, dy, g); }, {"rat_backward: dq must be F32 rows [2, 6, 8]"});
  ops::RatGrads none;
  test::expect_error(
      [&] {
        ops::rat_backward(in, Tensor::zeros({c.batch, c.T + 1, c.H * c.dh}), none);
      },
      {"rat_backward: dy must be F32 rows of v's shape [2, 6, 16]"});
  ops::RatInputs bad_groups = in;
  bad_groups.n_groups = 3;
  test::expect_error([&] { ops::rat_backward(bad_groups, dy, none); },
                     {"rat_backward: n_groups 3 does not divide n_heads 4"});
}

}  // namespace
}  // namespace ssm
