// Initialisation of a model trained from scratch, reproducible from a seed: the embedding and an
// untied head N(0, initializer_range), norm weights 1, and each mixer its own rule
// (Mixer::init_parameters: mamba_ssm's for the Mamba mixers, GPT-2's for attention and MLPs).
#pragma once
#include <cstdint>

#include "model/language_model.h"

namespace ssm {

// Allocates the parameters (F32) and initialises them.
void init_parameters(LanguageModel& model, uint64_t seed);

}  // namespace ssm
