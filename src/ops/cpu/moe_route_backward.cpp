// Backward of ops::moe_route on the CPU (formulas in ops_backward.h): tokens spread over threads,
// the scores recomputed from the logits, the gradient of the selected scores pushed through the
// softmax or the sigmoid.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "ops/cpu/moe_router.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;

void moe_route_backward(const Tensor& logits, const Tensor& indices, const MoeRouterOptions& options,
                        const Tensor& dweights, Tensor& dlogits, bool accumulate_dlogits) {
  SSM_GPU_DISPATCH(dlogits, moe_route_backward, logits, indices, options, dweights, dlogits, accumulate_dlogits);
  const char* op = "moe_route_backward";
  SSM_CHECK(detail::is_f32_rows(logits) && logits.dim() == 2 && logits.size(1) >= 1,
            "{}: logits must be F32 rows [M, E], got {}", op, describe(logits));
  const int64_t M = logits.size(0), E = logits.size(1), k = options.top_k;
  detail::check_router_options(op, options, E);
  SSM_CHECK(
      indices.defined() && indices.dtype() == DType::I32 && indices.is_contiguous() && indices.shape() == Shape({M, k}),
      "{}: indices must be contiguous I32 [{}, {}], got {}", op, M, k, describe(indices));
  SSM_CHECK(detail::is_f32_rows(dweights, {M, k}), "{}: dweights must be F32 rows [{}, {}], got {}", op, M, k,
            describe(dweights));
  SSM_CHECK(detail::is_f32_rows(dlogits, {M, E}), "{}: dlogits must be F32 rows [{}, {}], got {}", op, M, E,
            describe(dlogits));
  const int32_t* ip = indices.data<int32_t>();
  for (int64_t i = 0; i < M * k; ++i)
    SSM_CHECK(ip[i] >= 0 && ip[i] < E, "{}: expert id {} of token {} is outside [0, {})", op, ip[i], i / k, E);
  if (M == 0) return;

  const float* lp = logits.data<float>();
  const float* gp = dweights.data<float>();
  float* dlp = dlogits.data<float>();
  const int64_t ldl = logits.row_stride(), ldg = dweights.row_stride(), lddl = dlogits.row_stride();
  const bool sigmoid = options.scoring == MoeScoring::Sigmoid;
  const float scale = options.routed_scaling_factor;

#pragma omp parallel if (M * E >= 4096)
  {
    std::vector<float> scores(static_cast<size_t>(E)), dscores(static_cast<size_t>(E));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < M; ++t) {
      detail::router_scores(options.scoring, lp + t * ldl, E, scores.data());
      const int32_t* it = ip + t * k;
      const float* gt = gp + t * ldg;
      std::fill(dscores.begin(), dscores.end(), 0.0f);
      if (options.norm_topk_prob) {
        float norm = sigmoid ? 1e-20f : 0.0f, weighted = 0.0f;
        for (int64_t j = 0; j < k; ++j) {
          norm += scores[it[j]];
          weighted += gt[j] * scores[it[j]];
        }
        for (int64_t j = 0; j < k; ++j) dscores[it[j]] += scale * (gt[j] - weighted / norm) / norm;
      } else {
        for (int64_t j = 0; j < k; ++j) dscores[it[j]] += scale * gt[j];
      }
      float* dlt = dlp + t * lddl;
      if (sigmoid) {
        for (int64_t e = 0; e < E; ++e) {
          const float v = dscores[e] * scores[e] * (1.0f - scores[e]);
          dlt[e] = accumulate_dlogits ? dlt[e] + v : v;
        }
      } else {
        float dot = 0.0f;
        for (int64_t e = 0; e < E; ++e) dot += scores[e] * dscores[e];
        for (int64_t e = 0; e < E; ++e) {
          const float v = scores[e] * (dscores[e] - dot);
          dlt[e] = accumulate_dlogits ? dlt[e] + v : v;
        }
      }
    }
  }
}

}  // namespace ssm::ops
