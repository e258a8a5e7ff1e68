#include "model/language_model.h"

#include <algorithm>
#include <charconv>
#include <exception>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include <omp.h>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "ops/ops.h"

namespace ssm {

namespace fs = std::filesystem;

// ---- state ----

void ModelState::reserve(int64_t length) {
  for (auto& state : mixers)
    if (state) state->reserve(length);
}

bool ModelState::resizable() const {
  return std::all_of(mixers.begin(), mixers.end(), [](const auto& state) { return !state || state->resizable(); });
}

namespace {

// work(i) for i in [0, count): on the OpenMP threads where `on_threads` (states on the CPU, whose
// mixers' copies and fills one core does at about 10 GB/s; a server moves whole states of 19 MB
// several times per prompt) and outside a parallel region, else one by one (the GPU's copies are
// queued on this thread's stream). Rethrows the first exception a call threw.
template <class Work>
void for_each_mixer(size_t count, bool on_threads, Work work) {
  if (!on_threads || count < 2 || omp_in_parallel()) {
    for (size_t i = 0; i < count; ++i) work(i);
    return;
  }
  std::exception_ptr error;  // none may leave the region
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < count; ++i) {
    try {
      work(i);
    } catch (...) {
#pragma omp critical(ssm_for_each_mixer_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace

void ModelState::resize(int64_t new_batch) {
  SSM_CHECK(resizable(), "ModelState::resize: a mixer's state cannot change its number of sequences in place");
  for_each_mixer(mixers.size(), device == Device::CPU, [&](size_t i) {
    if (mixers[i]) mixers[i]->resize(new_batch);
  });
  batch = new_batch;
}

int64_t ModelState::bytes() const {
  int64_t total = 0;
  for (const auto& state : mixers)
    if (state) total += state->bytes();
  return total;
}

void ModelState::copy_sequence(int64_t from_index, ModelState& to, int64_t to_index) const {
  copy_sequences(from_index, to, to_index, 1);
}

void ModelState::copy_sequences(int64_t from_first, ModelState& to, int64_t to_first, int64_t count) const {
  SSM_CHECK(to.mixers.size() == mixers.size(), "copy_sequence: states of different models");
  if (device == Device::CUDA && to.device == Device::CUDA) {  // one kernel for the layers that allow it
    std::vector<ByteCopy> copies;
    for (size_t i = 0; i < mixers.size(); ++i)
      for (int64_t s = 0; s < count && mixers[i]; ++s)
        if (!mixers[i]->sequence_copies(from_first + s, *to.mixers[i], to_first + s, copies))
          mixers[i]->copy_sequence(from_first + s, *to.mixers[i], to_first + s);
    copy_many(copies, Device::CUDA);
    return;
  }
  for_each_mixer(mixers.size(), device == Device::CPU && to.device == Device::CPU, [&](size_t i) {
    for (int64_t s = 0; s < count && mixers[i]; ++s)
      mixers[i]->copy_sequence(from_first + s, *to.mixers[i], to_first + s);
  });
}

StateTensors ModelState::export_sequence(int64_t index) const {
  StateTensors out;
  for (size_t i = 0; i < mixers.size(); ++i)
    if (mixers[i])
      for (auto& [name, tensor] : mixers[i]->export_sequence(index))
        out.emplace_back(fmt::format("mixer.{}.{}", i, name), std::move(tensor));
  return out;
}

void ModelState::import_sequence(int64_t index, const StateTensorMap& tensors) {
  std::vector<StateTensorMap> per_mixer(mixers.size());
  for (const auto& [name, tensor] : tensors) {
    // "mixer.<i>.<rest>"
    size_t mixer = 0;
    const char* digits = name.c_str() + std::min<size_t>(name.size(), 6);
    const auto [end, error] = std::from_chars(digits, name.c_str() + name.size(), mixer);
    const bool named = name.starts_with("mixer.") && error == std::errc() && end != digits && *end == '.';
    SSM_CHECK(named && mixer < mixers.size() && mixers[mixer],
              "the state has a tensor '{}' that this model has no place for", name);
    per_mixer[mixer].emplace(std::string(end + 1), tensor);
  }
  for (size_t i = 0; i < mixers.size(); ++i)
    if (mixers[i]) mixers[i]->import_sequence(index, per_mixer[i]);
}

// ---- construction, parameters ----

LanguageModel::LanguageModel(const ModelConfig& config) : config_(config) {
  size_t slot = 0;
  for (const BranchPlan& plan : config.branches) {
    Branch branch;
    for (const MixerPlan& mixer : plan.mixers)
      branch.mixers.push_back({mixer.settings->build(), mixer.input_scale, mixer.output_scale});
    first_slot_.push_back(slot);
    slot += branch.mixers.size();
    branches_.push_back(std::move(branch));
  }
}

ParamList LanguageModel::params() {
  const int64_t d = config_.d_model, v = config_.vocab_size;
  ParamList params;
  params.push_back({config_.embedding_name, {v, d}, &embedding_, ParamKind::Embedding, true});
  for (size_t i = 0; i < branches_.size(); ++i) {
    const BranchPlan& plan = config_.branches[i];
    params.push_back({plan.norm, {d}, &branches_[i].norm, ParamKind::Vector, false});
    for (size_t j = 0; j < plan.mixers.size(); ++j) branches_[i].mixers[j].mixer->add_params(plan.mixers[j].prefix, params);
  }
  params.push_back({config_.final_norm_name, {d}, &norm_f_, ParamKind::Vector, false});
  if (!config_.tie_embeddings()) params.push_back({config_.head_name, {v, d}, &lm_head_, ParamKind::Matrix, true});
  return params;
}

void LanguageModel::allocate(DType matrix_dtype) {
  for (ParamRef& p : params()) *p.tensor = Tensor::zeros(p.shape, p.kind == ParamKind::Vector ? DType::F32 : matrix_dtype);
}

int64_t LanguageModel::weight_bytes() const {
  int64_t bytes = 0;
  for (const ParamRef& p : const_cast<LanguageModel&>(*this).params()) bytes += int64_t(p.tensor->nbytes());
  return bytes;
}

int64_t LanguageModel::weight_bytes(WeightDType as) const {
  int64_t bytes = 0;
  for (const ParamRef& p : const_cast<LanguageModel&>(*this).params()) {
    const bool matrix = p.kind != ParamKind::Vector;
    const size_t element = !matrix || as == WeightDType::F32 ? 4
                           : as == WeightDType::BF16         ? 2
                                                             : dtype_size(p.tensor->dtype());
    bytes += shape_numel(p.shape) * int64_t(element);
  }
  return bytes;
}

int64_t LanguageModel::parameter_count() const {
  int64_t count = 0;
  for (const ParamRef& p : const_cast<LanguageModel&>(*this).params()) count += shape_numel(p.shape);
  return count;
}

double LanguageModel::matmul_macs_per_token() const {
  double macs = 0;
  for (const Branch& branch : branches_)
    for (const MixerSlot& slot : branch.mixers) macs += slot.mixer->matmul_macs_per_token();
  return macs;
}

double LanguageModel::state_bytes(int64_t context) const {
  double bytes = double(new_state(1).bytes());
  for (const Branch& branch : branches_)
    for (const MixerSlot& slot : branch.mixers) {
      const int64_t limit = slot.mixer->cache_limit_tokens();
      const int64_t tokens = limit > 0 ? std::min(context, limit) : context;
      bytes += slot.mixer->cache_bytes_per_token() * double(tokens);
    }
  return bytes;
}

// ---- loading and saving ----

WeightDType weight_dtype_from_name(const std::string& name) {
  for (WeightDType dtype : {WeightDType::Auto, WeightDType::F32, WeightDType::BF16})
    if (name == weight_dtype_name(dtype)) return dtype;
  fail("unknown weight dtype '{}' (auto, f32, bf16)", name);
}

const char* weight_dtype_name(WeightDType dtype) {
  switch (dtype) {
    case WeightDType::F32: return "f32";
    case WeightDType::BF16: return "bf16";
    default: return "auto";
  }
}

namespace {

// `stored` (in a file mapping) converted to `dtype`, a few MiB at a time, dropping the pages read as
// it goes: the load never holds the file's bytes and the converted copy at once.
Tensor convert_from_mapping(const Tensor& stored, DType dtype) {
  if (stored.dim() == 0 || stored.size(0) == 0) return stored.to(dtype);
  Tensor out = Tensor::empty(stored.shape(), dtype);
  const int64_t rows = stored.size(0), row_bytes = int64_t(stored.nbytes()) / rows;
  const int64_t block = std::max<int64_t>(1, (int64_t(4) << 20) / std::max<int64_t>(row_bytes, 1));
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    const Tensor source = stored.slice(0, r, n);
    Tensor target = out.slice(0, r, n);
    target.copy_from(source);
    release_mapped_pages(source);
  }
  return out;
}

// The dtype a matrix stored as `stored` is kept in.
DType matrix_dtype(WeightDType wanted, DType stored) {
  switch (wanted) {
    case WeightDType::F32: return DType::F32;
    case WeightDType::BF16: return DType::BF16;
    default: return stored;
  }
}

// Tensor name → file, for model.safetensors or a sharded model.safetensors.index.json.
std::map<std::string, std::shared_ptr<SafetensorsFile>> open_weights(const std::string& folder) {
  std::map<std::string, std::shared_ptr<SafetensorsFile>> by_name;
  const fs::path single = fs::path(folder) / "model.safetensors";
  const fs::path index = fs::path(folder) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(single.string()));
    for (const auto& name : file->names()) by_name[name] = file;
  } else if (fs::exists(index)) {
    std::map<std::string, std::shared_ptr<SafetensorsFile>> files;
    for (const auto& [name, shard] : read_safetensors_index(index.string())) {
      auto& file = files[shard];
      if (!file) file = std::make_shared<SafetensorsFile>(SafetensorsFile::open((fs::path(folder) / shard).string()));
      SSM_CHECK(file->contains(name), "'{}': tensor '{}' is not in '{}'", index.string(), name, shard);
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
  LanguageModel model(ModelConfig::load_folder(folder));
  auto files = open_weights(folder);
  std::set<std::string> used;
  bool converted = false;
  std::vector<Tensor*> in_mapping;  // tensors still read from the file mapping
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
    const DType target = p.kind == ParamKind::Vector ? DType::F32 : matrix_dtype(options.weights, stored.dtype());
    // Weights already in the target dtype stay in the read-only mapping: no copy, no load time.
    if (stored.dtype() != target) {
      *p.tensor = convert_from_mapping(stored, target);
      converted = true;
    } else {
      *p.tensor = options.writable ? stored.clone() : stored;
      if (!options.writable) in_mapping.push_back(p.tensor);
    }
  }
  // Once anything was converted, the pages it was read from would stay resident as long as one
  // tensor still refers to the mapping: copy the rest out too, so the mapping is released. Not for
  // another device: to_device() below replaces every tensor, which releases it (a host copy of a
  // BF16 7B checkpoint on its way to the GPU doubled the peak host memory, to 26 GiB).
  if (converted && options.device == Device::CPU)
    for (Tensor* t : in_mapping) *t = t->clone();
  for (const auto& [name, file] : files) {
    if (used.count(name)) continue;
    if (name == "lm_head.weight" && model.config_.tie_embeddings()) continue;  // saved tied copy
    fail("'{}': unexpected tensor '{}' for a {} model", file->path(), name, model.config_.model_type);
  }
  if (options.device != Device::CPU)
    model.to_device(options.device, options.weights == WeightDType::F32 ? DType::F32 : DType::BF16);
  return model;
}

void LanguageModel::save(const std::string& folder, DType matrix_dtype) const {
  SSM_CHECK(matrix_dtype == DType::F32 || matrix_dtype == DType::BF16 || matrix_dtype == DType::F16,
            "save: matrices are written as F32, BF16 or F16, not {}", dtype_name(matrix_dtype));
  std::error_code error;
  fs::create_directories(folder, error);
  SSM_CHECK(!error && fs::is_directory(folder), "cannot create folder '{}': {}", folder, error.message());
  // The names of the config as saved (a state-spaces model is saved with transformers' names): the
  // same plan, so its parameters come in the same order.
  LanguageModel saved_shape(ModelConfig::from_json(config_.hf_config, folder + "/config.json"));
  const ParamList names = saved_shape.params();
  const ParamList params = const_cast<LanguageModel&>(*this).params();
  SSM_CHECK(names.size() == params.size(), "save: the saved config does not describe this model");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (size_t i = 0; i < params.size(); ++i) {
    const DType dtype = params[i].kind == ParamKind::Vector ? DType::F32 : matrix_dtype;
    tensors.emplace_back(names[i].name, params[i].tensor->to_device(Device::CPU).to(dtype));
  }
  write_safetensors((fs::path(folder) / "model.safetensors").string(), tensors);
  write_text_file((fs::path(folder) / "config.json").string(), config_.hf_config.dump(2) + "\n");
  Json generation = {{"_from_model_config", true}};
  if (config_.bos_id >= 0) generation["bos_token_id"] = config_.bos_id;
  if (config_.pad_id >= 0) generation["pad_token_id"] = config_.pad_id;
  if (config_.eos_ids.size() == 1) generation["eos_token_id"] = config_.eos_ids[0];
  else if (!config_.eos_ids.empty()) generation["eos_token_id"] = config_.eos_ids;
  write_text_file((fs::path(folder) / "generation_config.json").string(), generation.dump(2) + "\n");
}

// ---- computing ----

bool LanguageModel::replayable_step() const {
  for (const Branch& branch : branches_)
    for (const MixerSlot& slot : branch.mixers)
      if (!slot.mixer->replayable_step()) return false;
  return true;
}

bool LanguageModel::replayable_forward() const {
  for (const Branch& branch : branches_)
    for (const MixerSlot& slot : branch.mixers)
      if (!slot.mixer->replayable_forward()) return false;
  return true;
}

ModelState LanguageModel::new_state(int64_t batch) const {
  ModelState state;
  state.batch = batch;
  state.device = device();
  for (const Branch& branch : branches_)
    for (const MixerSlot& slot : branch.mixers) state.mixers.push_back(slot.mixer->new_state(batch));
  return state;
}

ModelState LanguageModel::unset_state(const ModelState& like, int64_t batch) const {
  ModelState state;
  state.batch = batch;
  state.device = device();
  size_t i = 0;
  for (const Branch& branch : branches_)
    for (const MixerSlot& slot : branch.mixers) {
      SSM_CHECK(i < like.mixers.size(), "unset_state: the state given is not one of this model's");
      const MixerState* from = like.mixers[i++].get();
      std::unique_ptr<MixerState> unset = from ? from->unset_like(batch) : nullptr;
      state.mixers.push_back(unset ? std::move(unset) : slot.mixer->new_state(batch));
    }
  SSM_CHECK(i == like.mixers.size(), "unset_state: the state given is not one of this model's");
  return state;
}

DType LanguageModel::activation_dtype() const {
  return device() == Device::CPU ? DType::F32 : embedding_.dtype();
}

void LanguageModel::to_device(Device device, DType matrix_dtype) {
  require_device(device);
  // Mixers first: one without kernels for `device` refuses before anything has moved.
  for (Branch& branch : branches_)
    for (MixerSlot& slot : branch.mixers) slot.mixer->to_device(device);
  for (ParamRef& p : params()) {
    const DType dtype = p.kind == ParamKind::Vector ? DType::F32 : matrix_dtype;
    *p.tensor = p.tensor->to(dtype).to_device(device);
  }
}

Tensor LanguageModel::ids_here(const Tensor& ids, Workspace& ws) const {
  SSM_CHECK(ids.dtype() == DType::I32, "token ids must be int32, got {}", dtype_name(ids.dtype()));
  if (ids.device() == device()) return ids;
  Tensor here = ws.take(ids.shape(), DType::I32);
  copy_ids(ids, here);
  return here;
}

void LanguageModel::copy_ids(const Tensor& ids, Tensor& here) const {
  SSM_CHECK(ids.dtype() == DType::I32, "token ids must be int32, got {}", dtype_name(ids.dtype()));
  SSM_CHECK(here.dtype() == DType::I32 && here.shape() == ids.shape() && here.device() == device(),
            "copy_ids: the ids {} need an I32 place of their shape on the model's device, got {} {} on the {}",
            shape_str(ids.shape()), dtype_name(here.dtype()), shape_str(here.shape()), device_name(here.device()));
  if (ids.device() != Device::CPU) {
    here.copy_from(ids);
    return;
  }
  // The GPU cannot report an id outside the vocabulary, so the host checks before the copy.
  const Tensor host = ids.contiguous();
  for (int64_t i = 0; i < host.numel(); ++i) {
    const int32_t id = host.data<int32_t>()[i];
    SSM_CHECK(id >= 0 && id < config_.vocab_size, "token id {} is outside the vocabulary [0, {})", id,
              config_.vocab_size);
  }
  here.copy_from(host);
}

void LanguageModel::embed(const Tensor& ids, Tensor& out) const {
  SSM_CHECK(ids.dtype() == DType::I32, "token ids must be int32, got {}", dtype_name(ids.dtype()));
  ops::embedding(embedding_, ids, out);
  if (config_.embedding_scale != 1.0f) ops::scale(out, config_.embedding_scale, out);
}

namespace {

// h += the pending output, where one is pending.
void add_pending(Residual& r) {
  if (!r.pending) return;
  if (r.pending_scale == 1.0f) ops::add_inplace(r.h, r.mixed);
  else ops::add_scaled_inplace(r.h, r.mixed, r.pending_scale);
  r.pending = false;
}

}  // namespace

void LanguageModel::normalize(Residual& r, const Tensor& w, Tensor& out) const {
  if (r.pending) ops::add_rmsnorm(r.h, r.mixed, r.pending_scale, w, float(config_.norm_eps), out);
  else ops::rmsnorm(r.h, w, float(config_.norm_eps), out);
  r.pending = false;
}

void LanguageModel::logits(Residual& r, Tensor& out, Workspace& ws) const {
  WorkspaceScope scope(ws);
  Tensor normed = ws.take({r.h.rows(), config_.d_model}, activation_dtype());
  normalize(r, norm_f_, normed);
  ops::linear(normed, head_weight(), Tensor(), out);
  if (config_.logit_scale != 1.0f) ops::scale(out, config_.logit_scale, out);
  if (config_.logit_soft_cap > 0) ops::soft_cap(out, config_.logit_soft_cap, out);
}

void LanguageModel::apply_branch(size_t index, Residual& r, ModelState* state, bool one_token, Workspace& ws) const {
  WorkspaceScope scope(ws);
  const Branch& branch = branches_[index];
  // A step through a lone mixer that takes the norm and the residual add in: h is brought up to date
  // first (a mixer without that form may have left its output pending), then updated in place.
  const MixerSlot* only = branch.mixers.size() == 1 ? &branch.mixers[0] : nullptr;
  if (one_token && only && only->input_scale == 1.0f && only->output_scale == 1.0f &&
      only->mixer->fuses_residual_step()) {
    add_pending(r);
    only->mixer->step_in_residual(r.h, branch.norm, float(config_.norm_eps), state->mixers[first_slot_[index]].get(),
                                  ws);
    return;
  }
  const DType act = activation_dtype();
  Tensor normed = ws.take(r.h.shape(), act);
  normalize(r, branch.norm, normed);  // consumes the pending output, so r.mixed is free again
  Tensor scaled;  // the input of a mixer with an input multiplier (Falcon-H1)
  for (size_t j = 0; j < branch.mixers.size(); ++j) {
    const MixerSlot& slot = branch.mixers[j];
    const Tensor* input = &normed;
    if (slot.input_scale != 1.0f) {
      if (!scaled.defined()) scaled = ws.take(r.h.shape(), act);
      ops::scale(normed, slot.input_scale, scaled);
      input = &scaled;
    }
    MixerState* mixer_state = state ? state->mixers[first_slot_[index] + j].get() : nullptr;
    if (one_token) slot.mixer->step(*input, mixer_state, r.mixed, ws);
    else slot.mixer->forward(*input, mixer_state, r.mixed, ws);
    r.pending = true;
    r.pending_scale = slot.output_scale;
    if (j + 1 < branch.mixers.size()) add_pending(r);  // the next mixer writes r.mixed again
  }
}

namespace {

void check_prompt_ids(const Tensor& ids, const ModelState* state) {
  SSM_CHECK(ids.dim() == 2 && ids.size(0) > 0 && ids.size(1) > 0, "token ids must be [batch, length], got {}",
            shape_str(ids.shape()));
  if (state) SSM_CHECK(state->batch == ids.size(0), "state holds {} sequences, ids {}", state->batch, ids.size(0));
}

}  // namespace

Residual LanguageModel::run_branches(const Tensor& ids, ModelState* state, bool one_token, Workspace& ws) const {
  Shape shape = ids.shape();
  shape.push_back(config_.d_model);
  Residual r{ws.take(shape, activation_dtype()), ws.take(shape, activation_dtype())};
  embed(ids_here(ids, ws), r.h);
  for (size_t i = 0; i < branches_.size(); ++i) {
    make_branch_params(i, i + 1 < branches_.size() ? std::optional<size_t>(i + 1) : std::nullopt);
    apply_branch(i, r, state, one_token, ws);
  }
  return r;
}

Tensor LanguageModel::hidden_states(const Tensor& ids, ModelState* state, Workspace& ws) const {
  check_prompt_ids(ids, state);
  Residual r = run_branches(ids, state, false, ws);
  add_pending(r);
  return r.h;
}

Tensor LanguageModel::forward(const Tensor& ids, ModelState* state, bool all_positions, Workspace& ws) const {
  check_prompt_ids(ids, state);
  const int64_t batch = ids.size(0), length = ids.size(1), d = config_.d_model, v = config_.vocab_size;
  Tensor out = all_positions ? ws.take({batch, length, v}) : ws.take({batch, v});
  WorkspaceScope scope(ws);
  Residual r = run_branches(ids, state, false, ws);
  // The head reads every position, or only the last of each sequence (and adds only there).
  if (all_positions) {
    r.h = r.h.view({batch * length, d});
    r.mixed = r.mixed.view({batch * length, d});
  } else {
    r.h = r.h.select(1, length - 1);
    r.mixed = r.mixed.select(1, length - 1);
  }
  Tensor rows = all_positions ? out.view({batch * length, v}) : out;
  logits(r, rows, ws);
  return out;
}

Tensor LanguageModel::step(const Tensor& ids, ModelState& state, Workspace& ws) const {
  SSM_CHECK(ids.dim() == 1 && ids.size(0) == state.batch, "step takes one id per sequence ({}), got {}",
            state.batch, shape_str(ids.shape()));
  Tensor out = ws.take({ids.size(0), config_.vocab_size});
  WorkspaceScope scope(ws);
  Residual r = run_branches(ids, &state, true, ws);
  logits(r, out, ws);
  return out;
}

Tensor LanguageModel::forward(const Tensor& ids, ModelState* state, bool all_positions) const {
  Workspace ws(device());
  return forward(ids, state, all_positions, ws);
}

Tensor LanguageModel::step(const Tensor& ids, ModelState& state) const {
  Workspace ws(device());
  return step(ids, state, ws);
}

}  // namespace ssm
