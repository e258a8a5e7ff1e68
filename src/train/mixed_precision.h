// Mixed-precision training as people train on GPUs: F32 master weights, gradients and AdamW moments;
// the forward and backward run a working copy of the model whose matrices are BF16 (its vectors are
// the master's own F32 tensors), which the fused AdamW refreshes after every update, or which are
// made per layer from the master weights just before they are read (`per_layer_matrices`).
#pragma once
#include <vector>

#include "model/language_model.h"
#include "train/model_backward.h"
#include "train/optimizer.h"

namespace ssm {

// A model of the master's configuration on its device, matrices BF16 copies of the master's, vectors
// the master's tensors. With `per_layer_matrices` the branches' matrices are not kept: two buffers,
// each sized for the largest branch, hold those of the branch that runs and of the next, rounded from
// the master weights (ops::convert, the rounding of AdamW's copies: the same bits) before each
// branch's forward and backward (LanguageModel::make_branch_params), the next one's on a side stream
// while the current one runs; the embedding / head stays a kept copy. Branch i's weights alias buffer
// i % 2, but each is its own tensor, so their gradients (ModelGrads: found by the tensor's identity)
// stay apart.
LanguageModel bf16_working_copy(LanguageModel& master, bool per_layer_matrices = false);

// AdamW's parameters: the master's tensors, the gradients of the model the passes run (`working`: the
// master itself, or its working copy), and that model's kept BF16 matrices as the copies to refresh
// (none for the matrices made per layer).
std::vector<OptimizerParam> optimizer_params(LanguageModel& master, const LanguageModel& working, ModelGrads& grads);

}  // namespace ssm
