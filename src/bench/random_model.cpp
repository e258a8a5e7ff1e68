#include "bench/random_model.h"

#include <cmath>

#include "core/random.h"

namespace ssm::bench {

ModelConfig published_shape(const std::string& name) {
  Json config;
  if (name == "mamba-130m") {
    config = {{"model_type", "mamba"}, {"hidden_size", 768}, {"num_hidden_layers", 24}, {"vocab_size", 50280},
              {"state_size", 16},      {"expand", 2},        {"conv_kernel", 4},        {"eos_token_id", 0}};
  } else if (name == "mamba2-130m") {
    config = {{"model_type", "mamba2"}, {"hidden_size", 768}, {"num_hidden_layers", 24}, {"vocab_size", 50288},
              {"state_size", 128},      {"head_dim", 64},     {"num_heads", 24},         {"n_groups", 1},
              {"expand", 2},            {"chunk_size", 256},  {"eos_token_id", 0}};
  } else {
    fail("unknown model shape '{}' (mamba-130m, mamba2-130m)", name);
  }
  return ModelConfig::from_json(config, name);
}

LanguageModel random_model(const ModelConfig& config, DType matrix_dtype, uint64_t seed) {
  LanguageModel model(config);
  model.allocate(DType::F32);
  Rng rng(seed);
  for (ParamRef& p : model.params()) {
    float* v = p.tensor->data<float>();
    const int64_t n = p.tensor->numel();
    const std::string& name = p.name;
    const auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with("A_log")) {
      const int64_t width = p.shape.back();
      for (int64_t i = 0; i < n; ++i) v[i] = std::log(float(p.shape.size() == 2 ? i % width + 1 : i % 16 + 1));
    } else if (ends_with(".D") || ends_with("norm.weight") || ends_with("norm_f.weight")) {
      for (int64_t i = 0; i < n; ++i) v[i] = 1.0f;
    } else if (ends_with("dt_bias") || ends_with("dt_proj.bias")) {
      for (int64_t i = 0; i < n; ++i) v[i] = std::log(std::expm1(0.01f));
    } else {
      for (int64_t i = 0; i < n; ++i) v[i] = 0.02f * rng.normal();
    }
  }
  if (matrix_dtype != DType::F32) {
    for (ParamRef& p : model.params())
      if (p.kind != ParamKind::Vector) *p.tensor = p.tensor->to(matrix_dtype);
  }
  return model;
}

}  // namespace ssm::bench
