// ops::moe_route against the double reference ref::moe_route (transformers' Mixtral/Jamba/Qwen-MoE
// softmax router and DeepSeek-V3/Nemotron-H sigmoid router), its tie order, and its bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/ops.h"
#include "ops/ref/moe.h"
#include "ops/test_backward_util.h"  // CaseIndexName
#include "ops/test_threads.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using ops::MoeRouterOptions;
using ops::MoeScoring;

struct RouteCase {
  MoeScoring scoring;
  int64_t experts, top_k, n_group, topk_group;
  bool norm;
  float scale;
};

MoeRouterOptions options_of(const RouteCase& c) {
  MoeRouterOptions o;
  o.scoring = c.scoring;
  o.top_k = c.top_k;
  o.n_group = c.n_group;
  o.topk_group = c.topk_group;
  o.norm_topk_prob = c.norm;
  o.routed_scaling_factor = c.scale;
  return o;
}

struct Routed {
  std::vector<int32_t> indices;
  test::Vec weights;
};

// Runs ops::moe_route on strided NaN-padded logits, into indices poisoned with -1 and NaN weights.
Routed route(const test::Vec& logits, const test::Vec& bias, int64_t M, int64_t E, const MoeRouterOptions& o) {
  const Tensor logits_t = test::from_vec(logits, {M, E}, /*strided=*/true);
  const Tensor bias_t = bias.empty() ? Tensor() : test::from_vec(bias, {E});
  Tensor indices = Tensor::empty({M, o.top_k}, DType::I32);
  std::fill_n(indices.data<int32_t>(), M * o.top_k, -1);
  Tensor weights = test::nan_tensor({M, o.top_k}, /*strided=*/true);
  ops::moe_route(logits_t, bias_t, o, indices, weights);
  const int32_t* ip = indices.data<int32_t>();
  return {std::vector<int32_t>(ip, ip + M * o.top_k), test::to_vec(weights)};
}

// Number of tokens whose expert sets differ between two routings.
int64_t rows_differing(const std::vector<int32_t>& a, const std::vector<int32_t>& b, int64_t k) {
  int64_t count = 0;
  for (size_t t = 0; t * k < a.size(); ++t)
    count += !std::equal(a.begin() + t * k, a.begin() + (t + 1) * k, b.begin() + t * k);
  return count;
}

class OpsMoeRoute : public ::testing::TestWithParam<RouteCase> {};

TEST_P(OpsMoeRoute, MatchesReference) {
  const RouteCase c = GetParam();
  const MoeRouterOptions o = options_of(c);
  const int64_t M = 37, E = c.experts;
  Rng rng(100 + E * 10 + c.top_k + c.n_group);
  const test::Vec logits = test::uniform_vec(rng, M * E, -3, 3);
  const bool sigmoid = c.scoring == MoeScoring::Sigmoid;
  // A correction bias of the size of the spread of the sigmoid scores, so that it reorders them.
  const test::Vec bias = sigmoid ? test::uniform_vec(rng, E, -0.3, 0.3) : test::Vec{};

  const ref::MoeRouting want = ref::moe_route(logits, bias, M, E, o);
  const Routed got = route(logits, bias, M, E, o);
  EXPECT_EQ(got.indices, want.indices);
  EXPECT_LT(test::max_rel_err(got.weights, want.weights), 1e-6);

  if (sigmoid) {
    // The test can tell biased from unbiased selection, and grouped from ungrouped.
    EXPECT_GT(rows_differing(want.indices, ref::moe_route(logits, {}, M, E, o).indices, c.top_k), 0);
    if (c.topk_group < c.n_group) {
      MoeRouterOptions ungrouped = o;
      ungrouped.n_group = ungrouped.topk_group = 1;
      EXPECT_GT(rows_differing(want.indices, ref::moe_route(logits, bias, M, E, ungrouped).indices, c.top_k), 0);
    }
    const Routed unbiased = route(logits, {}, M, E, o);  // correction_bias absent = zeros
    const ref::MoeRouting want_unbiased = ref::moe_route(logits, {}, M, E, o);
    EXPECT_EQ(unbiased.indices, want_unbiased.indices);
    EXPECT_LT(test::max_rel_err(unbiased.weights, want_unbiased.weights), 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(Routers, OpsMoeRoute,
                         ::testing::Values(RouteCase{MoeScoring::Softmax, 4, 1, 1, 1, false, 1.0f},
                                           RouteCase{MoeScoring::Softmax, 4, 2, 1, 1, true, 1.0f},
                                           RouteCase{MoeScoring::Softmax, 4, 4, 1, 1, true, 1.0f},
                                           RouteCase{MoeScoring::Softmax, 8, 2, 1, 1, false, 1.0f},
                                           RouteCase{MoeScoring::Softmax, 8, 4, 1, 1, true, 1.0f},
                                           RouteCase{MoeScoring::Softmax, 16, 1, 1, 1, false, 1.0f},
                                           RouteCase{MoeScoring::Softmax, 16, 4, 1, 1, true, 2.5f},
                                           RouteCase{MoeScoring::Sigmoid, 4, 1, 1, 1, false, 1.0f},
                                           RouteCase{MoeScoring::Sigmoid, 4, 2, 2, 1, true, 1.0f},
                                           RouteCase{MoeScoring::Sigmoid, 8, 1, 4, 1, false, 1.0f},
                                           RouteCase{MoeScoring::Sigmoid, 8, 2, 2, 1, true, 2.5f},
                                           RouteCase{MoeScoring::Sigmoid, 8, 4, 4, 2, true, 1.0f},
                                           RouteCase{MoeScoring::Sigmoid, 8, 4, 1, 1, false, 1.0f},
                                           RouteCase{MoeScoring::Sigmoid, 16, 1, 4, 3, true, 1.0f},
                                           RouteCase{MoeScoring::Sigmoid, 16, 2, 2, 1, false, 1.0f},
                                           RouteCase{MoeScoring::Sigmoid, 16, 4, 4, 2, true, 2.5f},
                                           RouteCase{MoeScoring::Sigmoid, 16, 4, 1, 1, true, 1.0f}),
                         ssm::testing::CaseIndexName());

// Tokens spread over threads (each with its own scratch) give what one thread gives, and the reference.
TEST(OpsMoeRoute, ThreadCountDoesNotChangeResults) {
  MoeRouterOptions o;
  o.scoring = MoeScoring::Sigmoid;
  o.top_k = 4;
  o.n_group = 4;
  o.topk_group = 2;
  o.norm_topk_prob = true;
  o.routed_scaling_factor = 2.5f;
  const int64_t M = 601, E = 16;
  Rng rng(150);
  const test::Vec logits = test::uniform_vec(rng, M * E, -3, 3), bias = test::uniform_vec(rng, E, -0.3, 0.3);
  Routed got[2];
  for (int threads : {1, 3}) {
    const test::ScopedThreads scoped(threads);
    got[threads > 1] = route(logits, bias, M, E, o);
  }
  EXPECT_EQ(got[0].indices, got[1].indices);
  EXPECT_EQ(got[0].weights, got[1].weights);
  const ref::MoeRouting want = ref::moe_route(logits, bias, M, E, o);
  EXPECT_EQ(got[1].indices, want.indices);
  EXPECT_LT(test::max_rel_err(got[1].weights, want.weights), 1e-6);
}

// Equal scores go to the lower expert (and group) index first, in the kernel as in the reference.
TEST(OpsMoeRoute, TiesGoToTheLowerIndex) {
  MoeRouterOptions softmax;
  softmax.top_k = 4;
  const test::Vec logits = {0, 0, 0, 0, 0, 0, 0, 0,   // all equal
                            1, 3, 3, 0, 3, 1, 2, 2};  // 3 at 1, 2, 4; then 2 at 6, 7
  const Routed got = route(logits, {}, 2, 8, softmax);
  EXPECT_EQ(got.indices, (std::vector<int32_t>{0, 1, 2, 3, 1, 2, 4, 6}));
  EXPECT_EQ(got.indices, ref::moe_route(logits, {}, 2, 8, softmax).indices);
  for (int j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(float(got.weights[j]), 0.125f);

  MoeRouterOptions sigmoid;
  sigmoid.scoring = MoeScoring::Sigmoid;
  sigmoid.top_k = 2;
  sigmoid.n_group = 4;
  sigmoid.topk_group = 2;
  sigmoid.norm_topk_prob = true;
  const test::Vec flat(8, 0.0);
  const test::Vec bias = {0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5};  // groups 2 and 3 tie, above groups 0 and 1
  for (const test::Vec& b : {test::Vec{}, bias}) {
    const Routed routed = route(flat, b, 1, 8, sigmoid);
    EXPECT_EQ(routed.indices, b.empty() ? (std::vector<int32_t>{0, 1}) : (std::vector<int32_t>{4, 5}));
    EXPECT_EQ(routed.indices, ref::moe_route(flat, b, 1, 8, sigmoid).indices);
    EXPECT_FLOAT_EQ(float(routed.weights[0]), 0.5f);  // σ(0) renormalised over two equal scores
  }
}

// NaN ranks above every number, as in torch.topk.
TEST(OpsMoeRoute, NanRanksFirst) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  MoeRouterOptions sigmoid;
  sigmoid.scoring = MoeScoring::Sigmoid;
  sigmoid.top_k = 2;
  const Routed got = route({0.1, nan, 0.5, 0.2}, {}, 1, 4, sigmoid);
  EXPECT_EQ(got.indices, (std::vector<int32_t>{1, 2}));
  EXPECT_TRUE(std::isnan(got.weights[0]));
}

TEST(OpsMoeRoute, RejectsBadOptions) {
  const Tensor logits = Tensor::zeros({3, 8});
  auto expect_route_error = [&](MoeRouterOptions o, const Tensor& bias, std::initializer_list<std::string> parts) {
    Tensor indices = Tensor::empty({3, o.top_k}, DType::I32), weights = Tensor::empty({3, o.top_k});
    test::expect_error([&] { ops::moe_route(logits, bias, o, indices, weights); }, parts);
  };
  MoeRouterOptions o;
  o.scoring = MoeScoring::Sigmoid;
  o.top_k = 9;
  expect_route_error(o, Tensor(), {"moe_route", "top_k 9 must be in [1, 8]"});
  o.top_k = 2;
  o.n_group = 3;
  expect_route_error(o, Tensor(), {"moe_route", "n_group 3 does not divide the 8 experts"});
  o.n_group = 2;
  o.topk_group = 3;
  expect_route_error(o, Tensor(), {"moe_route", "topk_group 3 must be in [1, n_group = 2]"});
  o.n_group = 4;
  o.topk_group = 1;
  o.top_k = 3;
  expect_route_error(o, Tensor(), {"moe_route", "top_k 3 exceeds the 2 experts of the topk_group = 1 groups"});
  o.n_group = 8;
  o.top_k = 1;
  expect_route_error(o, Tensor(), {"moe_route", "groups of 1 expert"});
  MoeRouterOptions softmax;
  softmax.n_group = 2;
  expect_route_error(softmax, Tensor(), {"moe_route", "n_group 2", "Sigmoid router only"});
  expect_route_error(MoeRouterOptions{}, Tensor::zeros({8}), {"moe_route", "correction_bias", "Sigmoid router only"});
  MoeRouterOptions bias_user;
  bias_user.scoring = MoeScoring::Sigmoid;
  expect_route_error(bias_user, Tensor::zeros({7}), {"moe_route", "correction_bias must be F32 [8], got [7]"});
}

TEST(OpsMoeRoute, RejectsBadOutputs) {
  const Tensor logits = Tensor::zeros({3, 8});
  Tensor indices_f32 = Tensor::empty({3, 2}), weights = Tensor::empty({3, 2});
  test::expect_error([&] { ops::moe_route(logits, Tensor(), MoeRouterOptions{}, indices_f32, weights); },
                     {"moe_route", "indices must be contiguous I32 [3, 2], got [3, 2] F32"});
  Tensor indices = Tensor::empty({3, 2}, DType::I32), weights_bad = Tensor::empty({3, 3});
  test::expect_error([&] { ops::moe_route(logits, Tensor(), MoeRouterOptions{}, indices, weights_bad); },
                     {"moe_route", "weights must be F32 rows [3, 2], got [3, 3]"});
}

}  // namespace
}  // namespace ssm
