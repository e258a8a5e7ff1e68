// moe_route_backward against central differences of the weights of ref::moe_route. The logits are
// drawn with well separated selection scores, so that the top-k set (and the kept groups) stay the
// same under the perturbation; the test checks that they do.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <utility>
#include <vector>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/ref/moe.h"
#include "ops/test_backward_util.h"
#include "ops/test_threads.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace ssm::testing;
using ops::MoeRouterOptions;
using ops::MoeScoring;

struct RouteGradCase {
  MoeScoring scoring;
  int64_t experts, top_k, n_group, topk_group;
  bool norm;
  float scale;
};

std::vector<int64_t> permutation(Rng& rng, int64_t n) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t(0));
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.below(uint64_t(i + 1))]);
  return p;
}

class BackwardMoeRoute : public ::testing::TestWithParam<RouteGradCase> {};

TEST_P(BackwardMoeRoute, MatchesFiniteDifferences) {
  const RouteGradCase c = GetParam();
  MoeRouterOptions o;
  o.scoring = c.scoring;
  o.top_k = c.top_k;
  o.n_group = c.n_group;
  o.topk_group = c.topk_group;
  o.norm_topk_prob = c.norm;
  o.routed_scaling_factor = c.scale;
  const int64_t M = 5, E = c.experts, k = c.top_k;
  const bool sigmoid = c.scoring == MoeScoring::Sigmoid;
  Rng rng(200 + E + k + c.n_group + c.norm);
  Vec logits(size_t(M * E)), bias;
  if (sigmoid) bias = randu(rng, E, -0.1, 0.1);
  for (int64_t t = 0; t < M; ++t) {
    const std::vector<int64_t> rank = permutation(rng, E);
    for (int64_t e = 0; e < E; ++e) {
      const double jitter = double(rng.uniform());
      if (sigmoid) {  // selection scores s + bias 0.04 apart: s = choice - bias, logits = logit(s)
        const double s = 0.15 + 0.04 * double(rank[e]) + 0.01 * jitter - bias[e];
        logits[t * E + e] = double(float(std::log(s / (1.0 - s))));
      } else {
        logits[t * E + e] = double(float(0.4 * double(rank[e]) + 0.05 * jitter - 2.0));
      }
    }
  }
  const Vec g = randn(rng, M * k);
  const std::vector<int32_t> base = ref::moe_route(logits, bias, M, E, o).indices;
  int64_t selection_changes = 0;
  auto loss = [&] {
    const ref::MoeRouting routed = ref::moe_route(logits, bias, M, E, o);
    selection_changes += routed.indices != base;
    return dot(g, routed.weights);
  };
  const Vec want = central_diff(logits, loss);
  ASSERT_EQ(selection_changes, 0) << "the perturbation changed the top-k set";

  Tensor indices = Tensor::empty({M, k}, DType::I32);
  std::copy(base.begin(), base.end(), indices.data<int32_t>());
  const Tensor logits_t = make_strided({M, E}, logits, 3);
  Tensor dlogits = test::nan_tensor({M, E}, /*strided=*/true);
  ops::moe_route_backward(logits_t, indices, o, make({M, k}, g), dlogits);
  EXPECT_GRAD_NEAR(to_vec(dlogits), want, 2e-5, "logits");
  ops::moe_route_backward(logits_t, indices, o, make({M, k}, g), dlogits, /*accumulate_dlogits=*/true);
  Vec twice = want;
  for (double& v : twice) v *= 2.0;
  EXPECT_GRAD_NEAR(to_vec(dlogits), twice, 2e-5, "logits accumulated");
}

INSTANTIATE_TEST_SUITE_P(Routers, BackwardMoeRoute,
                         ::testing::Values(RouteGradCase{MoeScoring::Softmax, 4, 1, 1, 1, false, 1.0f},
                                           RouteGradCase{MoeScoring::Softmax, 8, 2, 1, 1, false, 1.0f},
                                           RouteGradCase{MoeScoring::Softmax, 8, 2, 1, 1, true, 1.0f},
                                           RouteGradCase{MoeScoring::Softmax, 16, 4, 1, 1, true, 2.5f},
                                           RouteGradCase{MoeScoring::Sigmoid, 4, 1, 1, 1, true, 1.0f},
                                           RouteGradCase{MoeScoring::Sigmoid, 8, 2, 1, 1, false, 1.0f},
                                           RouteGradCase{MoeScoring::Sigmoid, 8, 2, 2, 1, true, 2.5f},
                                           RouteGradCase{MoeScoring::Sigmoid, 16, 4, 4, 2, true, 1.0f},
                                           RouteGradCase{MoeScoring::Sigmoid, 16, 4, 1, 1, false, 2.5f}),
                         ssm::testing::CaseIndexName());

// Tokens spread over threads give what one thread gives.
TEST(BackwardMoeRoute, ThreadCountDoesNotChangeResults) {
  for (MoeScoring scoring : {MoeScoring::Softmax, MoeScoring::Sigmoid}) {
    MoeRouterOptions o;
    o.scoring = scoring;
    o.top_k = 4;
    o.norm_topk_prob = true;
    const int64_t M = 601, E = 16;
    Rng rng(250);
    const Tensor logits = make({M, E}, randn(rng, M * E, 2.0)), dweights = make({M, 4}, randn(rng, M * 4));
    Tensor indices = Tensor::empty({M, 4}, DType::I32), weights = Tensor::empty({M, 4});
    ops::moe_route(logits, Tensor(), o, indices, weights);
    Vec dlogits[2];
    for (int threads : {1, 3}) {
      const test::ScopedThreads scoped(threads);
      Tensor d = Tensor::empty({M, E});
      ops::moe_route_backward(logits, indices, o, dweights, d);
      dlogits[threads > 1] = to_vec(d);
    }
    EXPECT_EQ(dlogits[0], dlogits[1]);
  }
}

TEST(BackwardMoeRoute, RejectsBadInput) {
  MoeRouterOptions o;  // Softmax, top_k 2
  const Tensor logits = Tensor::zeros({3, 4}), dweights = Tensor::zeros({3, 2});
  Tensor dlogits = Tensor::empty({3, 4});
  Tensor indices = Tensor::zeros({3, 2}, DType::I32);
  indices.data<int32_t>()[3] = 4;
  test::expect_error([&] { ops::moe_route_backward(logits, indices, o, dweights, dlogits); },
                     {"moe_route_backward", "expert id 4 of token 1 is outside [0, 4)"});
  o.top_k = 5;
  test::expect_error([&] { ops::moe_route_backward(logits, indices, o, dweights, dlogits); },
                     {"moe_route_backward", "top_k 5 must be in [1, 4]"});
}

}  // namespace
}  // namespace ssm
