// Randomly initialised models made in memory (nothing downloaded) at published shapes, for benchmarks.
#pragma once
#include <cstdint>
#include <string>

#include "model/language_model.h"

namespace ssm::bench {

// "mamba-130m" (Mamba-1: d_model 768, 24 layers, vocab 50280) or "mamba2-130m" (d_model 768,
// 24 layers, head dim 64, state 128, vocab 50288).
ModelConfig published_shape(const std::string& name);

// Weights initialised as for training from scratch (train/init.h), matrices then converted to
// `matrix_dtype` (F32 or BF16).
LanguageModel random_model(const ModelConfig& config, DType matrix_dtype, uint64_t seed);

// Writes a random model at a published shape as a checkpoint folder that `generate`, `logits` and
// scripts/export-gguf.py read: config.json, generation_config.json and model.safetensors with the
// matrices in file_dtype (F32, BF16 or F16) and the vectors in F32. 16-bit matrices are rounded to
// values that BF16 and F16 both hold exactly, so a BF16 folder and an F16 one are the same model.
void write_random_model(const std::string& shape, DType file_dtype, uint64_t seed, const std::string& folder);

}  // namespace ssm::bench
