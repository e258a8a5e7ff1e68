// The checks that mamba3_mimo_expand, mamba3_mimo_contract and mamba3_mimo_weight_grad share.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "ops/cpu/op_util.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

struct MimoDims {
  int64_t rows, H, R, P;
};
// w contiguous F32 [H, R, P]; narrow rows [..., H·P]; wide rows of narrow's leading shape, [..., R·H·P].
MimoDims check_mimo(const char* op, const Tensor& narrow, const Tensor& w, const Tensor& wide);

}  // namespace ssm::ops::detail
