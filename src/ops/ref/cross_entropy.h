// Double-precision oracle for ops::cross_entropy (the head fused with the loss).
//   logits = hidden[M,D] · weight[V,D]ᵀ;  loss = mean over rows with target ≥ 0 of
//   logsumexp(logits_row) − logits_row[target].  Returns 0 when no row counts. With logit_soft_cap > 0
//   the logits are first capped: cap · tanh(logit / cap).
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

double cross_entropy(const std::vector<double>& hidden, const std::vector<double>& weight,
                     const std::vector<int32_t>& targets, int64_t M, int64_t D, int64_t V, double logit_soft_cap = 0);

}  // namespace ssm::ref
