// A whole model's logits and loss in double precision from its layer plan, the mixers' double
// references and the parameters by name.
#pragma once
#include "core/tensor.h"
#include "model/config.h"
#include "nn/mixer_reference.h"

namespace ssm::testing {

// The final hidden rows' logits [Bt·T, V] of ids I32 [Bt, T].
Vec reference_logits(const ModelConfig& c, const Params& P, const Tensor& ids);
// Mean cross-entropy over targets ≥ 0 (I32 [Bt, T]).
double reference_loss(const ModelConfig& c, const Params& P, const Tensor& ids, const Tensor& targets);

}  // namespace ssm::testing
