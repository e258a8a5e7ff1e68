// transformers' `mamba` and `mamba2` model types, and the original state-spaces folders (mamba_ssm's
// MambaConfig: d_model, n_layer, ssm_cfg), which are read as the equivalent transformers config;
// Mamba-3 (ssm_cfg layer "Mamba3"), which transformers lacks, is read as it is and saved unchanged.
#include <cmath>

#include "model/architectures/architectures.h"
#include "nn/mixers/mamba1/mamba1.h"
#include "nn/mixers/mamba2/mamba2.h"
#include "nn/mixers/mamba3/mamba3.h"

namespace ssm::arch {

namespace {

// Keys of transformers' MambaConfig / Mamba2Config beyond the mixer's own.
const std::set<std::string> kModelKeys = {
    "hidden_size", "num_hidden_layers", "vocab_size", "layer_norm_epsilon", "residual_in_fp32", "time_step_scale",
    "time_step_init_scheme", "use_mambapy", "use_associative_scan", "n_layer", "d_model", "fused_add_norm",
    "rms_norm", "pad_vocab_size_multiple", "ssm_cfg", "d_inner"};

template <class Settings>
void read_backbone_model(const ConfigReader& r, ModelConfig& c, bool tie_default) {
  std::set<std::string> keys = kModelKeys;
  keys.insert(Settings::config_keys().begin(), Settings::config_keys().end());
  r.reject_unknown(generic_keys(), keys);
  c.d_model = r.positive("hidden_size");
  c.n_layers = r.layers("num_hidden_layers");
  c.vocab_size = r.positive("vocab_size");
  c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  const auto settings = std::make_shared<Settings>(Settings::from_config(r, c.d_model));
  use_backbone_names(c);
  for (int64_t i = 0; i < c.n_layers; ++i)
    add_branch(c, i, backbone_layer(i) + ".norm.weight", settings, backbone_layer(i) + ".mixer");
  if (!r.boolean("tie_word_embeddings", tie_default)) c.head_name = "lm_head.weight";
}

// MambaLMHeadModel with Mamba3 mixers: backbone.embedding, backbone.layers.{i}.{norm,mixer},
// backbone.norm_f, lm_head (untied only); RMSNorm eps 1e-5 (mamba_ssm's norm_epsilon).
void read_state_spaces_mamba3(const ConfigReader& r, const ConfigReader& ssm_cfg, int64_t vocab, ModelConfig& c) {
  c.model_type = "mamba3";
  c.d_model = r.positive("d_model");
  c.n_layers = r.layers("n_layer");
  c.vocab_size = vocab;
  c.norm_eps = 1e-5;
  const auto settings = std::make_shared<Mamba3Settings>(Mamba3Settings::from_config(ssm_cfg, c.d_model));
  use_backbone_names(c, true);
  for (int64_t i = 0; i < c.n_layers; ++i)
    add_branch(c, i, backbone_layer(i) + ".norm.weight", settings, backbone_layer(i) + ".mixer");
  if (!r.boolean("tie_embeddings", true)) c.head_name = "lm_head.weight";
}

}  // namespace

void read_mamba(const ConfigReader& r, ModelConfig& c) { read_backbone_model<Mamba1Settings>(r, c, true); }
void read_mamba2(const ConfigReader& r, ModelConfig& c) { read_backbone_model<Mamba2Settings>(r, c, true); }

void read_state_spaces(const ConfigReader& r, ModelConfig& c) {
  static const std::set<std::string> keys = {
      "d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg", "rms_norm",
      "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings"};
  static const std::set<std::string> ssm_cfg_keys = {
      "layer", "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor",
      "conv_bias", "bias", "use_fast_path", "headdim", "ngroups", "chunk_size", "dt_limit", "rmsnorm",
      "norm_before_gate", "A_init_range", "D_has_hdim", "learnable_init_states", "activation", "d_ssm",
      "use_mem_eff_path"};
  r.reject_unknown(keys);
  SSM_CHECK(r.boolean("rms_norm", true), "{}: LayerNorm models (rms_norm false) are not supported", r.source());
  SSM_CHECK(r.integer("d_intermediate", 0) == 0, "{}: models with an MLP (d_intermediate > 0) are not supported yet",
            r.source());
  SSM_CHECK(!r.has("attn_layer_idx") || r.json()["attn_layer_idx"].empty(),
            "{}: attention layers (attn_layer_idx) are not supported yet", r.source());
  const ConfigReader s = r.section("ssm_cfg");
  const std::string layer = s.string("layer", "Mamba1");
  SSM_CHECK(layer == "Mamba1" || layer == "Mamba2" || layer == "Mamba3", "{}: unknown layer '{}'", s.source(), layer);
  const int64_t d_model = r.positive("d_model"), multiple = r.positive("pad_vocab_size_multiple", 8);
  const int64_t vocab = (r.positive("vocab_size") + multiple - 1) / multiple * multiple;
  if (layer == "Mamba3") {
    std::set<std::string> keys = Mamba3Settings::config_keys();
    keys.insert("layer");
    s.reject_unknown(keys);
    read_state_spaces_mamba3(r, s, vocab, c);
    return;
  }
  s.reject_unknown(ssm_cfg_keys);
  const int64_t expand = s.positive("expand", 2);
  // The equivalent transformers config: what the model is read as and saved as.
  Json hf = {{"hidden_size", d_model},
             {"num_hidden_layers", r.layers("n_layer")},
             {"vocab_size", vocab},
             {"tie_word_embeddings", r.boolean("tie_embeddings", true)},
             {"conv_kernel", s.positive("d_conv", 4)},
             {"expand", expand},
             {"use_conv_bias", s.boolean("conv_bias", true)},
             {"use_bias", s.boolean("bias", false)},
             {"time_step_min", s.number("dt_min", 0.001)},
             {"time_step_max", s.number("dt_max", 0.1)},
             {"time_step_floor", s.number("dt_init_floor", 1e-4)},
             {"hidden_act", "silu"},
             {"dtype", "float32"}};
  if (layer == "Mamba1") {
    hf["model_type"] = "mamba";
    hf["architectures"] = {"MambaForCausalLM"};
    hf["state_size"] = s.positive("d_state", 16);
    hf["intermediate_size"] = expand * d_model;
    const bool auto_rank = !s.has("dt_rank") || (s.is_string("dt_rank") && s.string("dt_rank", "") == "auto");
    hf["time_step_rank"] = auto_rank ? (d_model + 15) / 16 : s.positive("dt_rank");
  } else {
    SSM_CHECK(s.boolean("rmsnorm", true), "{}: rmsnorm false is not supported", s.source());
    SSM_CHECK(!s.has("d_ssm") || s.positive("d_ssm") == expand * d_model, "{}: d_ssm != d_inner is not supported",
              s.source());
    hf["model_type"] = "mamba2";
    hf["architectures"] = {"Mamba2ForCausalLM"};
    hf["state_size"] = s.positive("d_state", 128);
    hf["head_dim"] = s.positive("headdim", 64);
    hf["num_heads"] = expand * d_model / s.positive("headdim", 64);
    hf["n_groups"] = s.positive("ngroups", 1);
    hf["chunk_size"] = s.positive("chunk_size", 256);
    hf["norm_before_gate"] = s.boolean("norm_before_gate", false);
    if (s.has("dt_limit")) {
      const std::vector<double> limit = s.numbers("dt_limit");
      SSM_CHECK(limit.size() == 2, "{}: dt_limit must be [min, max]", s.source());
      const auto encode = [](double v) -> Json {
        if (std::isinf(v)) return Json{{"__float__", v > 0 ? "Infinity" : "-Infinity"}};
        return v;
      };
      hf["time_step_limit"] = {encode(limit[0]), encode(limit[1])};
    }
  }
  const ConfigReader hf_reader(hf, r.source());
  if (layer == "Mamba1") read_mamba(hf_reader, c);
  else read_mamba2(hf_reader, c);
  c.model_type = hf["model_type"];
  c.embedding_name = "backbone.embedding.weight";
  c.hf_config = hf;
}

}  // namespace ssm::arch
