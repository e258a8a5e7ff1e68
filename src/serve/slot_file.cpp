#include "serve/slot_file.h"

#include <fmt/format.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/safetensors.h"

namespace ssm::serve {

namespace {
constexpr const char* kFormat = "ssm-slot";
std::string snapshot_prefix(size_t k) { return fmt::format("snapshot.{}.", k); }
}  // namespace

int64_t write_slot_file(const std::string& path, const std::string& model_name, const SlotSnapshots& slot) {
  const int64_t length = int64_t(slot.tokens.size()), count = int64_t(slot.snapshots.size());
  std::vector<std::pair<std::string, Tensor>> tensors;
  Tensor tokens = Tensor::empty({length}, DType::I32), lengths = Tensor::empty({count}, DType::I64);
  std::memcpy(tokens.data<int32_t>(), slot.tokens.data(), slot.tokens.size() * sizeof(int32_t));
  tensors.emplace_back("tokens", tokens);
  tensors.emplace_back("lengths", lengths);
  for (size_t k = 0; k < slot.snapshots.size(); ++k) {
    const auto& [covered, snapshot] = slot.snapshots[k];
    lengths.data<int64_t>()[k] = covered;
    Tensor logits = Tensor::empty({int64_t(snapshot.logits.size())}, DType::F32);
    std::memcpy(logits.data<float>(), snapshot.logits.data(), snapshot.logits.size() * sizeof(float));
    tensors.emplace_back(snapshot_prefix(k) + "logits", logits);
    for (auto& [name, tensor] : snapshot.state.export_sequence(0))
      tensors.emplace_back(snapshot_prefix(k) + name, std::move(tensor));
  }
  write_safetensors(path, tensors, {{"format", kFormat}, {"model", model_name}});
  return int64_t(std::filesystem::file_size(path));
}

SlotSnapshots read_slot_file(const std::string& path, const LanguageModel& model, int64_t* bytes) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto format = file.metadata().find("format");
  SSM_CHECK(format != file.metadata().end() && format->second == kFormat, "{}: not a slot file (format '{}')", path,
            kFormat);
  const auto checked = [&](const std::string& name, DType dtype, int64_t dims) -> const Tensor& {
    SSM_CHECK(file.contains(name), "{}: no tensor '{}'", path, name);
    const Tensor& t = file.get(name);
    SSM_CHECK(t.dtype() == dtype && t.dim() == dims, "{}: '{}' is {} {}, expected {} of {} dimension(s)", path, name,
              dtype_name(t.dtype()), shape_str(t.shape()), dtype_name(dtype), dims);
    return t;
  };
  SlotSnapshots slot;
  const Tensor& tokens = checked("tokens", DType::I32, 1);
  const int64_t vocab = model.config().vocab_size;
  for (int64_t i = 0; i < tokens.numel(); ++i) {
    const int32_t id = tokens.data<int32_t>()[i];
    SSM_CHECK(id >= 0 && id < vocab, "{}: token id {} is outside the model's vocabulary ({})", path, id, vocab);
    slot.tokens.push_back(id);
  }
  const Tensor& lengths = checked("lengths", DType::I64, 1);
  StateTensorMap all;
  for (const std::string& name : file.names()) all.emplace(name, file.get(name));
  for (int64_t k = 0; k < lengths.numel(); ++k) {
    const int64_t covered = lengths.data<int64_t>()[k];
    SSM_CHECK(covered >= 1 && covered <= tokens.numel(), "{}: snapshot {} covers {} of {} tokens", path, k, covered,
              tokens.numel());
    const std::string prefix = snapshot_prefix(size_t(k));
    const Tensor& logits = checked(prefix + "logits", DType::F32, 1);
    SSM_CHECK(logits.numel() == vocab, "{}: {}logits has {} values, the model's vocabulary {}", path, prefix,
              logits.numel(), vocab);
    StateTensorMap state;
    for (auto it = all.lower_bound(prefix); it != all.end() && it->first.starts_with(prefix); ++it)
      if (it->first != prefix + "logits") state.emplace(it->first.substr(prefix.size()), it->second);
    Snapshot snapshot{model.new_state(1), std::vector<float>(logits.data<float>(), logits.data<float>() + vocab)};
    try {
      snapshot.state.import_sequence(0, state);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: snapshot {} does not fit this model: {}", path, k, e.what()));
    }
    slot.snapshots.emplace_back(covered, std::move(snapshot));
  }
  if (bytes) *bytes = int64_t(std::filesystem::file_size(path));
  return slot;
}

}  // namespace ssm::serve
