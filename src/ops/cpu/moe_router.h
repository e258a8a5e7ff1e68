// What ops::moe_route and ops::moe_route_backward share: the option checks, the router scores of one
// token, and the ranking order of the top-k selections.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

inline void check_router_options(const char* op, const MoeRouterOptions& o, int64_t n_experts) {
  SSM_CHECK(o.top_k >= 1 && o.top_k <= n_experts, "{}: top_k {} must be in [1, {}] (the number of experts)", op,
            o.top_k, n_experts);
  SSM_CHECK(o.n_group >= 1 && n_experts % o.n_group == 0, "{}: n_group {} does not divide the {} experts", op,
            o.n_group, n_experts);
  SSM_CHECK(o.topk_group >= 1 && o.topk_group <= o.n_group, "{}: topk_group {} must be in [1, n_group = {}]", op,
            o.topk_group, o.n_group);
  SSM_CHECK(o.scoring == MoeScoring::Sigmoid || o.n_group == 1,
            "{}: group-limited routing (n_group {}) is defined for the Sigmoid router only", op, o.n_group);
  const int64_t group_size = n_experts / o.n_group;
  if (o.topk_group < o.n_group) {
    SSM_CHECK(group_size >= 2, "{}: groups of {} expert cannot be scored by their two largest scores", op, group_size);
    SSM_CHECK(o.top_k <= o.topk_group * group_size,
              "{}: top_k {} exceeds the {} experts of the topk_group = {} groups that are kept", op, o.top_k,
              o.topk_group * group_size, o.topk_group);
  }
}

// Softmax or sigmoid of one token's logits, in float as transformers computes them.
inline void router_scores(MoeScoring scoring, const float* logits, int64_t n_experts, float* scores) {
  if (scoring == MoeScoring::Sigmoid) {
    for (int64_t e = 0; e < n_experts; ++e) scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
    return;
  }
  float max_logit = logits[0];
  for (int64_t e = 1; e < n_experts; ++e) max_logit = std::fmax(max_logit, logits[e]);
  float sum = 0.0f;
  for (int64_t e = 0; e < n_experts; ++e) {
    scores[e] = std::exp(logits[e] - max_logit);
    sum += scores[e];
  }
  for (int64_t e = 0; e < n_experts; ++e) scores[e] /= sum;
}

// The top-k order, a total order so that every selection is reproducible: NaN first (as in
// torch.topk), then larger values, and equal values by lower index.
inline bool ranks_before(float value_a, int64_t index_a, float value_b, int64_t index_b) {
  const bool nan_a = std::isnan(value_a), nan_b = std::isnan(value_b);
  if (nan_a || nan_b) return nan_a && (!nan_b || index_a < index_b);
  return value_a > value_b || (value_a == value_b && index_a < index_b);
}

}  // namespace ssm::ops::detail
