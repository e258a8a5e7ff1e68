// Double-precision oracles for the mixture-of-experts ops: the router (ops::moe_route) written the
// way transformers writes it, and the combine that dispatch + experts + scatter-add must reproduce.
// Pure functions of their inputs.
//
// Router, per token (contiguous row-major logits [M, E]; correction_bias [E] or empty):
//   Softmax: p = softmax(logits); experts ordered by p, largest first, ties by lower index (a
//   stable sort); I = the first top_k; w = p[I] (/ Σ p[I] when norm_topk_prob).
//   Sigmoid: s = σ(logits); c = s + bias; when topk_group < n_group, each group of E / n_group
//   experts is scored by the sum of its two largest c, groups are ordered like experts and the
//   experts outside the first topk_group groups get c = −∞; I = the first top_k experts ordered by c;
//   w = s[I] (/ (Σ s[I] + 1e-20) when norm_topk_prob).
//   Then w *= routed_scaling_factor. Returns indices and weights [M, top_k], slots in that order.
// Combine: y[t, :] = Σ_s weights[t, s] · expert_out[t, s, :]  (expert_out [M, k, D], the output
// of expert indices[t, s] for token t).
#pragma once
#include <cstdint>
#include <vector>

#include "ops/ops.h"  // ops::MoeRouterOptions

namespace ssm::ref {

struct MoeRouting {
  std::vector<int32_t> indices;  // [M, top_k]
  std::vector<double> weights;   // [M, top_k]
};

MoeRouting moe_route(const std::vector<double>& logits, const std::vector<double>& correction_bias, int64_t M,
                     int64_t E, const ops::MoeRouterOptions& options);

std::vector<double> moe_combine(const std::vector<double>& expert_out, const std::vector<double>& weights, int64_t M,
                                int64_t k, int64_t D);

}  // namespace ssm::ref
