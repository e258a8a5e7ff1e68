// ops::attention_backward against central finite differences of the double reference
// (ops/ref/attention.h): MHA, GQA, MQA, sliding windows, a cached prefix of keys, shapes spanning
// several 64-row tiles, strided inputs and NaN-poisoned gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <vector>

#include "core/random.h"
#include "core/threads.h"
#include "ops/ops_backward.h"
#include "ops/ref/attention.h"
#include "ops/test_backward_util.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;

struct BackwardCase {
  int64_t batch, T, S, n_heads, n_kv_heads, head_dim, window;
  bool strided;
};

void PrintTo(const BackwardCase& c, std::ostream* os) {
  *os << "B " << c.batch << " T " << c.T << " S " << c.S << " heads " << c.n_heads << "/" << c.n_kv_heads << " d "
      << c.head_dim << " window " << c.window << (c.strided ? " strided" : "");
}

class BackwardAttention : public ::testing::TestWithParam<BackwardCase> {};

// A rows tensor of `shape` whose every element is NaN, as a column slice of wider rows when strided.
Tensor nan_rows(const Shape& shape, bool strided) {
  Shape wide = shape;
  wide.back() += strided ? 5 : 0;
  Tensor t = Tensor::empty(wide);
  t.fill(std::nanf(""));
  return t.slice(-1, strided ? 2 : 0, shape.back());
}

TEST_P(BackwardAttention, MatchesFiniteDifferences) {
  const BackwardCase c = GetParam();
  Rng rng(uint64_t(31 + c.T * 7 + c.S + c.window));
  const int64_t qw = c.n_heads * c.head_dim, kw = c.n_kv_heads * c.head_dim;
  const Shape q_shape{c.batch, c.T, qw}, kv_shape{c.batch, c.S, kw};
  Vec q = randn(rng, c.batch * c.T * qw), k = randn(rng, c.batch * c.S * kw), v = randn(rng, c.batch * c.S * kw),
      wy = randn(rng, c.batch * c.T * qw);
  const ref::AttentionDims dims{c.batch,      c.T,        c.S,      c.n_heads,
                                c.n_kv_heads, c.head_dim, c.window, double(1.0f / std::sqrt(float(c.head_dim)))};
  auto loss = [&] { return dot(wy, ref::attention(q, k, v, dims)); };

  auto input = [&](const Shape& s, const Vec& x) { return c.strided ? make_strided(s, x) : make(s, x); };
  const Tensor qt = input(q_shape, q), kt = input(kv_shape, k), vt = input(kv_shape, v);
  const ops::AttentionParams params{c.n_heads, c.n_kv_heads, 0.0f, c.window};
  Tensor o = Tensor::empty(q_shape), lse = Tensor::empty({c.batch, c.n_heads, c.T});
  ops::attention(qt, kt, vt, params, o, &lse);
  Tensor dq = nan_rows(q_shape, c.strided), dk = nan_rows(kv_shape, c.strided), dv = nan_rows(kv_shape, c.strided);
  ops::attention_backward(qt, kt, vt, o, lse, input(q_shape, wy), params, dq, dk, dv);

  EXPECT_GRAD_NEAR(to_vec(dq), central_diff(q, loss), 1e-4, "q");
  EXPECT_GRAD_NEAR(to_vec(dk), central_diff(k, loss), 1e-4, "k");
  EXPECT_GRAD_NEAR(to_vec(dv), central_diff(v, loss), 1e-4, "v");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, BackwardAttention,
    ::testing::Values(BackwardCase{2, 5, 5, 2, 2, 8, 0, false},      // MHA
                      BackwardCase{1, 7, 11, 4, 2, 16, 3, true},     // GQA, window, cached prefix
                      BackwardCase{2, 6, 6, 3, 1, 8, 0, true},       // MQA
                      BackwardCase{1, 3, 12, 2, 1, 4, 2, false},     // prefix keys no query sees: zero grads
                      BackwardCase{1, 1, 9, 2, 2, 8, 0, false},      // one query over a cache
                      BackwardCase{1, 70, 70, 2, 1, 4, 0, false},    // two tiles
                      BackwardCase{1, 67, 150, 2, 2, 3, 20, true},   // tiles crossing the window edge
                      BackwardCase{2, 40, 100, 3, 3, 5, 1, false}),  // window 1: attends to itself only
    CaseIndexName());

// Every output row has one writer, so the thread count changes nothing, bit for bit.
TEST(BackwardAttention, SameBitsForAnyThreadCount) {
  Rng rng(4);
  const int64_t batch = 2, T = 150, S = 170, hd = 32;
  const ops::AttentionParams params{6, 2, 0.0f, 0};
  auto tensor = [&](const Shape& s) { return make(s, randn(rng, shape_numel(s))); };
  const Tensor q = tensor({batch, T, 6 * hd}), k = tensor({batch, S, 2 * hd}), v = tensor({batch, S, 2 * hd}),
               dout = tensor({batch, T, 6 * hd});
  auto run = [&](int threads) {
    set_num_threads(threads);
    Tensor o = Tensor::empty(q.shape()), lse = Tensor::empty({batch, 6, T});
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(k.shape());
    ops::attention(q, k, v, params, o, &lse);
    ops::attention_backward(q, k, v, o, lse, dout, params, dq, dk, dv);
    return std::vector<Vec>{to_vec(o), to_vec(dq), to_vec(dk), to_vec(dv)};
  };
  const int saved = num_threads();
  const std::vector<Vec> one = run(1), three = run(3);
  set_num_threads(saved);
  EXPECT_EQ(one, three);
}

TEST(BackwardAttention, RejectsBadShapes) {
  const Tensor q = Tensor::zeros({1, 4, 8}), k = Tensor::zeros({1, 6, 4}), v = Tensor::zeros({1, 6, 4});
  const Tensor o = Tensor::zeros({1, 4, 8}), lse = Tensor::zeros({1, 2, 4});
  Tensor dq = Tensor::empty({1, 4, 8}), dk = Tensor::empty({1, 6, 4}), dv = Tensor::empty({1, 6, 4});
  Tensor dk_bad = Tensor::empty({1, 4, 4});
  test::expect_error(
      [&] {
        ops::attention_backward(q, k, v, o, lse, o, {2, 1}, dq, dk_bad, dv);
      },
      {"attention_backward", "dk must be F32 of k's shape [1, 6, 4]", "[1, 4, 4]"});
  test::expect_error(
      [&] {
        ops::attention_backward(q, k, v, o, Tensor::zeros({1, 4, 2}), o, {2, 1}, dq, dk, dv);
      },
      {"attention_backward", "lse must be F32 contiguous [1, 2, 4]"});
  test::expect_error(
      [&] {
        ops::attention_backward(q, k, v, o, lse, o, {2, 2}, dq, dk, dv);
      },
      {"attention_backward", "k/v width 4", "n_kv_heads 2"});
}

}  // namespace
}  // namespace ssm
