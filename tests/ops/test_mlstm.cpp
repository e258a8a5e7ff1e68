// ops::mlstm (chunkwise) and ops::mlstm_step against the double recurrent reference ref::mlstm:
// odd lengths, batch > 1, T not a multiple of the chunk, strided inputs, both branches of the
// denominator's max; a prefill in pieces through the state = in one piece; step token by token.
#include <gtest/gtest.h>

#include <string>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ref/mlstm.h"
#include "ops/test_backward_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct Case {
  int64_t batch = 2, T = 23, H = 2, dk = 8, dv = 6, chunk = 4;
  double i_offset = 0.0;  // very negative: exp(−m) wins the denominator's max (a fresh model's −10 bias)
  bool strided = false;
  uint64_t seed = 1;
};

std::string describe(const Case& c) {
  return "batch " + std::to_string(c.batch) + " T " + std::to_string(c.T) + " H " + std::to_string(c.H) + " dk " +
         std::to_string(c.dk) + " dv " + std::to_string(c.dv) + " chunk " + std::to_string(c.chunk) + " i offset " +
         std::to_string(c.i_offset) + (c.strided ? " strided" : "");
}

ref::MlstmRefInputs make_data(const Case& c) {
  Rng rng(c.seed);
  const int64_t rows = c.batch * c.T;
  ref::MlstmRefInputs in;
  in.q = randn(rng, rows * c.H * c.dk);
  in.k = randn(rng, rows * c.H * c.dk);
  in.v = randn(rng, rows * c.H * c.dv);
  in.i = randn(rng, rows * c.H, 3.0, c.i_offset);
  in.f = randn(rng, rows * c.H, 2.0, 1.0);
  return in;
}

// Rows [t0, t0 + n) of every sequence of a [batch, T, width] vector.
Vec rows_of(const Vec& v, const Case& c, int64_t width, int64_t t0, int64_t n) {
  Vec out;
  for (int64_t b = 0; b < c.batch; ++b)
    out.insert(out.end(), v.begin() + (b * c.T + t0) * width, v.begin() + (b * c.T + t0 + n) * width);
  return out;
}

// Op inputs holding rows [t0, t0 + n) (step: [batch, width] of row t0).
ops::MlstmInputs make_inputs(const Case& c, const ref::MlstmRefInputs& d, int64_t t0, int64_t n, bool step = false) {
  const auto tensor = [&](const Vec& all, int64_t width, int64_t pad) {
    const Vec part = rows_of(all, c, width, t0, n);
    const Shape shape = step ? Shape{c.batch, width} : Shape{c.batch, n, width};
    return c.strided ? make_strided(shape, part, pad) : make(shape, part);
  };
  ops::MlstmInputs in;
  in.q = tensor(d.q, c.H * c.dk, 3);
  in.k = tensor(d.k, c.H * c.dk, 1);
  in.v = tensor(d.v, c.H * c.dv, 2);
  in.i = tensor(d.i, c.H, 5);
  in.f = tensor(d.f, c.H, 1);
  in.n_heads = c.H;
  in.chunk_size = c.chunk;
  return in;
}

constexpr double kTol = 1e-4;

TEST(OpsMlstm, ChunkedMatchesRecurrentReference) {
  uint64_t seed = 0;
  for (int64_t batch : {1, 2})
    for (int64_t T : {1, 5, 16, 17, 45})
      for (int64_t chunk : {1, 4, 16, 64})
        for (int64_t H : {1, 3})
          for (double i_offset : {0.0, -8.0}) {
            Case c;
            c.batch = batch;
            c.T = T;
            c.chunk = chunk;
            c.H = H;
            c.i_offset = i_offset;
            c.dk = H == 1 ? 4 : 8;
            c.dv = H == 1 ? 5 : 6;
            c.strided = ++seed % 2 == 0;
            c.seed = seed;
            SCOPED_TRACE(describe(c));
            const ref::MlstmRefInputs data = make_data(c);
            const Vec want = ref::mlstm({c.batch, c.T, c.H, c.dk, c.dv}, data);
            Tensor h = Tensor::empty({c.batch, c.T, c.H * c.dv});
            ops::mlstm(make_inputs(c, data, 0, c.T), nullptr, h);
            EXPECT_LT(rel_err(to_vec(h), want), kTol);
          }
}

// A prefill in three pieces through the state equals one piece, and the final states agree.
TEST(OpsMlstm, PiecesThroughTheStateMatchOnePiece) {
  Case c;
  c.T = 37;
  c.chunk = 8;
  c.strided = true;
  const ref::MlstmRefInputs data = make_data(c);
  ref::MlstmRefState want_state;
  const Vec want = ref::mlstm({c.batch, c.T, c.H, c.dk, c.dv}, data, &want_state);
  ops::MlstmState state = ops::MlstmState::zeros(c.batch, c.H, c.dk, c.dv);
  Vec got;
  std::vector<Vec> parts;
  for (auto [t0, n] : {std::pair<int64_t, int64_t>{0, 11}, {11, 1}, {12, 25}}) {
    Tensor h = Tensor::empty({c.batch, n, c.H * c.dv});
    ops::mlstm(make_inputs(c, data, t0, n), &state, h);
    parts.push_back(to_vec(h));
  }
  // Reassemble [batch, T, ·] from the per-piece [batch, n, ·] blocks.
  const int64_t W = c.H * c.dv;
  for (int64_t b = 0; b < c.batch; ++b)
    for (const Vec& part : parts) {
      const int64_t n = int64_t(part.size()) / (c.batch * W);
      got.insert(got.end(), part.begin() + b * n * W, part.begin() + (b + 1) * n * W);
    }
  EXPECT_LT(rel_err(got, want), kTol);
  EXPECT_LT(rel_err(to_vec(state.C), want_state.C), kTol);
  EXPECT_LT(rel_err(to_vec(state.n), want_state.n), kTol);
  EXPECT_LT(rel_err(to_vec(state.m), want_state.m), kTol);
}

TEST(OpsMlstm, StepTokenByTokenMatchesReference) {
  for (double i_offset : {0.0, -8.0}) {
    Case c;
    c.T = 19;
    c.i_offset = i_offset;
    c.strided = true;
    SCOPED_TRACE(describe(c));
    const ref::MlstmRefInputs data = make_data(c);
    const Vec want = ref::mlstm({c.batch, c.T, c.H, c.dk, c.dv}, data);
    ops::MlstmState state = ops::MlstmState::zeros(c.batch, c.H, c.dk, c.dv);
    const int64_t W = c.H * c.dv;
    Vec got(want.size());
    for (int64_t t = 0; t < c.T; ++t) {
      Tensor h = Tensor::empty({c.batch, W});
      ops::mlstm_step(make_inputs(c, data, t, 1, true), state, h);
      const Vec row = to_vec(h);
      for (int64_t b = 0; b < c.batch; ++b)
        std::copy(row.begin() + b * W, row.begin() + (b + 1) * W, got.begin() + (b * c.T + t) * W);
    }
    EXPECT_LT(rel_err(got, want), kTol);
  }
}

TEST(OpsMlstm, BadShapesAreErrors) {
  Case c;
  const ref::MlstmRefInputs data = make_data(c);
  ops::MlstmInputs in = make_inputs(c, data, 0, c.T);
  Tensor h = Tensor::empty({c.batch, c.T, c.H * c.dv + 1});
  EXPECT_THROW(ops::mlstm(in, nullptr, h), Error);
  in.n_heads = 5;  // does not divide the widths
  Tensor ok = Tensor::empty({c.batch, c.T, c.H * c.dv});
  EXPECT_THROW(ops::mlstm(in, nullptr, ok), Error);
  in.n_heads = c.H;
  ops::MlstmState wrong = ops::MlstmState::zeros(c.batch + 1, c.H, c.dk, c.dv);
  EXPECT_THROW(ops::mlstm(in, &wrong, ok), Error);
}

TEST(OpsSoftCapAndGroupLayernorm, MatchReferences) {
  Rng rng(7);
  const int64_t rows = 9, width = 12, group = 4;
  const Vec x = randn(rng, rows * width, 20.0), w = randn(rng, width, 0.3, 1.0), b = randn(rng, width);
  Tensor y = Tensor::empty({rows, width});
  ops::soft_cap(make_strided({rows, width}, x), 15.0f, y);
  EXPECT_LT(rel_err(to_vec(y), ref::soft_cap(x, 15.0)), 1e-6);
  ops::group_layernorm(make_strided({rows, width}, x), make({width}, w), make({width}, b), group, 1e-6f, y);
  EXPECT_LT(rel_err(to_vec(y), ref::group_layernorm(x, w, b, rows, width, group, 1e-6)), 1e-5);
  ops::group_layernorm(make({rows, width}, x), make({width}, w), Tensor(), group, 1e-6f, y);
  EXPECT_LT(rel_err(to_vec(y), ref::group_layernorm(x, w, {}, rows, width, group, 1e-6)), 1e-5);
  EXPECT_THROW(ops::group_layernorm(make({rows, width}, x), make({width}, w), Tensor(), 5, 1e-6f, y), Error);
  EXPECT_THROW(ops::soft_cap(make({rows, width}, x), 0.0f, y), Error);
}

}  // namespace
}  // namespace ssm
