// Initialisation of a model trained from scratch, as mamba_ssm (and transformers' Mamba/Mamba2
// _init_weights) do, reproducible from a seed:
//   embedding, untied lm_head   N(0, initializer_range)
//   Linear weights              U(±1/sqrt(fan_in)) (PyTorch's kaiming_uniform(a=√5)); biases 0
//   out_proj.weight             the same / sqrt(n_layers) when rescale_prenorm_residual
//   conv1d weight and bias      U(±1/sqrt(K)) (PyTorch's Conv1d default, fan_in = K for depthwise)
//   dt_proj.weight (Mamba-1)    U(±dt_rank^-0.5)
//   dt_proj.bias / dt_bias      softplus⁻¹(dt), dt = exp(U(log dt_min, log dt_max)) clamped to ≥ dt_floor
//   A_log                       Mamba-1: log(1..N) per channel (S4D-real); Mamba-2: log(U(1, 16)) per head
//   D, norm weights             1
#pragma once
#include <cstdint>

#include "model/language_model.h"

namespace ssm {

// Allocates the parameters (F32) and initialises them.
void init_parameters(LanguageModel& model, uint64_t seed);

}  // namespace ssm
