// ops::conv1d_causal and ops::conv1d_causal_step against the double-precision reference in
// ops/ref/conv1d.h, plus self-consistency: step = forward token by token, and forward in two pieces
// with the state carried = forward in one piece.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "ops/ops.h"
#include "ops/ref/conv1d.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using test::Vec;

struct ConvCase {
  int64_t B, T, C, K;
};
const std::vector<ConvCase> kCases = {{1, 1, 5, 4},    {2, 7, 37, 4}, {3, 33, 130, 4},
                                      {2, 130, 64, 3}, {1, 7, 16, 1}, {2, 2, 70, 4}};

TEST(OpsConv1d, MatchesReference) {
  Rng rng(21);
  for (const ConvCase& c : kCases) {
    for (int flags = 0; flags < 16; ++flags) {
      const bool with_bias = flags & 1, silu = flags & 2, with_state = flags & 4, strided = flags & 8;
      const Tensor x = test::random_tensor({c.B, c.T, c.C}, rng, -2, 2, strided);
      const Tensor w = test::random_tensor({c.C, c.K}, rng);
      const Tensor bias = with_bias ? test::random_tensor({c.C}, rng) : Tensor();
      Tensor state = with_state ? test::random_tensor({c.B, c.K - 1, c.C}, rng, -2, 2) : Tensor();
      const Vec state0 = test::to_vec(state);
      Tensor y = test::nan_tensor({c.B, c.T, c.C}, strided);
      ops::conv1d_causal(x, w, bias, silu, with_state ? &state : nullptr, y);
      const ref::Conv1dOutputs want =
          ref::conv1d_causal(test::to_vec(x), test::to_vec(w), test::to_vec(bias), state0, silu, c.B, c.T, c.C, c.K);
      const std::string what = fmt::format("B {} T {} C {} K {} bias {} silu {} state {} strided {}", c.B, c.T, c.C,
                                           c.K, with_bias, silu, with_state, strided);
      EXPECT_LT(test::max_rel_err(test::to_vec(y), want.y), 1e-6) << what;
      if (with_state) {
        EXPECT_EQ(test::to_vec(state), want.state) << what;
      }
    }
  }
}

TEST(OpsConv1d, StepMatchesForward) {
  Rng rng(22);
  for (const ConvCase& c : kCases) {
    const Tensor x = test::random_tensor({c.B, c.T, c.C}, rng, -2, 2, true);
    const Tensor w = test::random_tensor({c.C, c.K}, rng);
    const Tensor bias = test::random_tensor({c.C}, rng);
    const Tensor state0 = test::random_tensor({c.B, c.K - 1, c.C}, rng);
    Tensor state_fwd = state0.clone(), state_step = state0.clone();
    Tensor y = Tensor::empty({c.B, c.T, c.C});
    ops::conv1d_causal(x, w, bias, true, &state_fwd, y);
    Vec stepped(size_t(c.B * c.T * c.C));
    for (int64_t t = 0; t < c.T; ++t) {
      Tensor yt = Tensor::empty({c.B, c.C});
      ops::conv1d_causal_step(x.select(1, t), w, bias, true, state_step, yt);  // x_t: rows of stride T*C
      const Vec v = test::to_vec(yt);
      for (int64_t b = 0; b < c.B; ++b) {
        std::copy_n(v.begin() + b * c.C, c.C, stepped.begin() + (b * c.T + t) * c.C);
      }
    }
    const std::string what = fmt::format("B {} T {} C {} K {}", c.B, c.T, c.C, c.K);
    EXPECT_LT(test::max_rel_err(stepped, test::to_vec(y)), 1e-6) << what;
    EXPECT_EQ(test::to_vec(state_step), test::to_vec(state_fwd)) << what;
  }
}

// y may be x: the step in place gives the same bits as into another tensor (rows of a wider tensor,
// as linear_conv_step's conv columns are).
TEST(OpsConv1d, StepInPlaceGivesTheSameBits) {
  Rng rng(24);
  for (const ConvCase& c : kCases) {
    const Tensor w = test::random_tensor({c.C, c.K}, rng), bias = test::random_tensor({c.C}, rng);
    Tensor state_apart = test::random_tensor({c.B, c.K - 1, c.C}, rng), state_in_place = state_apart.clone();
    for (int step = 0; step < 3; ++step) {
      const Tensor wide = test::random_tensor({c.B, c.C + 5}, rng, -2, 2);
      const Tensor x = wide.slice(1, 3, c.C);
      Tensor apart = Tensor::empty({c.B, c.C}), in_place = wide.clone().slice(1, 3, c.C);
      ops::conv1d_causal_step(x, w, bias, true, state_apart, apart);
      ops::conv1d_causal_step(in_place, w, bias, true, state_in_place, in_place);
      const std::string what = fmt::format("B {} C {} K {} step {}", c.B, c.C, c.K, step);
      EXPECT_EQ(test::to_vec(in_place), test::to_vec(apart)) << what;
      EXPECT_EQ(test::to_vec(state_in_place), test::to_vec(state_apart)) << what;
    }
  }
}

TEST(OpsConv1d, SplitMatchesWhole) {
  Rng rng(23);
  for (const ConvCase& c : kCases) {
    for (int64_t first : {int64_t(0), int64_t(1), c.T / 2, c.T}) {
      if (first > c.T) continue;
      const Tensor x = test::random_tensor({c.B, c.T, c.C}, rng, -2, 2);
      const Tensor w = test::random_tensor({c.C, c.K}, rng);
      const Tensor bias = test::random_tensor({c.C}, rng);
      Tensor whole_state = Tensor::zeros({c.B, c.K - 1, c.C});
      Tensor whole = Tensor::empty({c.B, c.T, c.C});
      ops::conv1d_causal(x, w, bias, true, &whole_state, whole);

      Tensor state = Tensor::zeros({c.B, c.K - 1, c.C});
      Tensor y1 = Tensor::empty({c.B, first, c.C}), y2 = Tensor::empty({c.B, c.T - first, c.C});
      ops::conv1d_causal(x.slice(1, 0, first).contiguous(), w, bias, true, &state, y1);
      ops::conv1d_causal(x.slice(1, first, c.T - first).contiguous(), w, bias, true, &state, y2);
      const Vec v1 = test::to_vec(y1), v2 = test::to_vec(y2);
      Vec joined;
      for (int64_t b = 0; b < c.B; ++b) {
        joined.insert(joined.end(), v1.begin() + b * first * c.C, v1.begin() + (b + 1) * first * c.C);
        joined.insert(joined.end(), v2.begin() + b * (c.T - first) * c.C, v2.begin() + (b + 1) * (c.T - first) * c.C);
      }
      const std::string what = fmt::format("B {} T {} C {} K {} first {}", c.B, c.T, c.C, c.K, first);
      EXPECT_LT(test::max_rel_err(joined, test::to_vec(whole)), 1e-6) << what;
      EXPECT_EQ(test::to_vec(state), test::to_vec(whole_state)) << what;
    }
  }
}

TEST(OpsConv1d, RejectsMismatchedShapes) {
  const Tensor x = Tensor::zeros({2, 5, 8});
  const Tensor w = Tensor::zeros({8, 4});
  Tensor y = Tensor::empty({2, 5, 8});
  const Tensor w_bad = Tensor::zeros({7, 4});
  test::expect_error([&] { ops::conv1d_causal(x, w_bad, Tensor(), true, nullptr, y); },
                     {"conv1d_causal", "[2, 5, 8]", "[7, 4]"});
  Tensor state_bad = Tensor::zeros({2, 4, 8});
  test::expect_error([&] { ops::conv1d_causal(x, w, Tensor(), true, &state_bad, y); },
                     {"conv1d_causal", "[2, 3, 8]", "[2, 4, 8]"});
  const Tensor xt = Tensor::zeros({2, 8});
  Tensor yt = Tensor::empty({2, 8});
  Tensor no_state;
  test::expect_error([&] { ops::conv1d_causal_step(xt, w, Tensor(), true, no_state, yt); },
                     {"conv1d_causal_step", "state"});
  test::expect_error([&] { ops::conv1d_causal_step(x, w, Tensor(), true, state_bad, yt); },
                     {"conv1d_causal_step", "[2, 5, 8]"});
}

}  // namespace
}  // namespace ssm
