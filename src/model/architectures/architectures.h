// One reader per model_type: each turns a config.json into the layer plan and tensor names of a
// ModelConfig (sizes, branches, names); config.cpp does what all share (special tokens, init).
#pragma once
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/config_reader.h"
#include "model/config.h"

namespace ssm::arch {

struct Architecture {
  std::string_view model_type;
  void (*read)(const ConfigReader& config, ModelConfig& out);
};

const std::vector<Architecture>& architectures();

// The original state-spaces (mamba_ssm MambaConfig) format: no model_type, d_model / n_layer / ssm_cfg.
void read_state_spaces(const ConfigReader& config, ModelConfig& out);

// Keys every transformers PretrainedConfig may carry that do not change the computation.
const std::set<std::string>& generic_keys();

// Appends a branch of one mixer.
void add_branch(ModelConfig& c, int64_t layer, std::string norm, std::shared_ptr<const MixerSettings> settings,
                std::string prefix, float input_scale = 1.0f, float output_scale = 1.0f);

// The `backbone.*` names of mamba_ssm / transformers' Mamba, Mamba2 and Nemotron-H models.
void use_backbone_names(ModelConfig& c, bool state_spaces_embedding = false);
std::string backbone_layer(int64_t layer);  // "backbone.layers.{layer}"

}  // namespace ssm::arch
