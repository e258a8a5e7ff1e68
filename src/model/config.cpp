#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "core/error.h"

namespace ssm {

namespace {

// Keys every transformers PretrainedConfig may carry that do not change the computation.
const std::set<std::string> kGenericKeys = {
    "architectures", "dtype", "torch_dtype", "transformers_version", "use_cache", "output_attentions",
    "output_hidden_states", "return_dict", "id2label", "label2id", "is_encoder_decoder", "tokenizer_class",
    "task_specific_params", "problem_type", "name_or_path", "model_type", "bos_token_id", "eos_token_id",
    "pad_token_id", "tie_word_embeddings", "initializer_range", "rescale_prenorm_residual", "chunk_size_feed_forward",
    "torchscript", "pruned_heads", "finetuning_task", "prefix", "sep_token_id", "decoder_start_token_id",
    "is_decoder", "add_cross_attention", "cross_attention_hidden_size", "tf_legacy_loss", "use_bfloat16"};

const std::set<std::string> kMambaKeys = {
    "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "layer_norm_epsilon", "expand", "conv_kernel",
    "use_bias", "use_conv_bias", "hidden_act", "residual_in_fp32", "time_step_rank", "time_step_scale",
    "time_step_min", "time_step_max", "time_step_init_scheme", "time_step_floor", "use_mambapy",
    "use_associative_scan", "intermediate_size", "n_layer", "d_model", "fused_add_norm", "rms_norm",
    "pad_vocab_size_multiple", "ssm_cfg", "d_inner"};

const std::set<std::string> kMamba2Keys = {
    "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "layer_norm_epsilon", "expand", "conv_kernel",
    "use_bias", "use_conv_bias", "hidden_act", "residual_in_fp32", "time_step_rank", "time_step_min",
    "time_step_max", "time_step_floor", "time_step_limit", "n_groups", "num_heads", "head_dim", "chunk_size",
    "rms_norm", "norm_before_gate"};

// The original state-spaces (mamba_ssm MambaConfig) keys.
const std::set<std::string> kStateSpacesKeys = {
    "d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg", "rms_norm",
    "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings"};

const std::set<std::string> kSsmCfgKeys = {
    "layer", "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor",
    "conv_bias", "bias", "use_fast_path", "headdim", "ngroups", "chunk_size", "dt_limit", "rmsnorm",
    "norm_before_gate", "A_init_range", "D_has_hdim", "learnable_init_states", "activation", "d_ssm", "use_mem_eff_path"};

class Reader {
 public:
  Reader(const Json& json, std::string source) : json_(json), source_(std::move(source)) {}
  bool has(const std::string& key) const { return json_.contains(key) && !json_[key].is_null(); }
  bool is_string(const std::string& key) const { return has(key) && json_[key].is_string(); }
  int64_t integer(const std::string& key) const {
    SSM_CHECK(has(key), "{}: missing key '{}'", source_, key);
    const Json& v = json_[key];
    SSM_CHECK(v.is_number_integer(), "{}: '{}' must be an integer, got {}", source_, key, v.dump());
    return v.get<int64_t>();
  }
  int64_t integer(const std::string& key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }
  int64_t positive(const std::string& key) const {
    const int64_t v = integer(key);
    SSM_CHECK(v > 0, "{}: '{}' must be positive, got {}", source_, key, v);
    return v;
  }
  int64_t positive(const std::string& key, int64_t fallback) const { return has(key) ? positive(key) : fallback; }
  double number(const std::string& key, double fallback) const {
    return has(key) ? json_to_double(json_[key], source_ + ": '" + key + "'") : fallback;
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    SSM_CHECK(json_[key].is_boolean(), "{}: '{}' must be true or false, got {}", source_, key, json_[key].dump());
    return json_[key].get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    SSM_CHECK(json_[key].is_string(), "{}: '{}' must be a string, got {}", source_, key, json_[key].dump());
    return json_[key].get<std::string>();
  }
  void reject_unknown(const std::set<std::string>& known, const std::set<std::string>& also = {}) const {
    for (const auto& [key, value] : json_.items()) {
      if (known.count(key) || also.count(key) || key.rfind('_', 0) == 0) continue;
      fail("{}: unknown config key '{}'", source_, key);
    }
  }
  const std::string& source() const { return source_; }

 private:
  const Json& json_;
  std::string source_;
};

std::vector<int64_t> token_ids(const Json& value, const std::string& what) {
  std::vector<int64_t> ids;
  if (value.is_number_integer()) ids.push_back(value.get<int64_t>());
  else if (value.is_array()) {
    for (const auto& id : value) {
      SSM_CHECK(id.is_number_integer(), "{}: token ids must be integers, got {}", what, value.dump());
      ids.push_back(id.get<int64_t>());
    }
  } else if (!value.is_null()) {
    fail("{}: token ids must be integers, got {}", what, value.dump());
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

void check_silu(const Reader& r) {
  const std::string act = r.string("hidden_act", "silu");
  SSM_CHECK(act == "silu" || act == "swish", "{}: hidden_act '{}' is not supported (silu only)", r.source(), act);
}

// Keys transformers' MambaConfig and Mamba2Config share.
void parse_hf_common(const Reader& r, ModelConfig& c, int64_t default_state) {
  c.d_model = r.positive("hidden_size");
  c.n_layers = r.positive("num_hidden_layers");
  c.vocab_size = r.positive("vocab_size");
  c.d_state = r.positive("state_size", default_state);
  c.d_conv = r.positive("conv_kernel", 4);
  c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  c.proj_bias = r.boolean("use_bias", false);
  c.conv_bias = r.boolean("use_conv_bias", true);
  c.residual_in_fp32 = r.boolean("residual_in_fp32", true);
  c.dt_init_min = r.number("time_step_min", 0.001);
  c.dt_init_max = r.number("time_step_max", 0.1);
  c.dt_init_floor = r.number("time_step_floor", 1e-4);
  check_silu(r);
}

void parse_hf_mamba(const Reader& r, ModelConfig& c) {
  r.reject_unknown(kGenericKeys, kMambaKeys);
  c.mixer = MixerKind::Mamba1;
  parse_hf_common(r, c, 16);
  c.d_inner = r.positive("intermediate_size", r.positive("expand", 2) * c.d_model);
  c.dt_rank = r.is_string("time_step_rank") && r.string("time_step_rank", "") == "auto"
                  ? (c.d_model + 15) / 16
                  : r.positive("time_step_rank", (c.d_model + 15) / 16);
}

void parse_hf_mamba2(const Reader& r, ModelConfig& c, const Json& json) {
  r.reject_unknown(kGenericKeys, kMamba2Keys);
  c.mixer = MixerKind::Mamba2;
  parse_hf_common(r, c, 128);
  c.head_dim = r.positive("head_dim", 64);
  c.d_inner = r.positive("expand", 2) * c.d_model;
  c.n_heads = r.positive("num_heads", c.d_inner / c.head_dim);
  c.n_groups = r.positive("n_groups", 1);
  c.chunk_size = r.positive("chunk_size", 256);
  c.norm_before_gate = r.boolean("norm_before_gate", false);
  SSM_CHECK(r.boolean("rms_norm", true), "{}: rms_norm false (no gated norm) is not supported", r.source());
  if (r.has("time_step_limit")) {
    const Json& limit = json["time_step_limit"];
    SSM_CHECK(limit.is_array() && limit.size() == 2, "{}: time_step_limit must be [min, max], got {}", r.source(),
              limit.dump());
    c.dt_limit_min = json_to_double(limit[0], r.source() + ": time_step_limit[0]");
    c.dt_limit_max = json_to_double(limit[1], r.source() + ": time_step_limit[1]");
  }
  // transformers sizes d_inner as num_heads · head_dim.
  c.d_inner = c.n_heads * c.head_dim;
}

void parse_state_spaces(const Reader& r, ModelConfig& c, const Json& json) {
  r.reject_unknown(kStateSpacesKeys);
  c.layout = WeightLayout::StateSpaces;
  c.d_model = r.positive("d_model");
  c.n_layers = r.positive("n_layer");
  const int64_t multiple = r.positive("pad_vocab_size_multiple", 8);
  const int64_t vocab = r.positive("vocab_size");
  c.vocab_size = (vocab + multiple - 1) / multiple * multiple;
  c.tie_embeddings = r.boolean("tie_embeddings", true);
  c.residual_in_fp32 = r.boolean("residual_in_fp32", true);
  SSM_CHECK(r.boolean("rms_norm", true), "{}: LayerNorm models (rms_norm false) are not supported", r.source());
  SSM_CHECK(r.integer("d_intermediate", 0) == 0, "{}: models with an MLP (d_intermediate > 0) are not supported yet",
            r.source());
  SSM_CHECK(!r.has("attn_layer_idx") || json["attn_layer_idx"].empty(),
            "{}: attention layers (attn_layer_idx) are not supported yet", r.source());
  const Json ssm_cfg = r.has("ssm_cfg") ? json["ssm_cfg"] : Json::object();
  SSM_CHECK(ssm_cfg.is_object(), "{}: ssm_cfg must be an object", r.source());
  const Reader s(ssm_cfg, r.source() + " ssm_cfg");
  s.reject_unknown(kSsmCfgKeys);
  const std::string layer = s.string("layer", "Mamba1");
  SSM_CHECK(layer == "Mamba1" || layer == "Mamba2", "{}: unknown layer '{}'", s.source(), layer);
  c.mixer = layer == "Mamba1" ? MixerKind::Mamba1 : MixerKind::Mamba2;
  c.model_type = layer == "Mamba1" ? "mamba" : "mamba2";
  c.d_conv = s.positive("d_conv", 4);
  c.d_inner = s.positive("expand", 2) * c.d_model;
  c.conv_bias = s.boolean("conv_bias", true);
  c.proj_bias = s.boolean("bias", false);
  c.dt_init_min = s.number("dt_min", 0.001);
  c.dt_init_max = s.number("dt_max", 0.1);
  c.dt_init_floor = s.number("dt_init_floor", 1e-4);
  if (c.mixer == MixerKind::Mamba1) {
    c.d_state = s.positive("d_state", 16);
    const bool auto_rank = !s.has("dt_rank") || (s.is_string("dt_rank") && s.string("dt_rank", "") == "auto");
    c.dt_rank = auto_rank ? (c.d_model + 15) / 16 : s.positive("dt_rank");
  } else {
    c.d_state = s.positive("d_state", 128);
    c.head_dim = s.positive("headdim", 64);
    c.n_groups = s.positive("ngroups", 1);
    c.chunk_size = s.positive("chunk_size", 256);
    c.norm_before_gate = s.boolean("norm_before_gate", false);
    SSM_CHECK(s.boolean("rmsnorm", true), "{}: rmsnorm false is not supported", s.source());
    SSM_CHECK(!s.has("d_ssm") || s.positive("d_ssm") == c.d_inner, "{}: d_ssm != d_inner is not supported",
              s.source());
    c.n_heads = c.d_inner / c.head_dim;
    if (s.has("dt_limit")) {
      const Json& limit = ssm_cfg["dt_limit"];
      SSM_CHECK(limit.is_array() && limit.size() == 2, "{}: dt_limit must be [min, max]", s.source());
      c.dt_limit_min = json_to_double(limit[0], s.source() + ": dt_limit[0]");
      c.dt_limit_max = json_to_double(limit[1], s.source() + ": dt_limit[1]");
    }
  }
}

void validate(const ModelConfig& c, const std::string& source) {
  SSM_CHECK(c.d_inner > 0 && c.d_state > 0 && c.d_conv >= 1, "{}: bad mixer sizes", source);
  if (c.mixer == MixerKind::Mamba2) {
    SSM_CHECK(c.n_heads > 0 && c.n_heads * c.head_dim == c.d_inner,
              "{}: num_heads ({}) × head_dim ({}) must equal d_inner ({})", source, c.n_heads, c.head_dim, c.d_inner);
    SSM_CHECK(c.n_heads % c.n_groups == 0, "{}: num_heads ({}) must be a multiple of n_groups ({})", source,
              c.n_heads, c.n_groups);
    SSM_CHECK(c.d_inner % c.n_groups == 0, "{}: d_inner ({}) must be a multiple of n_groups ({})", source, c.d_inner,
              c.n_groups);
    SSM_CHECK(c.dt_limit_min <= c.dt_limit_max, "{}: time_step_limit min > max", source);
  } else {
    SSM_CHECK(c.dt_rank > 0, "{}: bad time_step_rank", source);
  }
  for (int64_t id : c.eos_ids)
    SSM_CHECK(id >= 0 && id < c.vocab_size, "{}: eos_token_id {} is outside the vocabulary", source, id);
}

}  // namespace

ModelConfig ModelConfig::from_json(const Json& json, const std::string& source) {
  SSM_CHECK(json.is_object(), "{}: config must be a JSON object", source);
  ModelConfig c;
  const Reader r(json, source);
  if (!json.contains("model_type") && json.contains("d_model") && json.contains("n_layer")) {
    parse_state_spaces(r, c, json);
  } else {
    SSM_CHECK(json.contains("model_type"), "{}: missing 'model_type'", source);
    c.model_type = r.string("model_type", "");
    if (c.model_type == "mamba") parse_hf_mamba(r, c);
    else if (c.model_type == "mamba2") parse_hf_mamba2(r, c, json);
    else fail("{}: unknown model_type '{}' (supported: mamba, mamba2)", source, c.model_type);
    c.tie_embeddings = r.boolean("tie_word_embeddings", true);
    c.initializer_range = r.number("initializer_range", 0.02);
    c.rescale_prenorm_residual = r.boolean("rescale_prenorm_residual", true);
    read_special_tokens(json, source, c);
  }
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

Json ModelConfig::to_hf_json() const {
  Json j;
  j["model_type"] = model_type;
  j["hidden_size"] = d_model;
  j["num_hidden_layers"] = n_layers;
  j["vocab_size"] = vocab_size;
  j["state_size"] = d_state;
  j["conv_kernel"] = d_conv;
  j["expand"] = d_inner / d_model;
  j["use_bias"] = proj_bias;
  j["use_conv_bias"] = conv_bias;
  j["hidden_act"] = "silu";
  j["layer_norm_epsilon"] = norm_eps;
  j["residual_in_fp32"] = residual_in_fp32;
  j["tie_word_embeddings"] = tie_embeddings;
  j["initializer_range"] = initializer_range;
  j["rescale_prenorm_residual"] = rescale_prenorm_residual;
  j["time_step_min"] = dt_init_min;
  j["time_step_max"] = dt_init_max;
  j["time_step_floor"] = dt_init_floor;
  j["dtype"] = "float32";
  if (bos_id >= 0) j["bos_token_id"] = bos_id;
  if (pad_id >= 0) j["pad_token_id"] = pad_id;
  if (eos_ids.size() == 1) j["eos_token_id"] = eos_ids[0];
  else if (!eos_ids.empty()) j["eos_token_id"] = eos_ids;
  if (mixer == MixerKind::Mamba1) {
    j["architectures"] = {"MambaForCausalLM"};
    j["intermediate_size"] = d_inner;
    j["time_step_rank"] = dt_rank;
  } else {
    j["architectures"] = {"Mamba2ForCausalLM"};
    j["num_heads"] = n_heads;
    j["head_dim"] = head_dim;
    j["n_groups"] = n_groups;
    j["chunk_size"] = chunk_size;
    j["norm_before_gate"] = norm_before_gate;
    j["time_step_rank"] = (d_model + 15) / 16;
    const auto limit = [](double v) -> Json {
      if (std::isinf(v)) return Json{{"__float__", v > 0 ? "Infinity" : "-Infinity"}};
      return v;
    };
    j["time_step_limit"] = {limit(dt_limit_min), limit(dt_limit_max)};
  }
  return j;
}

int64_t ModelConfig::conv_channels() const {
  return mixer == MixerKind::Mamba1 ? d_inner : d_inner + 2 * n_groups * d_state;
}

int64_t ModelConfig::in_proj_width() const {
  return mixer == MixerKind::Mamba1 ? 2 * d_inner : 2 * d_inner + 2 * n_groups * d_state + n_heads;
}

int64_t ModelConfig::parameter_count() const {
  int64_t layer = d_model;                                            // norm
  layer += in_proj_width() * d_model + (proj_bias ? in_proj_width() : 0);
  layer += conv_channels() * d_conv + (conv_bias ? conv_channels() : 0);
  layer += d_inner * d_model + (proj_bias ? d_model : 0);             // out_proj
  if (mixer == MixerKind::Mamba1) {
    layer += d_inner * (dt_rank + 2 * d_state);                       // x_proj
    layer += dt_rank * d_inner + d_inner;                             // dt_proj
    layer += d_inner * d_state + d_inner;                             // A_log, D
  } else {
    layer += 3 * n_heads + d_inner;                                   // A_log, D, dt_bias, norm
  }
  return vocab_size * d_model * (tie_embeddings ? 1 : 2) + n_layers * layer + d_model;
}

std::string ModelConfig::describe() const {
  if (mixer == MixerKind::Mamba1) {
    return fmt::format("mamba (Mamba-1): d_model {}, {} layers, d_inner {}, d_state {}, dt_rank {}, conv {}, vocab {}",
                       d_model, n_layers, d_inner, d_state, dt_rank, d_conv, vocab_size);
  }
  return fmt::format(
      "mamba2 (Mamba-2): d_model {}, {} layers, {} heads × {}, d_state {}, {} group(s), chunk {}, conv {}, vocab {}",
      d_model, n_layers, n_heads, head_dim, d_state, n_groups, chunk_size, d_conv, vocab_size);
}

}  // namespace ssm
