// ops::MoePlan, ops::moe_plan, ops::moe_gather and ops::moe_scatter_add on the CPU.
//
// The plan is a counting sort of the (token, slot) pairs by expert, visiting tokens in order, so
// each expert's tokens come out increasing. moe_gather copies rows in parallel. moe_scatter_add
// splits the columns over threads and adds the rows in dispatch order within each column block, so
// several dispatch rows of one token (different experts) never race and always add up in the same
// order.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/cpu/moe_plan.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

MoePlan MoePlan::allocate(int64_t tokens, int64_t top_k, int64_t n_experts) {
  SSM_CHECK(tokens >= 0 && top_k >= 1 && n_experts >= 1, "MoePlan::allocate: bad sizes tokens {} top_k {} experts {}",
            tokens, top_k, n_experts);
  MoePlan plan;
  plan.expert_offsets = Tensor::empty({n_experts + 1}, DType::I32);
  plan.row_token = Tensor::empty({tokens * top_k}, DType::I32);
  plan.row_slot = Tensor::empty({tokens * top_k}, DType::I32);
  plan.slot_row = Tensor::empty({tokens, top_k}, DType::I32);
  return plan;
}

void moe_plan(const Tensor& indices, MoePlan& plan) {
  const char* op = "moe_plan";
  const detail::MoePlanDims d = detail::check_moe_plan(op, plan);
  const int64_t M = d.tokens, k = d.top_k, E = d.experts;
  SSM_CHECK(detail::is_i32_contig(indices, 2) && indices.shape() == Shape({M, k}),
            "{}: indices must be contiguous I32 [{}, {}] (the plan's shape), got {}", op, M, k, describe(indices));
  SSM_CHECK(M * k <= std::numeric_limits<int32_t>::max(), "{}: {} dispatch rows do not fit I32 row numbers", op, M * k);
  const int32_t* ids = indices.data<int32_t>();
  std::vector<int64_t> count(size_t(E), 0);
  for (int64_t t = 0; t < M; ++t) {
    for (int64_t s = 0; s < k; ++s) {
      const int32_t e = ids[t * k + s];
      SSM_CHECK(e >= 0 && e < E, "{}: expert id {} of token {} is outside [0, {})", op, e, t, E);
      for (int64_t s2 = 0; s2 < s; ++s2)
        SSM_CHECK(ids[t * k + s2] != e, "{}: token {} is routed to expert {} twice", op, t, e);
      ++count[size_t(e)];
    }
  }
  int32_t* offsets = plan.expert_offsets.data<int32_t>();
  std::vector<int64_t> cursor(static_cast<size_t>(E));
  offsets[0] = 0;
  for (int64_t e = 0; e < E; ++e) {
    cursor[size_t(e)] = offsets[e];
    offsets[e + 1] = int32_t(offsets[e] + count[size_t(e)]);
  }
  int32_t* row_token = plan.row_token.data<int32_t>();
  int32_t* row_slot = plan.row_slot.data<int32_t>();
  int32_t* slot_row = plan.slot_row.data<int32_t>();
  for (int64_t t = 0; t < M; ++t) {
    for (int64_t s = 0; s < k; ++s) {
      const int64_t r = cursor[size_t(ids[t * k + s])]++;
      row_token[r] = int32_t(t);
      row_slot[r] = int32_t(s);
      slot_row[t * k + s] = int32_t(r);
    }
  }
}

void moe_gather(const Tensor& x, const MoePlan& plan, int64_t first_row, Tensor& out) {
  SSM_GPU_DISPATCH(out, moe_gather, x, plan, first_row, out);
  const char* op = "moe_gather";
  const detail::MoePlanDims d = detail::check_moe_plan(op, plan);
  SSM_CHECK(is_f32_rows(x) && x.dim() == 2 && x.size(0) == d.tokens,
            "{}: x must be F32 rows [{}, D] (the plan's tokens), got {}", op, d.tokens, describe(x));
  const int64_t D = x.size(1);
  SSM_CHECK(is_f32_rows(out) && out.dim() == 2 && out.size(1) == D, "{}: out must be F32 rows [n, {}], got {}", op, D,
            describe(out));
  const int64_t n = out.size(0);
  detail::check_moe_rows(op, plan, d, first_row, n);
  if (n == 0 || D == 0) return;
  const int32_t* token = plan.row_token.data<int32_t>() + first_row;
  const float* xp = x.data<float>();
  float* outp = out.data<float>();
  const int64_t ldx = x.row_stride(), ldo = out.row_stride();
#pragma omp parallel for schedule(static) if (n * D >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) std::memcpy(outp + i * ldo, xp + token[i] * ldx, size_t(D) * sizeof(float));
}

void moe_scatter_add(const Tensor& rows, const Tensor& weights, const MoePlan& plan, int64_t first_row, Tensor& y) {
  SSM_GPU_DISPATCH(y, moe_scatter_add, rows, weights, plan, first_row, y);
  const char* op = "moe_scatter_add";
  const detail::MoePlanDims d = detail::check_moe_plan(op, plan);
  SSM_CHECK(is_f32_rows(y) && y.dim() == 2 && y.size(0) == d.tokens,
            "{}: y must be F32 rows [{}, D] (the plan's tokens), got {}", op, d.tokens, describe(y));
  const int64_t D = y.size(1);
  SSM_CHECK(is_f32_rows(rows) && rows.dim() == 2 && rows.size(1) == D, "{}: rows must be F32 rows [n, {}], got {}", op,
            D, describe(rows));
  if (weights.defined())
    SSM_CHECK(is_f32_rows(weights, {d.tokens, d.top_k}), "{}: weights must be F32 rows [{}, {}], got {}", op, d.tokens,
              d.top_k, describe(weights));
  const int64_t n = rows.size(0);
  detail::check_moe_rows(op, plan, d, first_row, n);
  if (n == 0 || D == 0) return;
  const int32_t* token = plan.row_token.data<int32_t>() + first_row;
  const int32_t* slot = plan.row_slot.data<int32_t>() + first_row;
  const float* rp = rows.data<float>();
  const float* wp = weights.defined() ? weights.data<float>() : nullptr;
  float* yp = y.data<float>();
  const int64_t ldr = rows.row_stride(), ldw = weights.defined() ? weights.row_stride() : 0, ldy = y.row_stride();
  constexpr int64_t kBlock = 256;
#pragma omp parallel for schedule(static) if (n * D >= (1 << 16))
  for (int64_t c0 = 0; c0 < D; c0 += kBlock) {
    const int64_t c1 = std::min(D, c0 + kBlock);
    for (int64_t i = 0; i < n; ++i) {
      const float w = wp ? wp[token[i] * ldw + slot[i]] : 1.0f;
      const float* src = rp + i * ldr;
      float* dst = yp + token[i] * ldy;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) dst[c] += w * src[c];
    }
  }
}

}  // namespace ssm::ops
