#include "train/mixed_precision.h"

namespace ssm {

LanguageModel bf16_working_copy(LanguageModel& master) {
  LanguageModel copy(master.config());
  const ParamList from = master.params(), to = copy.params();
  for (size_t i = 0; i < from.size(); ++i)
    *to[i].tensor = from[i].kind == ParamKind::Vector ? *from[i].tensor : from[i].tensor->to(DType::BF16);
  // Already on the device in their dtypes: this sets the mixers up there and moves nothing.
  copy.to_device(master.device(), DType::BF16);
  return copy;
}

std::vector<OptimizerParam> optimizer_params(LanguageModel& master, ModelGrads& grads) {
  std::vector<OptimizerParam> out;
  const ParamList masters = master.params();
  for (size_t i = 0; i < masters.size(); ++i) {
    const ParamRef& p = grads.params()[i];
    const bool copied = p.tensor != masters[i].tensor && p.tensor->dtype() != DType::F32;
    out.push_back({p.name, masters[i].tensor, &grads.of(*p.tensor), p.weight_decay, copied ? p.tensor : nullptr});
  }
  return out;
}

}  // namespace ssm
