#include "nn/mixers/moe/moe_routing.h"

#include <utility>

namespace ssm {

namespace {

ops::MoePlan plan_in(Workspace& ws, int64_t tokens, int64_t top_k, int64_t n_experts) {
  ops::MoePlan plan;
  plan.expert_offsets = ws.take({n_experts + 1}, DType::I32);
  plan.row_token = ws.take({tokens * top_k}, DType::I32);
  plan.row_slot = ws.take({tokens * top_k}, DType::I32);
  plan.slot_row = ws.take({tokens, top_k}, DType::I32);
  return plan;
}

}  // namespace

MoeRouting route_tokens(const Tensor& logits, const Tensor& correction_bias, const ops::MoeRouterOptions& options,
                        Workspace& ws) {
  const int64_t M = logits.size(0), E = logits.size(1), k = options.top_k;
  MoeRouting r;
  r.indices = ws.take({M, k}, DType::I32);
  r.weights = ws.take({M, k});
  if (logits.device() == Device::CPU) {
    ops::moe_route(logits, correction_bias, options, r.indices, r.weights);
    r.plan = r.host_plan = plan_in(ws, M, k, E);
    ops::moe_plan(r.indices, r.plan);
    return r;
  }
  const Tensor host_logits = logits.to_device(Device::CPU);
  const Tensor host_bias = correction_bias.defined() ? correction_bias.to_device(Device::CPU) : Tensor();
  Tensor indices = Tensor::empty({M, k}, DType::I32), weights = Tensor::empty({M, k});
  ops::moe_route(host_logits, host_bias, options, indices, weights);
  r.host_plan = ops::MoePlan::allocate(M, k, E);
  ops::moe_plan(indices, r.host_plan);
  r.plan = plan_in(ws, M, k, E);
  for (auto [to, from] : {std::pair{&r.indices, &indices}, std::pair{&r.weights, &weights},
                          std::pair{&r.plan.expert_offsets, &r.host_plan.expert_offsets},
                          std::pair{&r.plan.row_token, &r.host_plan.row_token},
                          std::pair{&r.plan.row_slot, &r.host_plan.row_slot},
                          std::pair{&r.plan.slot_row, &r.host_plan.slot_row}})
    to->copy_from(*from);
  return r;
}

}  // namespace ssm
