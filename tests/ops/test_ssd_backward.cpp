// ssd_backward (chunked) against central differences of ref::ssd, and chunk-size independence.
#include <gtest/gtest.h>

#include <limits>

#include "core/error.h"
#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/ssd.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct SsdCase {
  int64_t batch, T, H, P, G, N, chunk;
  bool skip, state, dfinal;
  double dt_max = std::numeric_limits<double>::infinity();
};

struct SsdProblem {
  SsdCase c;
  ref::SsdDims dims;
  ref::SsdRefInputs in;
  Vec wy, wfinal;
  SsdProblem(const SsdCase& cs, uint64_t seed) : c(cs) {
    Rng rng(seed);
    dims = {c.batch, c.T, c.H, c.P, c.G, c.N};
    const int64_t btx = c.batch * c.T * c.H * c.P, btn = c.batch * c.T * c.G * c.N;
    in.x = randn(rng, btx);
    in.dt = randn(rng, c.batch * c.T * c.H, 0.7);
    in.dt_bias = randn(rng, c.H, 0.3, -2.0);
    in.A = randu(rng, c.H, -2.0, -0.2);
    in.B = randn(rng, btn);
    in.C = randn(rng, btn);
    if (c.skip) in.D = randn(rng, c.H);
    if (c.state) in.state0 = randn(rng, c.batch * c.H * c.P * c.N);
    in.dt_max = c.dt_max;
    wy = randn(rng, btx);
    if (c.dfinal) wfinal = randn(rng, c.batch * c.H * c.P * c.N);
  }
  double loss() const {
    const ref::SsdRefOutputs out = ref::ssd(dims, in);
    return dot(wy, out.y) + (c.dfinal ? dot(wfinal, out.state) : 0.0);
  }
  ops::SsdInputs tensors(int64_t chunk) const {
    const int64_t HP = c.H * c.P, GN = c.G * c.N;
    ops::SsdInputs t;
    t.x = make_strided({c.batch, c.T, HP}, in.x, 2);
    t.dt = make_strided({c.batch, c.T, c.H}, in.dt, 1);
    t.dt_bias = make({c.H}, in.dt_bias);
    t.A = make({c.H}, in.A);
    t.B = make_strided({c.batch, c.T, GN}, in.B, 3);
    t.C = make({c.batch, c.T, GN}, in.C);
    if (c.skip) t.D = make({c.H}, in.D);
    t.n_groups = c.G;
    t.dt_max = float(c.dt_max);
    t.chunk_size = chunk;
    return t;
  }
};

struct SsdGradVecs {
  Vec dx, ddt, dA, dB, dC, dD, dbias, ds0;
};

SsdGradVecs run_backward(const SsdProblem& p, int64_t chunk) {
  const SsdCase& c = p.c;
  const int64_t HP = c.H * c.P, GN = c.G * c.N;
  const Shape ss{c.batch, c.H, c.P, c.N};
  ops::SsdGrads g;
  g.dx = make_strided({c.batch, c.T, HP}, Vec(size_t(c.batch * c.T * HP), 3.0), 2);
  g.ddt = Tensor::empty({c.batch, c.T, c.H});
  g.dA = Tensor::zeros({c.H});
  g.dB = make_strided({c.batch, c.T, GN}, Vec(size_t(c.batch * c.T * GN), 3.0), 1);
  g.dC = Tensor::empty({c.batch, c.T, GN});
  if (c.skip) g.dD = Tensor::zeros({c.H});
  g.ddt_bias = Tensor::zeros({c.H});
  if (c.state) g.dstate0 = Tensor::empty(ss);
  ops::ssd_backward(p.tensors(chunk), c.state ? make(ss, p.in.state0) : Tensor(), make({c.batch, c.T, HP}, p.wy), g,
                    c.dfinal ? make(ss, p.wfinal) : Tensor());
  SsdGradVecs r;
  r.dx = to_vec(g.dx);
  r.ddt = to_vec(g.ddt);
  r.dA = to_vec(g.dA);
  r.dB = to_vec(g.dB);
  r.dC = to_vec(g.dC);
  if (c.skip) r.dD = to_vec(g.dD);
  r.dbias = to_vec(g.ddt_bias);
  if (c.state) r.ds0 = to_vec(g.dstate0);
  return r;
}

class BackwardSsd : public ::testing::TestWithParam<SsdCase> {};

TEST_P(BackwardSsd, MatchesFiniteDifferences) {
  const SsdCase c = GetParam();
  SsdProblem p(c, 500 + c.T * 3 + c.H);
  const SsdGradVecs g = run_backward(p, c.chunk);
  auto loss = [&] { return p.loss(); };
  const double tol = 1e-4;
  EXPECT_GRAD_NEAR(g.dx, central_diff(p.in.x, loss), tol, "x");
  EXPECT_GRAD_NEAR(g.ddt, central_diff(p.in.dt, loss), tol, "dt");
  EXPECT_GRAD_NEAR(g.dA, central_diff(p.in.A, loss), tol, "A");
  EXPECT_GRAD_NEAR(g.dB, central_diff(p.in.B, loss), tol, "B");
  EXPECT_GRAD_NEAR(g.dC, central_diff(p.in.C, loss), tol, "C");
  if (c.skip) EXPECT_GRAD_NEAR(g.dD, central_diff(p.in.D, loss), tol, "D");
  EXPECT_GRAD_NEAR(g.dbias, central_diff(p.in.dt_bias, loss), tol, "dt_bias");
  if (c.state) EXPECT_GRAD_NEAR(g.ds0, central_diff(p.in.state0, loss), tol, "state0");
}

TEST_P(BackwardSsd, ChunkSizesAgree) {
  const SsdCase c = GetParam();
  SsdProblem p(c, 900 + c.T);
  const SsdGradVecs base = run_backward(p, c.T);  // one chunk
  for (int64_t chunk : {int64_t(1), int64_t(4), c.chunk}) {
    SCOPED_TRACE(::testing::Message() << "chunk " << chunk);
    const SsdGradVecs g = run_backward(p, chunk);
    const double tol = 1e-5;
    EXPECT_GRAD_NEAR(g.dx, base.dx, tol, "x");
    EXPECT_GRAD_NEAR(g.ddt, base.ddt, tol, "dt");
    EXPECT_GRAD_NEAR(g.dA, base.dA, tol, "A");
    EXPECT_GRAD_NEAR(g.dB, base.dB, tol, "B");
    EXPECT_GRAD_NEAR(g.dC, base.dC, tol, "C");
    EXPECT_GRAD_NEAR(g.dbias, base.dbias, tol, "dt_bias");
    if (c.state) EXPECT_GRAD_NEAR(g.ds0, base.ds0, tol, "state0");
  }
}

// The CPU's training forward keeps no chunk states (its backward walks them at its own chunk length):
// y is ops::ssd's, and a backward handed states anyway says so.
TEST(BackwardSsdKeptStates, TheCpuKeepsNoneAndTakesNone) {
  const SsdCase c{2, 11, 4, 2, 2, 3, 3, true, false, false};
  SsdProblem p(c, 77);
  const ops::SsdInputs in = p.tensors(c.chunk);
  Tensor y = Tensor::empty({c.batch, c.T, c.H * c.P}), y_plain = Tensor::empty({c.batch, c.T, c.H * c.P});
  EXPECT_FALSE(ops::ssd_forward_saving_chunk_states(in, y).defined());
  ops::ssd(in, nullptr, y_plain);
  EXPECT_EQ(to_vec(y), to_vec(y_plain));
  ops::SsdGrads g;
  g.dx = Tensor::empty({c.batch, c.T, c.H * c.P});
  EXPECT_THROW(ops::ssd_backward(in, Tensor(), make({c.batch, c.T, c.H * c.P}, p.wy), g, Tensor(),
                                 Tensor::zeros({c.batch, c.H, 1, c.P, c.N})),
               Error);
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardSsd,
                         ::testing::Values(SsdCase{2, 13, 4, 3, 1, 5, 4, true, false, false},
                                           SsdCase{2, 11, 4, 2, 2, 3, 3, true, true, true},   // groups, carried state
                                           SsdCase{1, 1, 2, 3, 1, 2, 4, false, true, false},  // one token
                                           SsdCase{3, 9, 6, 4, 3, 4, 9, true, false, true},   // one chunk exactly
                                           SsdCase{2, 10, 3, 2, 1, 3, 4, true, false, false,
                                                   0.12}),
                         ssm::testing::CaseIndexName());  // dt clamped above

}  // namespace
}  // namespace ssm
