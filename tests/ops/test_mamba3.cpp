// ops::mamba3 (chunked) and ops::mamba3_step against the double recurrence ref::mamba3: SISO and MIMO
// (ranks 1, 2 and 4, both rotation pairings), odd lengths,
// batch > 1, chunks of 1, 4 and 64 tokens, several heads, 1 and 2 groups, partial and full rotation,
// with and without D, the A floor acting, strided inputs, outputs poisoned with NaN; a prefill in pieces
// (not multiples of the chunk) through the state = one piece; the step token by token = the forward.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>

#include "ops/mamba3_test_data.h"

namespace ssm {
namespace {

using namespace ssm::testing;

constexpr double kTol = 1e-4;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Tensor poisoned(const Shape& shape) { return make(shape, Vec(size_t(shape_numel(shape)), kNaN)); }

// SISO (rank 1, adjacent pairs) and MIMO variants: rank 1 with MIMO's pairs (j, j + N/2), ranks 2 and 4.
struct Variant {
  int64_t R;
  bool halves;
};
constexpr Variant kVariants[] = {{1, false}, {1, true}, {2, true}, {4, true}};

// Angles compared on the circle: both sides keep them in [0, 2π), so one may have wrapped.
double angle_err(const Vec& got, const Vec& want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::remainder(got[i] - want[i], 2 * std::numbers::pi);
    worst = std::max(worst, std::isfinite(d) ? std::abs(d) : 1e9);
  }
  return worst;
}

TEST(OpsMamba3, ForwardMatchesReference) {
  uint64_t seed = 0;
  for (const Variant v : kVariants)
    for (int64_t batch : {1, 3})
      for (int64_t T : {1, 7, 33})
        for (int64_t chunk : {1, 4, 64})
          for (int64_t G : {1, 2})
            for (int64_t S : {1, 4})  // N 8: a quarter of the pairs rotating (rope_fraction 0.5), or all
              for (double A_floor : {1e-4, 0.3}) {
                Mamba3Case c;
                c.R = v.R;
                c.rotate_halves = v.halves;
                c.batch = batch;
                c.T = T;
                c.chunk = chunk;
                c.G = G;
                c.S = S;
                c.A_floor = A_floor;
                c.with_D = ++seed % 3 != 0;
                c.strided = seed % 2 == 0;
                c.seed = seed;
                SCOPED_TRACE(c.describe());
                const ref::Mamba3RefInputs data = make_mamba3_data(c);
                const Vec want = ref::mamba3(c.dims(), data);
                Tensor y = poisoned({c.batch, c.T, c.R * c.H * c.P});
                ops::mamba3(make_mamba3_inputs(c, data, 0, c.T), nullptr, y);
                EXPECT_LT(rel_err(to_vec(y), want), kTol);
              }
}

// A prefill in three pieces through the state equals one piece, and the final states agree.
TEST(OpsMamba3, PiecesThroughTheStateMatchOnePiece) {
  for (const Variant v : kVariants) {
    Mamba3Case c;
    c.T = 29;
    c.R = v.R;
    c.rotate_halves = v.halves;
    c.strided = true;
    SCOPED_TRACE(c.describe());
    const ref::Mamba3RefInputs data = make_mamba3_data(c);
    ref::Mamba3RefState want_state;
    const Vec want = ref::mamba3(c.dims(), data, &want_state);
    ops::Mamba3State state = ops::Mamba3State::zeros(c.batch, c.H, c.P, c.N, c.S, c.R);
    const int64_t W = c.R * c.H * c.P;
    Vec got(want.size(), kNaN);
    for (auto [t0, n] : {std::pair<int64_t, int64_t>{0, 10}, {10, 1}, {11, 18}}) {
      Tensor y = poisoned({c.batch, n, W});
      ops::mamba3(make_mamba3_inputs(c, data, t0, n), &state, y);
      const Vec part = to_vec(y);
      for (int64_t b = 0; b < c.batch; ++b)
        std::copy(part.begin() + b * n * W, part.begin() + (b + 1) * n * W, got.begin() + (b * c.T + t0) * W);
    }
    EXPECT_LT(rel_err(got, want), kTol);
    EXPECT_LT(rel_err(to_vec(state.ssm), want_state.ssm), kTol);
    EXPECT_LT(rel_err(to_vec(state.k), want_state.k), kTol);
    EXPECT_LT(rel_err(to_vec(state.x), want_state.x), kTol);
    EXPECT_LT(angle_err(to_vec(state.angle), want_state.angle), 1e-4);
  }
}

TEST(OpsMamba3, StepTokenByTokenMatchesForward) {
  for (const Variant v : kVariants)
    for (int64_t G : {1, 2}) {
      Mamba3Case c;
      c.T = 17;
      c.G = G;
      c.R = v.R;
      c.rotate_halves = v.halves;
      c.strided = true;
      SCOPED_TRACE(c.describe());
      const ref::Mamba3RefInputs data = make_mamba3_data(c);
      Tensor y_forward = poisoned({c.batch, c.T, c.R * c.H * c.P});
      ops::mamba3(make_mamba3_inputs(c, data, 0, c.T), nullptr, y_forward);
      const Vec want = to_vec(y_forward);
      EXPECT_LT(rel_err(want, ref::mamba3(c.dims(), data)), kTol);
      ops::Mamba3State state = ops::Mamba3State::zeros(c.batch, c.H, c.P, c.N, c.S, c.R);
      const int64_t W = c.R * c.H * c.P;
      Vec got(want.size(), kNaN);
      for (int64_t t = 0; t < c.T; ++t) {
        Tensor y = poisoned({c.batch, W});
        ops::mamba3_step(make_mamba3_inputs(c, data, t, 1, true), state, y);
        const Vec row = to_vec(y);
        for (int64_t b = 0; b < c.batch; ++b)
          std::copy(row.begin() + b * W, row.begin() + (b + 1) * W, got.begin() + (b * c.T + t) * W);
      }
      EXPECT_LT(rel_err(got, want), 1e-5);
    }
}

TEST(OpsMamba3, BadShapesAreErrors) {
  Mamba3Case c;
  const ref::Mamba3RefInputs data = make_mamba3_data(c);
  const ops::Mamba3Inputs good = make_mamba3_inputs(c, data, 0, c.T);
  Tensor y = Tensor::empty({c.batch, c.T, c.H * c.P});
  Tensor wide = Tensor::empty({c.batch, c.T, c.H * c.P + 1});
  EXPECT_THROW(ops::mamba3(good, nullptr, wide), Error);
  ops::Mamba3Inputs in = good;
  in.n_groups = 3;  // does not divide the 4 heads
  EXPECT_THROW(ops::mamba3(in, nullptr, y), Error);
  in = good;
  in.angles = Tensor::zeros({c.batch, c.T, c.N / 2 + 1});  // more angles than pairs
  EXPECT_THROW(ops::mamba3(in, nullptr, y), Error);
  in = good;
  in.B_bias = Tensor::zeros({c.H, c.N + 1});
  EXPECT_THROW(ops::mamba3(in, nullptr, y), Error);
  in = good;
  in.trap = Tensor::zeros({c.batch, c.T + 1, c.H});
  EXPECT_THROW(ops::mamba3(in, nullptr, y), Error);
  in = good;
  in.chunk_size = 0;
  EXPECT_THROW(ops::mamba3(in, nullptr, y), Error);
  ops::Mamba3State wrong = ops::Mamba3State::zeros(c.batch + 1, c.H, c.P, c.N, c.S);
  EXPECT_THROW(ops::mamba3(good, &wrong, y), Error);
  Tensor y_step = Tensor::empty({c.batch, c.H * c.P});
  ops::Mamba3State state = ops::Mamba3State::zeros(c.batch, c.H, c.P, c.N, c.S);
  EXPECT_THROW(ops::mamba3_step(good, state, y_step), Error);  // sequence tensors given to the step
}

TEST(OpsMamba3, BadMimoShapesAreErrors) {
  Mamba3Case c;
  c.R = 2;
  c.rotate_halves = true;
  const ref::Mamba3RefInputs data = make_mamba3_data(c);
  const ops::Mamba3Inputs good = make_mamba3_inputs(c, data, 0, c.T);
  Tensor y = Tensor::empty({c.batch, c.T, c.R * c.H * c.P});
  Tensor one_rank = Tensor::empty({c.batch, c.T, c.H * c.P});
  EXPECT_THROW(ops::mamba3(good, nullptr, one_rank), Error);
  ops::Mamba3Inputs in = good;
  in.rank = 3;  // does not divide x's and B's widths
  EXPECT_THROW(ops::mamba3(in, nullptr, y), Error);
  in = good;
  in.rank = 0;
  EXPECT_THROW(ops::mamba3(in, nullptr, y), Error);
  in = good;
  in.B_bias = Tensor::zeros({c.H, c.N});  // one rank's bias
  EXPECT_THROW(ops::mamba3(in, nullptr, y), Error);
  ops::Mamba3State siso_state = ops::Mamba3State::zeros(c.batch, c.H, c.P, c.N, c.S);
  EXPECT_THROW(ops::mamba3(good, &siso_state, y), Error);
  Mamba3Case odd = c;  // the halves need an even N
  odd.N = 7;
  const ref::Mamba3RefInputs odd_data = make_mamba3_data(odd);
  EXPECT_THROW(ops::mamba3(make_mamba3_inputs(odd, odd_data, 0, odd.T), nullptr, y), Error);
}

}  // namespace
}  // namespace ssm
