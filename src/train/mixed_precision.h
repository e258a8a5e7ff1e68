// Mixed-precision training as people train on GPUs: F32 master weights, gradients and AdamW moments;
// the forward and backward run a working copy of the model whose matrices are BF16 (its vectors are
// the master's own F32 tensors), which the fused AdamW refreshes after every update.
#pragma once
#include <vector>

#include "model/language_model.h"
#include "train/model_backward.h"
#include "train/optimizer.h"

namespace ssm {

// A model of the master's configuration on its device, matrices BF16 copies of the master's, vectors
// the master's tensors.
LanguageModel bf16_working_copy(LanguageModel& master);

// AdamW's parameters: the master's tensors, the gradients of the model the passes run (the master
// itself, or its working copy), and that model's BF16 matrices as the copies to refresh.
std::vector<OptimizerParam> optimizer_params(LanguageModel& master, ModelGrads& grads);

}  // namespace ssm
