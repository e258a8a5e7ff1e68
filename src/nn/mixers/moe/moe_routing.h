// How a MoE layer routes a batch of tokens, for its inference forward (moe.cpp) and its training face
// (moe_training.cpp): ops::moe_route and ops::moe_plan run on the host (the router logits are small,
// and the expert loop needs the plan's offsets there anyway); a layer on the GPU copies the logits
// over and its kernels' inputs (weights, indices, the plan) back onto the GPU.
#pragma once
#include <cstdint>

#include "core/workspace.h"
#include "ops/ops.h"

namespace ssm {

struct MoeRouting {
  Tensor indices;          // [M, k] I32, on the layer's device (moe_route_backward reads it)
  Tensor weights;          // [M, k] F32, on the layer's device
  ops::MoePlan plan;       // on the layer's device (moe_gather, moe_scatter_add and their backward read it)
  ops::MoePlan host_plan;  // the same on the host (the expert loop reads its offsets); on the CPU, the same tensors

  // Expert e's dispatch rows [first(e), first(e) + count(e)).
  int64_t first(int64_t e) const { return host_plan.expert_offsets.data<int32_t>()[e]; }
  int64_t count(int64_t e) const { return host_plan.expert_offsets.data<int32_t>()[e + 1] - first(e); }
};

// Routes the tokens of logits [M, E] (F32, on the layer's device); the device tensors come from ws.
MoeRouting route_tokens(const Tensor& logits, const Tensor& correction_bias, const ops::MoeRouterOptions& options,
                        Workspace& ws);

}  // namespace ssm
