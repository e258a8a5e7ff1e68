// Checks shared by the kernels that read an ops::MoePlan: its tensors' shapes, and that the dispatch
// rows a call touches exist and name tokens and slots in range (so a damaged plan is an error, not a
// write out of bounds).
#pragma once
#include <cstdint>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe
#include "ops/ops.h"

namespace ssm::ops::detail {

struct MoePlanDims {
  int64_t tokens, top_k, experts;
};

inline bool is_i32_contig(const Tensor& t, int64_t dims) {
  return t.defined() && t.dtype() == DType::I32 && t.dim() == dims && t.is_contiguous();
}

inline MoePlanDims check_moe_plan(const char* op, const MoePlan& plan) {
  SSM_CHECK(is_i32_contig(plan.expert_offsets, 1) && plan.expert_offsets.size(0) >= 2,
            "{}: plan.expert_offsets must be contiguous I32 [E + 1], got {}", op, describe(plan.expert_offsets));
  SSM_CHECK(is_i32_contig(plan.slot_row, 2), "{}: plan.slot_row must be contiguous I32 [M, k], got {}", op,
            describe(plan.slot_row));
  const MoePlanDims d{plan.slot_row.size(0), plan.slot_row.size(1), plan.expert_offsets.size(0) - 1};
  const Shape rows_shape{d.tokens * d.top_k};
  SSM_CHECK(is_i32_contig(plan.row_token, 1) && plan.row_token.shape() == rows_shape &&
                is_i32_contig(plan.row_slot, 1) && plan.row_slot.shape() == rows_shape,
            "{}: plan.row_token and plan.row_slot must be contiguous I32 {}, got {} and {}", op, shape_str(rows_shape),
            describe(plan.row_token), describe(plan.row_slot));
  return d;
}

// Dispatch rows [first_row, first_row + count) exist and name tokens in [0, M) and slots in [0, k).
inline void check_moe_rows(const char* op, const MoePlan& plan, const MoePlanDims& d, int64_t first_row,
                           int64_t count) {
  SSM_CHECK(first_row >= 0 && count >= 0 && first_row + count <= d.tokens * d.top_k,
            "{}: dispatch rows [{}, {}) are outside the plan's {} rows", op, first_row, first_row + count,
            d.tokens * d.top_k);
  const int32_t* token = plan.row_token.data<int32_t>() + first_row;
  const int32_t* slot = plan.row_slot.data<int32_t>() + first_row;
  for (int64_t i = 0; i < count; ++i)
    SSM_CHECK(token[i] >= 0 && token[i] < d.tokens && slot[i] >= 0 && slot[i] < d.top_k,
              "{}: dispatch row {} names token {} slot {}, but the plan has {} tokens of {} slots", op, first_row + i,
              token[i], slot[i], d.tokens, d.top_k);
}

}  // namespace ssm::ops::detail
