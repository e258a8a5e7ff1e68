// moe_plan, moe_gather, moe_scatter_add and moe_scatter_add_backward: the plan's invariants, and a
// whole mixture of linear experts (gather → ops::linear per expert → scatter-add) against the
// reference combine y[t] = Σ_s w[t, s] · expert_{I[t, s]}(x[t]), forward and backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/linear.h"
#include "ops/ref/moe.h"
#include "ops/test_backward_util.h"
#include "ops/test_threads.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;
using ops::MoePlan;

Tensor i32_tensor(const std::vector<int32_t>& values, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::I32);
  std::copy(values.begin(), values.end(), t.data<int32_t>());
  return t;
}

std::vector<int32_t> values_of(const Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

// A plan whose tensors start as -7, so that an entry moe_plan leaves unwritten shows.
MoePlan plan_of(const Tensor& indices, int64_t n_experts) {
  MoePlan plan = MoePlan::allocate(indices.size(0), indices.size(1), n_experts);
  for (Tensor* t : {&plan.expert_offsets, &plan.row_token, &plan.row_slot, &plan.slot_row})
    std::fill_n(t->data<int32_t>(), t->numel(), -7);
  ops::moe_plan(indices, plan);
  return plan;
}

TEST(OpsMoePlan, SmallCaseByHand) {
  // Token 0 → experts 2, 0; token 1 → 0, 2; token 2 → 3, 2. Expert 1 gets nothing.
  const MoePlan plan = plan_of(i32_tensor({2, 0, 0, 2, 3, 2}, {3, 2}), 4);
  EXPECT_EQ(values_of(plan.expert_offsets), (std::vector<int32_t>{0, 2, 2, 5, 6}));
  EXPECT_EQ(values_of(plan.row_token), (std::vector<int32_t>{0, 1, 0, 1, 2, 2}));
  EXPECT_EQ(values_of(plan.row_slot), (std::vector<int32_t>{1, 0, 0, 1, 1, 0}));
  EXPECT_EQ(values_of(plan.slot_row), (std::vector<int32_t>{2, 0, 1, 3, 5, 4}));
}

// A routing of M tokens over E experts by ref::moe_route (softmax, renormalised) on random logits.
struct Routing {
  int64_t M, E, k;
  ref::MoeRouting routed;
  Tensor indices, weights;
  Routing(int64_t m, int64_t e, int64_t top_k, Rng& rng) : M(m), E(e), k(top_k) {
    ops::MoeRouterOptions o;
    o.top_k = k;
    o.norm_topk_prob = true;
    routed = ref::moe_route(randn(rng, M * E, 2.0), {}, M, E, o);
    for (double& w : routed.weights) w = double(float(w));
    indices = i32_tensor(routed.indices, {M, k});
    weights = make_strided({M, k}, routed.weights, 2);
  }
};

TEST(OpsMoePlan, GroupsTokensByExpertInOrder) {
  Rng rng(300);
  for (auto [M, E, k] : {std::tuple{23, 4, 1}, {23, 8, 2}, {41, 16, 4}, {1, 4, 4}}) {
    SCOPED_TRACE(::testing::Message() << M << " tokens, " << E << " experts, top " << k);
    const Routing routing(M, E, k, rng);
    const MoePlan plan = plan_of(routing.indices, E);
    const std::vector<int32_t> offsets = values_of(plan.expert_offsets), row_token = values_of(plan.row_token),
                               row_slot = values_of(plan.row_slot), slot_row = values_of(plan.slot_row);
    EXPECT_EQ(offsets.front(), 0);
    EXPECT_EQ(offsets.back(), M * k);
    for (int64_t e = 0; e < E; ++e) {
      EXPECT_EQ(offsets[e + 1] - offsets[e],
                std::count(routing.routed.indices.begin(), routing.routed.indices.end(), e));
      for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
        EXPECT_EQ(routing.routed.indices[row_token[r] * k + row_slot[r]], e) << "row " << r;
        if (r > offsets[e]) {
          EXPECT_LT(row_token[r - 1], row_token[r]) << "row " << r;
        }
      }
    }
    for (int64_t t = 0; t < M; ++t)
      for (int64_t s = 0; s < k; ++s) {
        const int32_t r = slot_row[t * k + s];
        ASSERT_TRUE(r >= 0 && r < M * k);
        EXPECT_EQ(row_token[r], t);
        EXPECT_EQ(row_slot[r], s);
      }
  }
}

// Experts y = W_e x (W_e [D_out, D]) on the tokens routed to them.
struct LinearExperts {
  int64_t D, D_out;
  std::vector<Vec> w;
  std::vector<Tensor> w_t;
  LinearExperts(int64_t n_experts, int64_t d, int64_t d_out, Rng& rng) : D(d), D_out(d_out) {
    for (int64_t e = 0; e < n_experts; ++e) {
      w.push_back(randn(rng, D_out * D, 0.3));
      w_t.push_back(make({D_out, D}, w.back()));
    }
  }
  // [M, k, D_out]: expert I[t, s] applied to x[t].
  Vec outputs(const Routing& r, const Vec& x) const {
    Vec out(size_t(r.M * r.k * D_out));
    for (int64_t t = 0; t < r.M; ++t)
      for (int64_t s = 0; s < r.k; ++s) {
        const Vec y = ref::linear(Vec(x.begin() + t * D, x.begin() + (t + 1) * D), w[r.routed.indices[t * r.k + s]], {},
                                  1, D_out, D);
        std::copy(y.begin(), y.end(), out.begin() + (t * r.k + s) * D_out);
      }
    return out;
  }
};

int64_t expert_rows(const MoePlan& plan, int64_t e, int64_t* first) {
  const int32_t* offsets = plan.expert_offsets.data<int32_t>();
  *first = offsets[e];
  return offsets[e + 1] - offsets[e];
}

struct RoundTripCase {
  int64_t M, E, k, D, D_out;
};

class OpsMoeDispatch : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(OpsMoeDispatch, MatchesReferenceCombine) {
  const RoundTripCase c = GetParam();
  Rng rng(400 + c.E + c.k);
  const Routing routing(c.M, c.E, c.k, rng);
  const LinearExperts experts(c.E, c.D, c.D_out, rng);
  const Vec x = randn(rng, c.M * c.D);
  const Vec want = ref::moe_combine(experts.outputs(routing, x), routing.routed.weights, c.M, c.k, c.D_out);

  const MoePlan plan = plan_of(routing.indices, c.E);
  const Tensor x_t = test::from_vec(x, {c.M, c.D}, /*strided=*/true);
  // All experts' inputs gathered into one buffer at once; each expert runs on its slice of it.
  Tensor inputs = test::nan_tensor({c.M * c.k, c.D}, /*strided=*/true);
  ops::moe_gather(x_t, plan, 0, inputs);
  Tensor outputs = test::nan_tensor({c.M * c.k, c.D_out});
  Tensor y_per_expert = test::from_vec(Vec(size_t(c.M * c.D_out), 0.0), {c.M, c.D_out}, /*strided=*/true);
  for (int64_t e = 0; e < c.E; ++e) {
    int64_t first;
    const int64_t n = expert_rows(plan, e, &first);
    if (n == 0) continue;
    // One expert's gather into its own buffer gives the same rows.
    Tensor own = test::nan_tensor({n, c.D});
    ops::moe_gather(x_t, plan, first, own);
    EXPECT_EQ(to_vec(own), to_vec(inputs.slice(0, first, n))) << "expert " << e;
    Tensor out_e = outputs.slice(0, first, n);
    ops::linear(inputs.slice(0, first, n), experts.w_t[e], Tensor(), out_e);
    ops::moe_scatter_add(out_e, routing.weights, plan, first, y_per_expert);
  }
  EXPECT_LT(test::max_rel_err(test::to_vec(y_per_expert), want), 1e-5);

  // One call over every dispatch row adds exactly what the per-expert calls did.
  Tensor y_at_once = Tensor::zeros({c.M, c.D_out});
  ops::moe_scatter_add(outputs, routing.weights, plan, 0, y_at_once);
  EXPECT_EQ(to_vec(y_at_once), to_vec(y_per_expert));
}

// Gradients through the whole mixture: d(expert outputs) and d(weights) from
// moe_scatter_add_backward, d(expert inputs) from linear_backward, dx from moe_scatter_add (the
// backward of the gather), each against central differences of the reference combine.
TEST_P(OpsMoeDispatch, BackwardMatchesFiniteDifferences) {
  const RoundTripCase c = GetParam();
  Rng rng(500 + c.E + c.k);
  Routing routing(c.M, c.E, c.k, rng);
  const LinearExperts experts(c.E, c.D, c.D_out, rng);
  Vec x = randn(rng, c.M * c.D);
  const Vec wy = randn(rng, c.M * c.D_out);
  Vec expert_out = experts.outputs(routing, x);
  for (double& v : expert_out) v = double(float(v));
  Vec& weights = routing.routed.weights;
  auto loss = [&] { return dot(wy, ref::moe_combine(expert_out, weights, c.M, c.k, c.D_out)); };
  const Vec want_out = central_diff(expert_out, loss), want_weights = central_diff(weights, loss);
  auto loss_of_x = [&] { return dot(wy, ref::moe_combine(experts.outputs(routing, x), weights, c.M, c.k, c.D_out)); };
  const Vec want_x = central_diff(x, loss_of_x);

  const MoePlan plan = plan_of(routing.indices, c.E);
  const std::vector<int32_t> row_token = values_of(plan.row_token), row_slot = values_of(plan.row_slot);
  const int64_t rows = c.M * c.k;
  Vec dispatched_out(size_t(rows * c.D_out));  // expert_out in dispatch-row order
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(expert_out.begin() + (row_token[r] * c.k + row_slot[r]) * c.D_out, c.D_out,
                dispatched_out.begin() + r * c.D_out);
  const Tensor outputs = make({rows, c.D_out}, dispatched_out), dy = make_strided({c.M, c.D_out}, wy, 3);
  const Tensor x_t = make({c.M, c.D}, x);
  Tensor inputs = Tensor::empty({rows, c.D});
  ops::moe_gather(x_t, plan, 0, inputs);
  Tensor doutputs = test::nan_tensor({rows, c.D_out}, /*strided=*/true);
  Tensor dweights = test::nan_tensor({c.M, c.k}, /*strided=*/true);
  Tensor dinputs = Tensor::empty({rows, c.D});
  Tensor dx = Tensor::zeros({c.M, c.D});
  for (int64_t e = 0; e < c.E; ++e) {
    int64_t first;
    const int64_t n = expert_rows(plan, e, &first);
    if (n == 0) continue;
    Tensor dout_e = doutputs.slice(0, first, n), din_e = dinputs.slice(0, first, n);
    ops::moe_scatter_add_backward(outputs.slice(0, first, n), routing.weights, plan, first, dy, &dout_e, &dweights);
    ops::linear_backward(inputs.slice(0, first, n), experts.w_t[e], dout_e, &din_e, nullptr, nullptr);
    ops::moe_scatter_add(din_e, Tensor(), plan, first, dx);
  }
  Vec want_dispatched(size_t(rows * c.D_out));
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(want_out.begin() + (row_token[r] * c.k + row_slot[r]) * c.D_out, c.D_out,
                want_dispatched.begin() + r * c.D_out);
  EXPECT_GRAD_NEAR(to_vec(doutputs), want_dispatched, 1e-6, "expert outputs");
  EXPECT_GRAD_NEAR(to_vec(dweights), want_weights, 1e-5, "weights");
  EXPECT_GRAD_NEAR(to_vec(dx), want_x, 1e-5, "x");

  // In place (drows over rows), without weights (the gradient of an unweighted scatter-add is a gather).
  Tensor in_place = outputs.clone();
  ops::moe_scatter_add_backward(in_place, Tensor(), plan, 0, dy, &in_place, nullptr);
  Tensor gathered = Tensor::empty({rows, c.D_out});
  ops::moe_gather(dy, plan, 0, gathered);
  EXPECT_EQ(to_vec(in_place), to_vec(gathered));
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsMoeDispatch,
                         ::testing::Values(RoundTripCase{23, 4, 1, 19, 13}, RoundTripCase{23, 8, 2, 19, 13},
                                           RoundTripCase{17, 16, 4, 7, 300}, RoundTripCase{3, 16, 2, 5, 3}),
                         ssm::testing::CaseIndexName());

// Rows or columns spread over threads give bit for bit what one thread gives.
TEST(OpsMoeDispatch, ThreadCountDoesNotChangeResults) {
  Rng rng(600);
  const int64_t M = 257, E = 8, k = 2, D = 640;
  const Routing routing(M, E, k, rng);
  const MoePlan plan = plan_of(routing.indices, E);
  const Tensor x = make({M, D}, randn(rng, M * D)), outputs = make({M * k, D}, randn(rng, M * k * D));
  Vec gathered[2], y[2], doutputs[2], dweights[2];
  for (int threads : {1, 3}) {
    const test::ScopedThreads scoped(threads);
    Tensor gathered_t = Tensor::empty({M * k, D}), y_t = Tensor::zeros({M, D});
    Tensor doutputs_t = Tensor::empty({M * k, D}), dweights_t = Tensor::empty({M, k});
    ops::moe_gather(x, plan, 0, gathered_t);
    ops::moe_scatter_add(outputs, routing.weights, plan, 0, y_t);
    ops::moe_scatter_add_backward(outputs, routing.weights, plan, 0, x, &doutputs_t, &dweights_t);
    gathered[threads > 1] = to_vec(gathered_t);
    y[threads > 1] = to_vec(y_t);
    doutputs[threads > 1] = to_vec(doutputs_t);
    dweights[threads > 1] = to_vec(dweights_t);
  }
  EXPECT_EQ(gathered[0], gathered[1]);
  EXPECT_EQ(y[0], y[1]);
  EXPECT_EQ(doutputs[0], doutputs[1]);
  EXPECT_EQ(dweights[0], dweights[1]);
}

TEST(OpsMoeDispatch, RejectsBadInput) {
  MoePlan plan = MoePlan::allocate(3, 2, 4);
  test::expect_error(
      [&] {
        ops::moe_plan(i32_tensor({2, 0, 1, 1, 3, 2}, {3, 2}), plan);
      },
      {"moe_plan", "token 1 is routed to expert 1 twice"});
  test::expect_error(
      [&] {
        ops::moe_plan(i32_tensor({2, 0, 1, 4, 3, 2}, {3, 2}), plan);
      },
      {"moe_plan", "expert id 4 of token 1 is outside [0, 4)"});
  test::expect_error(
      [&] {
        ops::moe_plan(i32_tensor({2, 0, 1, 3}, {2, 2}), plan);
      },
      {"moe_plan", "indices must be contiguous I32 [3, 2]", "got [2, 2] I32"});
  ops::moe_plan(i32_tensor({2, 0, 1, 3, 3, 2}, {3, 2}), plan);
  const Tensor x = Tensor::zeros({3, 5});
  Tensor out = Tensor::empty({3, 5});
  test::expect_error([&] { ops::moe_gather(x, plan, 4, out); },
                     {"moe_gather", "dispatch rows [4, 7) are outside the plan's 6 rows"});
  test::expect_error(
      [&] {
        ops::moe_gather(Tensor::zeros({4, 5}), plan, 0, out);
      },
      {"moe_gather", "x must be F32 rows [3, D]", "got [4, 5]"});
  Tensor y = Tensor::zeros({3, 5}), dweights = Tensor::empty({3, 2});
  test::expect_error(
      [&] {
        ops::moe_scatter_add(out, Tensor::zeros({3, 3}), plan, 0, y);
      },
      {"moe_scatter_add", "weights must be F32 rows [3, 2], got [3, 3]"});
  test::expect_error([&] { ops::moe_scatter_add_backward(out, Tensor(), plan, 0, y, nullptr, &dweights); },
                     {"moe_scatter_add_backward", "dweights asked for without weights"});
  plan.row_token.data<int32_t>()[1] = 3;  // a damaged plan is an error, not a write out of bounds
  test::expect_error([&] { ops::moe_scatter_add(out, Tensor(), plan, 0, y); },
                     {"moe_scatter_add", "dispatch row 1 names token 3"});
}

}  // namespace
}  // namespace ssm
