#include "ops/ref/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ssm::ref {

double cross_entropy(const std::vector<double>& hidden, const std::vector<double>& weight,
                     const std::vector<int32_t>& targets, int64_t M, int64_t D, int64_t V, double logit_soft_cap) {
  SSM_CHECK(int64_t(hidden.size()) == M * D && int64_t(weight.size()) == V * D && int64_t(targets.size()) == M,
            "ref::cross_entropy: sizes hidden {} weight {} targets {} do not match M {} D {} V {}", hidden.size(),
            weight.size(), targets.size(), M, D, V);
  std::vector<double> logits(static_cast<size_t>(V));
  double total = 0.0;
  int64_t count = 0;
  for (int64_t i = 0; i < M; ++i) {
    const int32_t t = targets[size_t(i)];
    if (t < 0) continue;
    SSM_CHECK(t < V, "ref::cross_entropy: target {} outside [0, {})", t, V);
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      double s = 0.0;
      for (int64_t d = 0; d < D; ++d) s += hidden[size_t(i * D + d)] * weight[size_t(v * D + d)];
      if (logit_soft_cap > 0) s = logit_soft_cap * std::tanh(s / logit_soft_cap);
      logits[size_t(v)] = s;
      mx = std::max(mx, s);
    }
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[size_t(v)] - mx);
    total += mx + std::log(sum) - logits[size_t(t)];
    ++count;
  }
  return count ? total / double(count) : 0.0;
}

}  // namespace ssm::ref
