#include "bench/random_model.h"

#include "train/init.h"

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
  init_parameters(model, seed);
  if (matrix_dtype != DType::F32) {
    for (ParamRef& p : model.params())
      if (p.kind != ParamKind::Vector) *p.tensor = p.tensor->to(matrix_dtype);
  }
  return model;
}

}  // namespace ssm::bench
