#include "bench/random_model.h"

#include "train/init.h"

namespace ssm::bench {

ModelConfig published_shape(const std::string& name) {
  Json config;
  if (name == "mamba-130m") {
    config = {{"model_type", "mamba"}, {"hidden_size", 768}, {"num_hidden_layers", 24}, {"vocab_size", 50280},
              {"state_size", 16},      {"expand", 2},        {"conv_kernel", 4},        {"eos_token_id", 0}};
  } else if (name == "mamba-1.4b") {
    config = {{"model_type", "mamba"}, {"hidden_size", 2048}, {"num_hidden_layers", 48}, {"vocab_size", 50280},
              {"state_size", 16},      {"expand", 2},         {"conv_kernel", 4},        {"eos_token_id", 0}};
  } else if (name == "mamba2-130m" || name == "mamba2-1.3b") {
    const bool small = name == "mamba2-130m";
    config = {{"model_type", "mamba2"}, {"hidden_size", small ? 768 : 2048}, {"num_hidden_layers", small ? 24 : 48},
              {"vocab_size", 50288},    {"state_size", 128},                 {"head_dim", 64},
              {"num_heads", small ? 24 : 64}, {"n_groups", 1},               {"expand", 2},
              {"chunk_size", 256},      {"eos_token_id", 0}};
  } else if (name == "mamba3-130m" || name == "mamba3-1.3b") {
    // mamba_ssm's MambaLMHeadModel folder with Mamba-3 (SISO) layers at the Mamba-2 shapes (BENCHMARKS.md's training
    // rows), Mamba3's defaults: d_state 128, headdim 64, one B/C group, rope_fraction 0.5.
    const bool small = name == "mamba3-130m";
    config = {{"d_model", small ? 768 : 2048},
              {"n_layer", small ? 24 : 48},
              {"vocab_size", 50280},
              {"pad_vocab_size_multiple", 8},
              {"ssm_cfg", {{"layer", "Mamba3"}, {"d_state", 128}, {"headdim", 64}, {"expand", 2}}},
              {"rms_norm", true},
              {"residual_in_fp32", true},
              {"fused_add_norm", true},
              {"tie_embeddings", true}};
  } else if (name == "xlstm-350m") {
    // NX-AI/xLSTM-7b's config.json layout at ~350M parameters (scripts/gpu-xlstm-peer.py's "350m").
    config = {{"model_type", "xlstm"},
              {"hidden_size", 1024},
              {"num_blocks", 24},
              {"num_heads", 4},
              {"vocab_size", 50304},
              {"qk_dim_factor", 0.5},
              {"v_dim_factor", 1.0},
              {"chunk_size", 64},
              {"gate_soft_cap", 15.0},
              {"output_logit_soft_cap", 30.0},
              {"tie_word_embeddings", false}};
  } else {
    fail(
        "unknown model shape '{}' (mamba-130m, mamba-1.4b, mamba2-130m, mamba2-1.3b, mamba3-130m, mamba3-1.3b, "
        "xlstm-350m)",
        name);
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

void write_random_model(const std::string& shape, DType file_dtype, uint64_t seed, const std::string& folder) {
  const char* torch_dtype = file_dtype == DType::F32    ? "float32"
                            : file_dtype == DType::BF16 ? "bfloat16"
                            : file_dtype == DType::F16  ? "float16"
                                                        : nullptr;
  SSM_CHECK(torch_dtype, "a model is written in F32, BF16 or F16, not {}", dtype_name(file_dtype));
  Json config = published_shape(shape).hf_config;
  config["torch_dtype"] = torch_dtype;
  LanguageModel model = random_model(ModelConfig::from_json(config, shape), DType::F32, seed);
  if (file_dtype != DType::F32) {
    // BF16 keeps 8 significant bits; F16 keeps 11 but only down to 2^-24, so small values are
    // rounded to that grid, which has few enough bits for BF16. (Vectors are saved in F32.)
    for (ParamRef& p : model.params())
      if (p.kind != ParamKind::Vector) *p.tensor = p.tensor->to(DType::BF16).to(DType::F16).to(DType::F32);
  }
  model.save(folder, file_dtype);
}

}  // namespace ssm::bench
