#include "ops/ref/moe.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace ssm::ref {

namespace {
// Indices of `values`, largest value first, equal values in index order.
std::vector<int64_t> order_descending(const std::vector<double>& values) {
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return values[a] > values[b]; });
  return order;
}
}  // namespace

MoeRouting moe_route(const std::vector<double>& logits, const std::vector<double>& correction_bias, int64_t M,
                     int64_t E, const ops::MoeRouterOptions& options) {
  SSM_CHECK(int64_t(logits.size()) == M * E && (correction_bias.empty() || int64_t(correction_bias.size()) == E),
            "ref::moe_route: sizes logits {} bias {} do not match M {} E {}", logits.size(), correction_bias.size(), M,
            E);
  const int64_t k = options.top_k, n_group = options.n_group, group_size = E / n_group;
  const bool sigmoid = options.scoring == ops::MoeScoring::Sigmoid;
  MoeRouting out{std::vector<int32_t>(size_t(M * k)), std::vector<double>(size_t(M * k))};
  for (int64_t t = 0; t < M; ++t) {
    std::vector<double> score(logits.begin() + t * E, logits.begin() + (t + 1) * E);
    if (sigmoid) {
      for (double& v : score) v = 1.0 / (1.0 + std::exp(-v));
    } else {
      const double max_logit = *std::max_element(score.begin(), score.end());
      double sum = 0.0;
      for (double& v : score) sum += (v = std::exp(v - max_logit));
      for (double& v : score) v /= sum;
    }
    std::vector<double> choice = score;
    for (int64_t e = 0; e < int64_t(correction_bias.size()); ++e) choice[e] += correction_bias[e];
    if (sigmoid && options.topk_group < n_group) {
      std::vector<double> group_score(static_cast<size_t>(n_group));
      for (int64_t g = 0; g < n_group; ++g) {
        std::vector<double> members(choice.begin() + g * group_size, choice.begin() + (g + 1) * group_size);
        std::sort(members.begin(), members.end(), std::greater<>());
        group_score[g] = members[0] + members[1];
      }
      const std::vector<int64_t> group_order = order_descending(group_score);
      std::vector<bool> kept(size_t(n_group), false);
      for (int64_t j = 0; j < options.topk_group; ++j) kept[group_order[j]] = true;
      for (int64_t e = 0; e < E; ++e)
        if (!kept[e / group_size]) choice[e] = -std::numeric_limits<double>::infinity();
    }
    const std::vector<int64_t> order = order_descending(choice);
    double sum = 0.0;
    for (int64_t j = 0; j < k; ++j) sum += score[order[j]];
    const double norm = options.norm_topk_prob ? (sigmoid ? sum + 1e-20 : sum) : 1.0;
    for (int64_t j = 0; j < k; ++j) {
      out.indices[t * k + j] = int32_t(order[j]);
      out.weights[t * k + j] = score[order[j]] / norm * options.routed_scaling_factor;
    }
  }
  return out;
}

std::vector<double> moe_combine(const std::vector<double>& expert_out, const std::vector<double>& weights, int64_t M,
                                int64_t k, int64_t D) {
  SSM_CHECK(int64_t(expert_out.size()) == M * k * D && int64_t(weights.size()) == M * k,
            "ref::moe_combine: sizes expert_out {} weights {} do not match M {} k {} D {}", expert_out.size(),
            weights.size(), M, k, D);
  std::vector<double> y(size_t(M * D), 0.0);
  for (int64_t t = 0; t < M; ++t)
    for (int64_t s = 0; s < k; ++s)
      for (int64_t c = 0; c < D; ++c) y[t * D + c] += weights[t * k + s] * expert_out[(t * k + s) * D + c];
  return y;
}

}  // namespace ssm::ref
