// ops::moe_route on the CPU: tokens spread over threads; per token the scores, the group filter
// (Sigmoid router) and a partial sort of the candidate experts under detail::ranks_before.
#include <algorithm>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "ops/cpu/moe_router.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/ops.h"

namespace ssm::ops {

using detail::describe;

void moe_route(const Tensor& logits, const Tensor& correction_bias, const MoeRouterOptions& options, Tensor& indices,
               Tensor& weights) {
  const char* op = "moe_route";
  SSM_CHECK(detail::is_f32_rows(logits) && logits.dim() == 2 && logits.size(1) >= 1,
            "{}: logits must be F32 rows [M, E], got {}", op, describe(logits));
  const int64_t M = logits.size(0), E = logits.size(1), k = options.top_k;
  detail::check_router_options(op, options, E);
  const bool sigmoid = options.scoring == MoeScoring::Sigmoid;
  if (correction_bias.defined()) {
    SSM_CHECK(sigmoid, "{}: correction_bias is used by the Sigmoid router only", op);
    SSM_CHECK(detail::is_f32_vec(correction_bias, E), "{}: correction_bias must be F32 [{}], got {}", op, E,
              describe(correction_bias));
  }
  SSM_CHECK(
      indices.defined() && indices.dtype() == DType::I32 && indices.is_contiguous() && indices.shape() == Shape({M, k}),
      "{}: indices must be contiguous I32 [{}, {}], got {}", op, M, k, describe(indices));
  SSM_CHECK(detail::is_f32_rows(weights, {M, k}), "{}: weights must be F32 rows [{}, {}], got {}", op, M, k,
            describe(weights));
  if (M == 0) return;

  const float* lp = logits.data<float>();
  const float* bias = correction_bias.defined() ? correction_bias.data<float>() : nullptr;
  int32_t* ip = indices.data<int32_t>();
  float* wp = weights.data<float>();
  const int64_t ldl = logits.row_stride(), ldw = weights.row_stride();
  const int64_t n_group = options.n_group, group_size = E / n_group;
  const bool group_limited = options.topk_group < n_group;

#pragma omp parallel if (M * E >= 4096)
  {
    std::vector<float> scores(static_cast<size_t>(E)), choice(static_cast<size_t>(E)),
        group_score(static_cast<size_t>(n_group));
    std::vector<int64_t> candidates(static_cast<size_t>(E)), groups(static_cast<size_t>(n_group));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < M; ++t) {
      detail::router_scores(options.scoring, lp + t * ldl, E, scores.data());
      for (int64_t e = 0; e < E; ++e) choice[e] = bias ? scores[e] + bias[e] : scores[e];
      auto choice_first = [&](int64_t a, int64_t b) { return detail::ranks_before(choice[a], a, choice[b], b); };

      int64_t n_candidates = E;
      std::iota(candidates.begin(), candidates.end(), int64_t(0));
      if (group_limited) {
        for (int64_t g = 0; g < n_group; ++g) {
          // The two best experts of the group, under the same order as every selection.
          int64_t* first = candidates.data() + g * group_size;
          std::partial_sort(first, first + 2, first + group_size, choice_first);
          group_score[g] = choice[first[0]] + choice[first[1]];
        }
        std::iota(groups.begin(), groups.end(), int64_t(0));
        std::partial_sort(groups.begin(), groups.begin() + options.topk_group, groups.end(), [&](int64_t a, int64_t b) {
          return detail::ranks_before(group_score[a], a, group_score[b], b);
        });
        n_candidates = 0;
        for (int64_t j = 0; j < options.topk_group; ++j)
          for (int64_t e = groups[j] * group_size; e < (groups[j] + 1) * group_size; ++e)
            candidates[n_candidates++] = e;
      }
      std::partial_sort(candidates.begin(), candidates.begin() + k, candidates.begin() + n_candidates, choice_first);

      int32_t* it = ip + t * k;
      float* wt = wp + t * ldw;
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        it[j] = int32_t(candidates[j]);
        wt[j] = scores[candidates[j]];
        sum += wt[j];
      }
      const float norm = options.norm_topk_prob ? (sigmoid ? sum + 1e-20f : sum) : 1.0f;
      for (int64_t j = 0; j < k; ++j) wt[j] = wt[j] / norm * options.routed_scaling_factor;
    }
  }
}

}  // namespace ssm::ops
