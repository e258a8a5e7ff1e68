// ops::slstm and ops::slstm_step against the double reference ref::slstm: odd lengths, batch > 1,
// several heads, strided (column-slice) inputs and outputs poisoned with NaN; a sequence in pieces
// through the state = in one piece; the step token by token = the forward; bad shapes are errors.
#include <gtest/gtest.h>

#include <string>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/slstm.h"
#include "ops/test_backward_util.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using testing::make;
using testing::make_strided;
using testing::randn;
using testing::Vec;

struct Case {
  int64_t batch = 2, T = 13, H = 2, dh = 3;
  bool strided = false;
  uint64_t seed = 1;
  int64_t D() const { return H * dh; }
};

std::string describe(const Case& c) {
  return "batch " + std::to_string(c.batch) + " T " + std::to_string(c.T) + " H " + std::to_string(c.H) + " dh " +
         std::to_string(c.dh) + (c.strided ? " strided" : "");
}

ref::SlstmRefInputs make_data(const Case& c) {
  Rng rng(c.seed);
  ref::SlstmRefInputs in;
  in.wx = randn(rng, c.batch * c.T * 4 * c.D(), 1.5);
  in.R = randn(rng, c.H * c.dh * 4 * c.dh, 0.5);
  in.bias = randn(rng, 4 * c.D(), 0.5);
  return in;
}

// Rows [t0, t0 + n) of every sequence of a [batch, T, width] vector.
Vec rows_of(const Vec& v, const Case& c, int64_t width, int64_t t0, int64_t n) {
  Vec out;
  for (int64_t b = 0; b < c.batch; ++b)
    out.insert(out.end(), v.begin() + (b * c.T + t0) * width, v.begin() + (b * c.T + t0 + n) * width);
  return out;
}

// Op inputs holding rows [t0, t0 + n) (step: [batch, 4·D] of row t0).
ops::SlstmInputs make_inputs(const Case& c, const ref::SlstmRefInputs& d, int64_t t0, int64_t n, bool step = false) {
  const Vec part = rows_of(d.wx, c, 4 * c.D(), t0, n);
  const Shape shape = step ? Shape{c.batch, 4 * c.D()} : Shape{c.batch, n, 4 * c.D()};
  ops::SlstmInputs in;
  in.wx = c.strided ? make_strided(shape, part, 5) : make(shape, part);
  in.R = make({c.H, c.dh, 4 * c.dh}, d.R);
  in.bias = make({4 * c.D()}, d.bias);
  in.n_heads = c.H;
  return in;
}

Vec state_vec(const ops::SlstmState& s) {
  Vec v;
  for (const Tensor* t : {&s.c, &s.n, &s.m, &s.h}) {
    const Vec part = testing::to_vec(*t);
    v.insert(v.end(), part.begin(), part.end());
  }
  return v;
}
Vec state_vec(const ref::SlstmRefState& s) {
  Vec v;
  for (const Vec* part : {&s.c, &s.n, &s.m, &s.h}) v.insert(v.end(), part->begin(), part->end());
  return v;
}

constexpr double kTol = 2e-5;

TEST(OpsSlstm, ForwardMatchesReference) {
  uint64_t seed = 0;
  for (int64_t batch : {1, 3})
    for (int64_t T : {1, 2, 7, 31})
      for (int64_t H : {1, 3})
        for (int64_t dh : {1, 4, 5})
          for (bool strided : {false, true}) {
            const Case c{batch, T, H, dh, strided, ++seed};
            const ref::SlstmRefInputs d = make_data(c);
            ref::SlstmRefState want_state;
            const Vec want = ref::slstm({c.batch, c.T, c.H, c.dh}, d, &want_state);
            Tensor y = test::nan_tensor({c.batch, c.T, c.D()}, strided);
            ops::slstm(make_inputs(c, d, 0, c.T), nullptr, y);
            EXPECT_LT(test::max_rel_err(testing::to_vec(y), want), kTol) << describe(c);
            ops::SlstmState state = ops::SlstmState::zeros(c.batch, c.D());
            ops::slstm(make_inputs(c, d, 0, c.T), &state, y);
            EXPECT_LT(test::max_rel_err(testing::to_vec(y), want), kTol) << describe(c) << " (with a state)";
            EXPECT_LT(test::max_rel_err(state_vec(state), state_vec(want_state)), kTol) << describe(c) << " final state";
          }
}

// Two pieces through the state (the second starts from a used state: the max branch of m) = one piece.
TEST(OpsSlstm, PiecesThroughTheStateMatchOnePiece) {
  const Case c{2, 19, 2, 4, true, 7};
  const ref::SlstmRefInputs d = make_data(c);
  const Vec want = ref::slstm({c.batch, c.T, c.H, c.dh}, d);
  ops::SlstmState state = ops::SlstmState::zeros(c.batch, c.D());
  for (auto [t0, n] : {std::pair<int64_t, int64_t>{0, 8}, {8, 11}}) {
    Tensor y = test::nan_tensor({c.batch, n, c.D()});
    ops::slstm(make_inputs(c, d, t0, n), &state, y);
    EXPECT_LT(test::max_rel_err(testing::to_vec(y), rows_of(want, c, c.D(), t0, n)), kTol) << "piece at " << t0;
  }
}

TEST(OpsSlstm, StepTokenByTokenMatchesForward) {
  for (const Case& c : {Case{3, 9, 2, 3, false, 11}, Case{1, 6, 1, 8, true, 12}, Case{2, 5, 4, 2, true, 13}}) {
    const ref::SlstmRefInputs d = make_data(c);
    Tensor y = test::nan_tensor({c.batch, c.T, c.D()});
    ops::SlstmState forward_state = ops::SlstmState::zeros(c.batch, c.D());
    ops::slstm(make_inputs(c, d, 0, c.T), &forward_state, y);
    const Vec want = testing::to_vec(y);
    ops::SlstmState state = ops::SlstmState::zeros(c.batch, c.D());
    for (int64_t t = 0; t < c.T; ++t) {
      Tensor yt = test::nan_tensor({c.batch, c.D()}, c.strided);
      ops::slstm_step(make_inputs(c, d, t, 1, true), state, yt);
      const Vec got = testing::to_vec(yt);
      for (int64_t b = 0; b < c.batch; ++b)
        for (int64_t u = 0; u < c.D(); ++u)
          EXPECT_FLOAT_EQ(float(got[size_t(b * c.D() + u)]), float(want[size_t((b * c.T + t) * c.D() + u)]))
              << describe(c) << " t " << t;
    }
    EXPECT_EQ(state_vec(state), state_vec(forward_state)) << describe(c);
  }
}

TEST(OpsSlstm, BadShapesAreErrors) {
  const Case c{2, 5, 2, 3};
  const ref::SlstmRefInputs d = make_data(c);
  Tensor y = Tensor::empty({c.batch, c.T, c.D()});
  ops::SlstmInputs bad = make_inputs(c, d, 0, c.T);
  bad.n_heads = 5;
  test::expect_error([&] { ops::slstm(bad, nullptr, y); }, {"slstm", "wx's width 24", "5 heads"});
  bad = make_inputs(c, d, 0, c.T);
  bad.R = Tensor::zeros({c.H, c.dh, 3 * c.dh});
  test::expect_error([&] { ops::slstm(bad, nullptr, y); }, {"slstm", "R must be contiguous F32 [2, 3, 12]"});
  bad = make_inputs(c, d, 0, c.T);
  bad.bias = Tensor::zeros({c.D()});
  test::expect_error([&] { ops::slstm(bad, nullptr, y); }, {"slstm", "bias must be contiguous F32 [24]"});
  Tensor short_y = Tensor::empty({c.batch, c.T - 1, c.D()});
  test::expect_error([&] { ops::slstm(make_inputs(c, d, 0, c.T), nullptr, short_y); }, {"slstm", "y must be F32 rows"});
  ops::SlstmState state = ops::SlstmState::zeros(c.batch + 1, c.D());
  test::expect_error([&] { ops::slstm(make_inputs(c, d, 0, c.T), &state, y); }, {"slstm", "the state must be"});
  Tensor yt = Tensor::empty({c.batch, c.D()});
  test::expect_error([&] { ops::slstm_step(make_inputs(c, d, 0, c.T), state, yt); }, {"slstm_step", "2 dims"});
  ops::SlstmGrads grads{Tensor::empty({c.batch, c.T, 4 * c.D()}), Tensor::zeros({c.H, c.dh, 4 * c.dh}),
                        Tensor::zeros({4 * c.D() + 1})};
  test::expect_error([&] { ops::slstm_backward(make_inputs(c, d, 0, c.T), y, grads); },
                     {"slstm_backward", "dR and dbias"});
}

}  // namespace
}  // namespace ssm
