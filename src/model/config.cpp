#include "model/config.h"

#include <filesystem>
#include <map>

#include "core/config_reader.h"
#include "core/error.h"
#include "core/json.h"
#include "model/architectures/architectures.h"

namespace ssm {

namespace {

std::vector<int64_t> token_ids(const Json& value, const std::string& what) {
  std::vector<int64_t> ids;
  if (value.is_number_integer()) ids.push_back(value.get<int64_t>());
  else if (value.is_array()) {
    for (const auto& id : value) {
      SSM_CHECK(id.is_number_integer(), "{}: token ids must be integers, got {}", what, json_excerpt(value));
      ids.push_back(id.get<int64_t>());
    }
  } else if (!value.is_null()) {
    fail("{}: token ids must be integers, got {}", what, json_excerpt(value));
  }
  return ids;
}

void read_special_tokens(const Json& json, const std::string& source, ModelConfig& config) {
  if (json.contains("eos_token_id")) config.eos_ids = token_ids(json["eos_token_id"], source + ": 'eos_token_id'");
  if (json.contains("bos_token_id")) {
    auto ids = token_ids(json["bos_token_id"], source + ": 'bos_token_id'");
    if (!ids.empty()) config.bos_id = ids[0];
  }
  if (json.contains("pad_token_id")) {
    auto ids = token_ids(json["pad_token_id"], source + ": 'pad_token_id'");
    if (!ids.empty()) config.pad_id = ids[0];
  }
}

void validate(const ModelConfig& c, const std::string& source) {
  SSM_CHECK(c.d_model > 0 && c.vocab_size > 0 && !c.branches.empty(), "{}: the model has no layers", source);
  for (int64_t id : c.eos_ids)
    SSM_CHECK(id >= 0 && id < c.vocab_size, "{}: eos_token_id {} is outside the vocabulary", source, id);
  for (int64_t id : {c.bos_id, c.pad_id})
    SSM_CHECK(id < c.vocab_size, "{}: special token id {} is outside the vocabulary", source, id);
}

}  // namespace

ModelConfig ModelConfig::from_json(const Json& json, const std::string& source) {
  SSM_CHECK(json.is_object(), "{}: config must be a JSON object", source);
  ModelConfig c;
  const ConfigReader r(json, source);
  c.hf_config = json;
  if (!json.contains("model_type") && json.contains("d_model") && json.contains("n_layer")) {
    arch::read_state_spaces(r, c);
  } else {
    SSM_CHECK(json.contains("model_type"), "{}: missing 'model_type'", source);
    c.model_type = r.string("model_type", "");
    const arch::Architecture* architecture = nullptr;
    std::string known;
    for (const arch::Architecture& a : arch::architectures()) {
      if (a.model_type == c.model_type) architecture = &a;
      known += (known.empty() ? "" : ", ") + std::string(a.model_type);
    }
    SSM_CHECK(architecture, "{}: unknown model_type '{}' (supported: {})", source, c.model_type, known);
    architecture->read(r, c);
    c.init.initializer_range = r.number("initializer_range", 0.02);
    c.init.rescale_prenorm_residual = r.boolean("rescale_prenorm_residual", true);
    read_special_tokens(json, source, c);
  }
  c.init.residual_branches = int64_t(c.branches.size());
  validate(c, source);
  return c;
}

ModelConfig ModelConfig::load_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  SSM_CHECK(fs::is_directory(folder), "model folder '{}' does not exist", folder);
  const std::string config_path = (fs::path(folder) / "config.json").string();
  SSM_CHECK(fs::exists(config_path), "model folder '{}' has no config.json", folder);
  ModelConfig c = from_json(read_json_file(config_path), config_path);
  const std::string generation_path = (fs::path(folder) / "generation_config.json").string();
  if (fs::exists(generation_path)) {
    const Json generation = read_json_file(generation_path);
    SSM_CHECK(generation.is_object(), "{}: must be a JSON object", generation_path);
    read_special_tokens(generation, generation_path, c);
    validate(c, generation_path);
  }
  return c;
}

std::string ModelConfig::describe() const {
  std::map<std::string, std::string> kinds;  // kind → its settings, in name order
  for (const BranchPlan& branch : branches)
    for (const MixerPlan& mixer : branch.mixers) kinds.emplace(std::string(mixer.settings->kind()), mixer.settings->describe());
  std::string out = fmt::format("{}: d_model {}, {} layers, vocab {}", model_type, d_model, n_layers, vocab_size);
  for (const auto& [kind, text] : kinds) out += "; " + text;
  if (logit_soft_cap > 0) out += fmt::format("; logits soft-capped at {}", logit_soft_cap);
  return out;
}

std::string ModelConfig::layer_pattern() const {
  std::string out;
  int64_t layer = -1;
  for (const BranchPlan& branch : branches) {
    if (branch.layer != layer) {
      out += layer < 0 ? "" : " | ";
      layer = branch.layer;
    } else {
      out += " ";
    }
    for (size_t i = 0; i < branch.mixers.size(); ++i)
      out += (i ? "∥" : "") + std::string(branch.mixers[i].settings->kind());
  }
  return out;
}

}  // namespace ssm
