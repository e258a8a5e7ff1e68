// ops::moe_scatter_add_backward and ops::moe_route_backward on the GPU (formulas in ops_backward.h).
// scatter_add_backward: a block per dispatch row: dweights of its (token, slot) as a block sum of
// dy[token]·rows[i], then drows[i] = w dy[token]. route_backward: a warp per token: the scores
// recomputed from the logits (max and sum as warp reductions), the selected slots' gradient pushed
// through the softmax or the sigmoid. Every sum has a fixed order: two runs give the same bits.
#include <climits>

#include "ops/cpu/moe_plan.h"    // check_moe_plan
#include "ops/cpu/moe_router.h"  // check_router_options
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/reduce.cuh"  // warp_sum, block_sum

namespace ssm::ops::cuda {

namespace {

constexpr int kRowThreads = 128;  // per dispatch row
constexpr int kTokensPerBlock = 8;  // a warp each

template <class E>
__global__ void scatter_add_backward_kernel(Rows<const E> rows, const float* weights, int64_t ldw,
                                            const int32_t* row_token, const int32_t* row_slot, Rows<const E> dy,
                                            Rows<E> drows, float* dweights, int64_t lddw, int64_t width) {
  const int64_t i = blockIdx.x;
  const int64_t t = row_token[i], slot = row_slot[i];
  if (dweights) {
    float part = 0.0f;
    for (int64_t c = threadIdx.x; c < width; c += blockDim.x) part += to_float(dy.at(t, c)) * to_float(rows.at(i, c));
    // block_sum ends with a barrier: every read of rows is done before drows (which may alias it) is written.
    const float dot = block_sum(part);
    if (threadIdx.x == 0) dweights[t * lddw + slot] = dot;
  }
  if (!drows.data) return;
  const float w = weights ? weights[t * ldw + slot] : 1.0f;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) drows.at(i, c) = from_float<E>(w * to_float(dy.at(t, c)));
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

struct RouteArgs {
  Rows<const float> logits, dweights;
  const int32_t* indices;  // [M, k]
  Rows<float> dlogits;
  int64_t tokens;
  int experts, top_k;
  bool sigmoid, norm_topk_prob, accumulate;
  float scale;  // routed_scaling_factor
};

__global__ void route_backward_kernel(RouteArgs a) {
  const int lane = int(threadIdx.x % 32);
  const int64_t t = int64_t(blockIdx.x) * kTokensPerBlock + threadIdx.x / 32;
  if (t >= a.tokens) return;  // the whole warp
  const float* logits = &a.logits.at(t, 0);
  float max_logit = -INFINITY, sum = 0.0f;
  if (!a.sigmoid) {
    for (int e = lane; e < a.experts; e += 32) max_logit = fmaxf(max_logit, logits[e]);
    max_logit = warp_max(max_logit);
    for (int e = lane; e < a.experts; e += 32) sum += expf(logits[e] - max_logit);
    sum = warp_sum(sum);
  }
  auto score = [&](int e) {
    return a.sigmoid ? 1.0f / (1.0f + expf(-logits[e])) : expf(logits[e] - max_logit) / sum;
  };
  const int32_t* ids = a.indices + t * a.top_k;
  const float* g = &a.dweights.at(t, 0);
  auto valid = [&](int j) { return ids[j] >= 0 && ids[j] < a.experts; };
  // The normalisation's sums (every lane alike, in slot order), then the gradient of slot j's score.
  float norm = a.sigmoid ? 1e-20f : 0.0f, weighted = 0.0f;
  if (a.norm_topk_prob) {
    for (int j = 0; j < a.top_k; ++j) {
      if (!valid(j)) continue;
      const float x = score(ids[j]);
      norm += x;
      weighted += g[j] * x;
    }
  }
  auto dslot = [&](int j) { return a.norm_topk_prob ? a.scale * (g[j] - weighted / norm) / norm : a.scale * g[j]; };
  float dot = 0.0f;  // Σ_e p_e dx_e, over the selected experts (the others' dx is 0)
  if (!a.sigmoid)
    for (int j = 0; j < a.top_k; ++j)
      if (valid(j)) dot += score(ids[j]) * dslot(j);
  for (int e = lane; e < a.experts; e += 32) {
    float dx = 0.0f;
    for (int j = 0; j < a.top_k; ++j)
      if (ids[j] == e) dx += dslot(j);
    const float x = score(e), v = a.sigmoid ? dx * x * (1.0f - x) : x * (dx - dot);
    float& out = a.dlogits.at(t, e);
    out = a.accumulate ? out + v : v;
  }
}

}  // namespace

void moe_scatter_add_backward(const Tensor& rows, const Tensor& weights, const MoePlan& plan, int64_t first_row,
                              const Tensor& dy, Tensor* drows, Tensor* dweights) {
  const char* op = "moe_scatter_add_backward";
  const detail::MoePlanDims d = detail::check_moe_plan(op, plan);
  check_on_gpu(op, {&plan.row_token, &plan.row_slot});
  SSM_CHECK(dy.defined() && is_activation_dtype(dy.dtype()) && is_gpu_rows(dy, dy.dtype()) && dy.dim() == 2 &&
                dy.size(0) == d.tokens,
            "{}: dy must be F32 or BF16 rows [{}, D] (the plan's tokens) on the GPU, got {}", op, d.tokens,
            describe(dy));
  const DType act = dy.dtype();
  const int64_t D = dy.size(1);
  SSM_CHECK(is_gpu_rows(rows, act) && rows.dim() == 2 && rows.size(1) == D,
            "{}: rows must be {} rows [n, {}] on the GPU (dy's dtype), got {}", op, dtype_name(act), D,
            describe(rows));
  const int64_t n = rows.size(0);
  const Shape weights_shape{d.tokens, d.top_k};
  if (weights.defined())
    SSM_CHECK(is_gpu_rows(weights, DType::F32, weights_shape), "{}: weights must be F32 rows {} on the GPU, got {}",
              op, shape_str(weights_shape), describe(weights));
  if (drows)
    SSM_CHECK(is_gpu_rows(*drows, act, rows.shape()), "{}: drows must be {} rows {} on the GPU, got {}", op,
              dtype_name(act), shape_str(rows.shape()), describe(*drows));
  if (dweights) {
    SSM_CHECK(weights.defined(), "{}: dweights asked for without weights", op);
    SSM_CHECK(is_gpu_rows(*dweights, DType::F32, weights_shape), "{}: dweights must be F32 rows {} on the GPU, got {}",
              op, shape_str(weights_shape), describe(*dweights));
  }
  SSM_CHECK(first_row >= 0 && first_row + n <= d.tokens * d.top_k,
            "{}: dispatch rows [{}, {}) are outside the plan's {} rows", op, first_row, first_row + n,
            d.tokens * d.top_k);
  SSM_CHECK(n < INT_MAX, "{}: {} dispatch rows in one call; the GPU kernel takes fewer than 2^31", op, n);
  if (n == 0 || (!drows && !dweights)) return;
  with_activation_type(act, op, [&]<class E>() {
    scatter_add_backward_kernel<E><<<unsigned(n), kRowThreads, 0, stream()>>>(
        rows_of<const E>(rows), weights.defined() ? weights.data<float>() : nullptr,
        weights.defined() ? weights.row_stride() : 0, plan.row_token.data<int32_t>() + first_row,
        plan.row_slot.data<int32_t>() + first_row, rows_of<const E>(dy),
        drows ? rows_of<E>(*drows) : Rows<E>{nullptr, 0}, dweights ? dweights->data<float>() : nullptr,
        dweights ? dweights->row_stride() : 0, D);
    SSM_CUDA_CHECK_LAUNCH("{} of {} rows of width {}", op, n, D);
  });
}

void moe_route_backward(const Tensor& logits, const Tensor& indices, const MoeRouterOptions& options,
                        const Tensor& dweights, Tensor& dlogits, bool accumulate_dlogits) {
  const char* op = "moe_route_backward";
  SSM_CHECK(is_gpu_rows(logits, DType::F32) && logits.dim() == 2 && logits.size(1) >= 1,
            "{}: logits must be F32 rows [M, E] on the GPU, got {}", op, describe(logits));
  const int64_t M = logits.size(0), E = logits.size(1), k = options.top_k;
  detail::check_router_options(op, options, E);
  SSM_CHECK(indices.defined() && indices.device() == Device::CUDA && indices.dtype() == DType::I32 &&
                indices.is_contiguous() && indices.shape() == Shape({M, k}),
            "{}: indices must be contiguous I32 [{}, {}] on the GPU, got {}", op, M, k, describe(indices));
  SSM_CHECK(is_gpu_rows(dweights, DType::F32, {M, k}), "{}: dweights must be F32 rows [{}, {}] on the GPU, got {}", op,
            M, k, describe(dweights));
  SSM_CHECK(is_gpu_rows(dlogits, DType::F32, {M, E}), "{}: dlogits must be F32 rows [{}, {}] on the GPU, got {}", op,
            M, E, describe(dlogits));
  SSM_CHECK(E < INT_MAX, "{}: {} experts; the GPU kernel takes fewer than 2^31", op, E);
  if (M == 0) return;
  const RouteArgs a{rows_of<const float>(logits),
                    rows_of<const float>(dweights),
                    indices.data<int32_t>(),
                    rows_of<float>(dlogits),
                    M,
                    int(E),
                    int(k),
                    options.scoring == MoeScoring::Sigmoid,
                    options.norm_topk_prob,
                    accumulate_dlogits,
                    options.routed_scaling_factor};
  route_backward_kernel<<<blocks_for(M, kTokensPerBlock), kTokensPerBlock * 32, 0, stream()>>>(a);
  SSM_CUDA_CHECK_LAUNCH("{} of {} tokens over {} experts", op, M, E);
}

}  // namespace ssm::ops::cuda
