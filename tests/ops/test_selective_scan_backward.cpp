// selective_scan_backward (chunked recomputation) against central differences of
// ref::selective_scan, and chunk-size independence.
#include <gtest/gtest.h>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/selective_scan.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct ScanCase {
  int64_t batch, T, D, N, chunk;
  bool z, skip, bias, softplus, state;
};

struct ScanProblem {
  ScanCase c;
  ref::SelectiveScanDims dims;
  ref::SelectiveScanRefInputs in;
  Vec wy;
  ScanProblem(const ScanCase& cs, uint64_t seed) : c(cs) {
    Rng rng(seed);
    dims = {c.batch, c.T, c.D, c.N};
    const int64_t btd = c.batch * c.T * c.D, btn = c.batch * c.T * c.N;
    in.u = randn(rng, btd);
    in.delta = randn(rng, btd, 0.5, c.bias ? 0.0 : -2.0);
    if (c.bias) in.delta_bias = randn(rng, c.D, 0.3, -2.0);
    in.delta_softplus = c.softplus;
    if (!c.softplus)  // raw delta is dt itself: keep it positive
      for (double& v : in.delta) v = double(float(0.02 + 0.1 * std::abs(v + 2.0)));
    if (!c.softplus && c.bias)
      for (double& v : in.delta_bias) v = double(float(0.05 + 0.01 * v));
    in.A = randu(rng, c.D * c.N, -3.0, -0.3);
    in.B = randn(rng, btn);
    in.C = randn(rng, btn);
    if (c.skip) in.Dskip = randn(rng, c.D);
    if (c.z) in.z = randn(rng, btd);
    if (c.state) in.state0 = randn(rng, c.batch * c.D * c.N);
    wy = randn(rng, btd);
  }
  double loss() const { return dot(wy, ref::selective_scan(dims, in).y); }

  ops::SelectiveScanInputs tensors() const {
    const Shape btd{c.batch, c.T, c.D}, btn{c.batch, c.T, c.N};
    ops::SelectiveScanInputs t;
    t.u = make_strided(btd, in.u, 2);
    t.delta = make(btd, in.delta);
    if (c.bias) t.delta_bias = make({c.D}, in.delta_bias);
    t.delta_softplus = c.softplus;
    t.A = make({c.D, c.N}, in.A);
    t.B = make_strided(btn, in.B, 3);
    t.C = make_strided(btn, in.C, 1);
    if (c.skip) t.D = make({c.D}, in.Dskip);
    if (c.z) t.z = make_strided(btd, in.z, 4);
    return t;
  }
};

struct ScanGradVecs {
  Vec du, ddelta, dA, dB, dC, dD, dz, dbias, ds0;
};

ScanGradVecs run_backward(const ScanProblem& p, int64_t chunk, bool saved) {
  const ScanCase& c = p.c;
  const ops::SelectiveScanInputs in = p.tensors();
  const Shape btd{c.batch, c.T, c.D}, btn{c.batch, c.T, c.N};
  Tensor s0 = c.state ? make({c.batch, c.D, c.N}, p.in.state0) : Tensor();
  Tensor states;
  if (saved) {
    Tensor y = Tensor::empty(btd);
    states = Tensor::empty({c.batch, ops::selective_scan_chunk_count(c.T, chunk), c.D, c.N});
    ops::selective_scan_forward_saving_chunk_states(in, s0, chunk, y, states);
  }
  ops::SelectiveScanGrads g;
  g.du = make_strided(btd, Vec(size_t(c.batch * c.T * c.D), 5.0), 1);
  g.ddelta = Tensor::empty(btd);
  g.dA = Tensor::zeros({c.D, c.N});
  g.dB = make_strided(btn, Vec(size_t(c.batch * c.T * c.N), 5.0), 2);
  g.dC = Tensor::empty(btn);
  if (c.skip) g.dD = Tensor::zeros({c.D});
  if (c.z) g.dz = Tensor::empty(btd);
  if (c.bias) g.ddelta_bias = Tensor::zeros({c.D});
  if (c.state) g.dstate0 = Tensor::empty({c.batch, c.D, c.N});
  ops::selective_scan_backward(in, s0, states, chunk, make(btd, p.wy), g);
  ScanGradVecs r;
  r.du = to_vec(g.du);
  r.ddelta = to_vec(g.ddelta);
  r.dA = to_vec(g.dA);
  r.dB = to_vec(g.dB);
  r.dC = to_vec(g.dC);
  if (c.skip) r.dD = to_vec(g.dD);
  if (c.z) r.dz = to_vec(g.dz);
  if (c.bias) r.dbias = to_vec(g.ddelta_bias);
  if (c.state) r.ds0 = to_vec(g.dstate0);
  return r;
}

class BackwardSelectiveScan : public ::testing::TestWithParam<ScanCase> {};

TEST_P(BackwardSelectiveScan, MatchesFiniteDifferences) {
  const ScanCase c = GetParam();
  ScanProblem p(c, 1000 + c.T * 13 + c.D);
  const ScanGradVecs g = run_backward(p, c.chunk, true);
  auto loss = [&] { return p.loss(); };
  const double tol = 1e-4;
  EXPECT_GRAD_NEAR(g.du, central_diff(p.in.u, loss), tol, "u");
  EXPECT_GRAD_NEAR(g.ddelta, central_diff(p.in.delta, loss), tol, "delta");
  EXPECT_GRAD_NEAR(g.dA, central_diff(p.in.A, loss), tol, "A");
  EXPECT_GRAD_NEAR(g.dB, central_diff(p.in.B, loss), tol, "B");
  EXPECT_GRAD_NEAR(g.dC, central_diff(p.in.C, loss), tol, "C");
  if (c.skip) EXPECT_GRAD_NEAR(g.dD, central_diff(p.in.Dskip, loss), tol, "D");
  if (c.z) EXPECT_GRAD_NEAR(g.dz, central_diff(p.in.z, loss), tol, "z");
  if (c.bias) EXPECT_GRAD_NEAR(g.dbias, central_diff(p.in.delta_bias, loss), tol, "delta_bias");
  if (c.state) EXPECT_GRAD_NEAR(g.ds0, central_diff(p.in.state0, loss), tol, "state0");
}

TEST_P(BackwardSelectiveScan, ChunkSizesAgree) {
  const ScanCase c = GetParam();
  ScanProblem p(c, 2000 + c.T);
  const ScanGradVecs base = run_backward(p, c.T, false);  // one chunk: the sequential walk
  for (int64_t chunk : {int64_t(1), int64_t(3), c.chunk, c.T + 5}) {
    for (bool saved : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "chunk " << chunk << (saved ? " saved" : " recomputed"));
      const ScanGradVecs g = run_backward(p, chunk, saved);
      const double tol = 2e-6;
      EXPECT_GRAD_NEAR(g.du, base.du, tol, "u");
      EXPECT_GRAD_NEAR(g.ddelta, base.ddelta, tol, "delta");
      EXPECT_GRAD_NEAR(g.dA, base.dA, tol, "A");
      EXPECT_GRAD_NEAR(g.dB, base.dB, tol, "B");
      EXPECT_GRAD_NEAR(g.dC, base.dC, tol, "C");
      if (c.state) EXPECT_GRAD_NEAR(g.ds0, base.ds0, tol, "state0");
    }
  }
}

TEST_P(BackwardSelectiveScan, SavingForwardMatchesOp) {
  const ScanCase c = GetParam();
  ScanProblem p(c, 3000 + c.T);
  const ops::SelectiveScanInputs in = p.tensors();
  const Shape btd{c.batch, c.T, c.D};
  Tensor s0 = c.state ? make({c.batch, c.D, c.N}, p.in.state0) : Tensor();
  Tensor y = Tensor::empty(btd), y_op = Tensor::empty(btd);
  Tensor final_state = Tensor::empty({c.batch, c.D, c.N});
  EXPECT_EQ(ops::selective_scan_chunk_count(c.T, c.chunk), std::max<int64_t>(1, (c.T + c.chunk - 1) / c.chunk));
  Tensor states = Tensor::empty({c.batch, ops::selective_scan_chunk_count(c.T, c.chunk), c.D, c.N});
  ops::selective_scan_forward_saving_chunk_states(in, s0, c.chunk, y, states, &final_state);
  Tensor op_state = c.state ? s0.clone() : Tensor::zeros({c.batch, c.D, c.N});
  ops::selective_scan(in, &op_state, y_op);
  const ref::SelectiveScanRefOutputs want = ref::selective_scan(p.dims, p.in);
  EXPECT_LT(rel_err(to_vec(y), want.y), 2e-5);
  EXPECT_LT(rel_err(to_vec(y), to_vec(y_op)), 2e-5);
  EXPECT_LT(rel_err(to_vec(final_state), want.state), 2e-5);
}

INSTANTIATE_TEST_SUITE_P(BackwardShapes, BackwardSelectiveScan,
                         ::testing::Values(ScanCase{2, 13, 5, 4, 4, true, true, true, true, false},
                                           ScanCase{1, 1, 3, 2, 4, true, true, true, true, true},
                                           ScanCase{2, 9, 19, 3, 2, false, true, true, true,
                                                    true},  // D over one 16-lane block
                                           ScanCase{3, 17, 4, 16, 5, true, false, false, true, false},
                                           ScanCase{2, 11, 6, 5, 8, true, true, true, false, true}),
                         ssm::testing::CaseIndexName());  // no softplus

}  // namespace
}  // namespace ssm
