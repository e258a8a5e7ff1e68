#include "model/language_model.h"

#include <filesystem>
#include <map>
#include <set>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "ops/ops.h"

namespace ssm {

namespace fs = std::filesystem;

LanguageModel::LanguageModel(const ModelConfig& config) : config_(config) {
  for (int64_t i = 0; i < config.n_layers; ++i) blocks_.push_back({Tensor(), make_mixer(config)});
}

ParamList LanguageModel::params() {
  const bool hf = config_.layout == WeightLayout::HuggingFace;
  const int64_t d = config_.d_model, v = config_.vocab_size;
  ParamList params;
  params.push_back({hf ? "backbone.embeddings.weight" : "backbone.embedding.weight", {v, d}, &embedding_,
                    ParamKind::Embedding, true});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const std::string prefix = "backbone.layers." + std::to_string(i);
    params.push_back({prefix + ".norm.weight", {d}, &blocks_[i].norm, ParamKind::Vector, false});
    blocks_[i].mixer->add_params(prefix + ".mixer", params);
  }
  params.push_back({"backbone.norm_f.weight", {d}, &norm_f_, ParamKind::Vector, false});
  if (!config_.tie_embeddings) params.push_back({"lm_head.weight", {v, d}, &lm_head_, ParamKind::Matrix, true});
  return params;
}

void LanguageModel::allocate(DType matrix_dtype) {
  for (ParamRef& p : params()) {
    *p.tensor = Tensor::zeros(p.shape, p.kind == ParamKind::Vector ? DType::F32 : matrix_dtype);
  }
}

namespace {

// Tensor name → file, for model.safetensors or a sharded model.safetensors.index.json.
std::map<std::string, std::shared_ptr<SafetensorsFile>> open_weights(const std::string& folder) {
  std::map<std::string, std::shared_ptr<SafetensorsFile>> by_name;
  const fs::path single = fs::path(folder) / "model.safetensors";
  const fs::path index = fs::path(folder) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(single.string()));
    for (const auto& name : file->names()) by_name[name] = file;
  } else if (fs::exists(index)) {
    const Json json = read_json_file(index.string());
    SSM_CHECK(json.contains("weight_map") && json["weight_map"].is_object(), "'{}' has no weight_map",
              index.string());
    std::map<std::string, std::shared_ptr<SafetensorsFile>> files;
    for (const auto& [name, shard] : json["weight_map"].items()) {
      SSM_CHECK(shard.is_string(), "'{}': weight_map entry '{}' is not a file name", index.string(), name);
      auto& file = files[shard.get<std::string>()];
      if (!file) file = std::make_shared<SafetensorsFile>(SafetensorsFile::open((fs::path(folder) / shard.get<std::string>()).string()));
      SSM_CHECK(file->contains(name), "'{}': tensor '{}' is not in '{}'", index.string(), name, shard.get<std::string>());
      by_name[name] = file;
    }
  } else {
    fail("model folder '{}' has no model.safetensors (PyTorch .bin checkpoints are not read: convert them to "
         "safetensors)",
         folder);
  }
  return by_name;
}

}  // namespace

LanguageModel LanguageModel::load(const std::string& folder, const LoadOptions& options) {
  SSM_CHECK(options.matrix_dtype == DType::F32 || options.matrix_dtype == DType::BF16,
            "weights can be kept in F32 or BF16, not {}", dtype_name(options.matrix_dtype));
  LanguageModel model(ModelConfig::load_folder(folder));
  auto files = open_weights(folder);
  std::set<std::string> used;
  for (ParamRef& p : model.params()) {
    auto it = files.find(p.name);
    SSM_CHECK(it != files.end(), "model folder '{}': missing tensor '{}'", folder, p.name);
    const Tensor& stored = it->second->get(p.name);
    used.insert(p.name);
    SSM_CHECK(stored.dtype() == DType::F32 || stored.dtype() == DType::BF16 || stored.dtype() == DType::F16,
              "'{}': tensor '{}' has dtype {} (F32, BF16 or F16 expected)", it->second->path(), p.name,
              dtype_name(stored.dtype()));
    SSM_CHECK(stored.shape() == p.shape, "'{}': tensor '{}' has shape {} but the config needs {}",
              it->second->path(), p.name, shape_str(stored.shape()), shape_str(p.shape));
    const DType target = p.kind == ParamKind::Vector ? DType::F32 : options.matrix_dtype;
    // Weights already in the target dtype stay in the read-only mapping: no copy, no load time.
    if (stored.dtype() != target) *p.tensor = stored.to(target);
    else *p.tensor = options.writable ? stored.clone() : stored;
  }
  for (const auto& [name, file] : files) {
    if (used.count(name)) continue;
    if (name == "lm_head.weight" && model.config_.tie_embeddings) continue;  // saved tied copy
    fail("'{}': unexpected tensor '{}' for a {} model", file->path(), name, model.config_.model_type);
  }
  return model;
}

void LanguageModel::save(const std::string& folder) const {
  std::error_code error;
  fs::create_directories(folder, error);
  SSM_CHECK(!error && fs::is_directory(folder), "cannot create folder '{}': {}", folder, error.message());
  ModelConfig hf = config_;
  hf.layout = WeightLayout::HuggingFace;  // always saved with transformers' names
  LanguageModel& self = const_cast<LanguageModel&>(*this);
  std::vector<std::pair<std::string, Tensor>> tensors;
  const ParamList params = self.params();
  for (const ParamRef& p : params) {
    std::string name = p.name;
    if (name == "backbone.embedding.weight") name = "backbone.embeddings.weight";
    tensors.emplace_back(name, p.tensor->to(DType::F32));
  }
  write_safetensors((fs::path(folder) / "model.safetensors").string(), tensors);
  write_text_file((fs::path(folder) / "config.json").string(), hf.to_hf_json().dump(2) + "\n");
  Json generation = {{"_from_model_config", true}};
  if (config_.bos_id >= 0) generation["bos_token_id"] = config_.bos_id;
  if (config_.pad_id >= 0) generation["pad_token_id"] = config_.pad_id;
  if (config_.eos_ids.size() == 1) generation["eos_token_id"] = config_.eos_ids[0];
  else if (!config_.eos_ids.empty()) generation["eos_token_id"] = config_.eos_ids;
  write_text_file((fs::path(folder) / "generation_config.json").string(), generation.dump(2) + "\n");
}

int64_t LanguageModel::weight_bytes() const {
  int64_t bytes = 0;
  for (const ParamRef& p : const_cast<LanguageModel&>(*this).params()) bytes += int64_t(p.tensor->nbytes());
  return bytes;
}

ModelState LanguageModel::new_state(int64_t batch) const {
  ModelState state;
  state.batch = batch;
  for (const Block& block : blocks_) state.layers.push_back(block.mixer->new_state(batch));
  return state;
}

Tensor LanguageModel::embed(const Tensor& ids) const {
  SSM_CHECK(ids.dtype() == DType::I32, "token ids must be int32, got {}", dtype_name(ids.dtype()));
  Shape shape = ids.shape();
  shape.push_back(config_.d_model);
  Tensor out = Tensor::empty(shape);
  ops::embedding(embedding_, ids, out);
  return out;
}

Tensor LanguageModel::logits(const Tensor& hidden) const {
  Tensor normed = Tensor::empty({hidden.rows(), config_.d_model});
  ops::rmsnorm(hidden, norm_f_, float(config_.norm_eps), normed);
  Tensor out = Tensor::empty({hidden.rows(), config_.vocab_size});
  ops::linear(normed, head_weight(), Tensor(), out);
  return out;
}

Tensor LanguageModel::forward(const Tensor& ids, ModelState* state, bool all_positions) const {
  SSM_CHECK(ids.dim() == 2 && ids.size(0) > 0 && ids.size(1) > 0, "token ids must be [batch, length], got {}",
            shape_str(ids.shape()));
  const int64_t batch = ids.size(0), length = ids.size(1), d = config_.d_model;
  if (state) SSM_CHECK(state->batch == batch, "state holds {} sequences, ids {}", state->batch, batch);
  Tensor residual = embed(ids);
  Tensor normed = Tensor::empty({batch, length, d});
  Tensor mixed = Tensor::empty({batch, length, d});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    ops::rmsnorm(residual, blocks_[i].norm, float(config_.norm_eps), normed);
    blocks_[i].mixer->forward(normed, state ? &state->layers[i] : nullptr, mixed);
    ops::add_inplace(residual, mixed);
  }
  if (all_positions) return logits(residual.view({batch * length, d})).view({batch, length, config_.vocab_size});
  return logits(residual.select(1, length - 1));
}

Tensor LanguageModel::step(const Tensor& ids, ModelState& state) const {
  SSM_CHECK(ids.dim() == 1 && ids.size(0) == state.batch, "step takes one id per sequence ({}), got {}",
            state.batch, shape_str(ids.shape()));
  const int64_t batch = ids.size(0), d = config_.d_model;
  Tensor residual = embed(ids);
  Tensor normed = Tensor::empty({batch, d});
  Tensor mixed = Tensor::empty({batch, d});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    ops::rmsnorm(residual, blocks_[i].norm, float(config_.norm_eps), normed);
    blocks_[i].mixer->step(normed, state.layers[i], mixed);
    ops::add_inplace(residual, mixed);
  }
  return logits(residual);
}

}  // namespace ssm
