// A slot's saved prefix-cache snapshots: the prompt it ran and the model's state (with the next
// token's logits) at the points along it the cache holds, as one safetensors file: "tokens" (I32
// [L]), "lengths" (I64 [S]: how many tokens each snapshot covers), and per snapshot k
// "snapshot.<k>.logits" (F32 [vocab]) and "snapshot.<k>.mixer.<i>.<name>" (ModelState's export),
// with the metadata {"format": "ssm-slot", "model": name}.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "infer/prefix_cache.h"
#include "model/language_model.h"

namespace ssm::serve {

struct SlotSnapshots {
  std::vector<int32_t> tokens;                          // the prompt
  std::vector<std::pair<int64_t, Snapshot>> snapshots;  // by length, shortest first; each covers tokens[:length]
};

// Writes through a temporary file and a rename; returns the file's size in bytes.
int64_t write_slot_file(const std::string& path, const std::string& model_name, const SlotSnapshots& slot);
// Reads a file write_slot_file wrote for this model (ssm::Error naming what does not fit); `bytes`
// receives its size.
SlotSnapshots read_slot_file(const std::string& path, const LanguageModel& model, int64_t* bytes = nullptr);

}  // namespace ssm::serve
