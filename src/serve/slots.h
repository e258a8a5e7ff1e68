// POST /slots/{id}?action=save|restore with {"filename": name}, as llama.cpp's server has them.
// save writes the prompt slot `id` ran last, with the prefix cache's snapshots along it, to
// <slot_save_path>/name (slot_file.h; through a temporary file and a rename); restore reads such a
// file back into the prefix cache, where its snapshots stay for every request whose prompt they
// begin. A file name is one plain name (letters, digits, '.', '_', '-', not starting with '.'), so
// nothing outside the folder can be named.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "model/language_model.h"
#include "serve/scheduler.h"

namespace ssm::serve {

struct SlotFolder {
  std::string path;  // empty: saving and restoring are off (501)
  std::string model_name;
  int64_t slots = 0;
};

// The response ({"id_slot", "filename", "n_saved" | "n_restored" (tokens), "n_snapshots" (those written, or
// kept by the cache's budget), "n_written" | "n_read" (bytes), "timings"}),
// or an ApiError: 400 for a bad id, action or file name, 404 for a file to restore that is not there.
nlohmann::json slot_action(Scheduler& scheduler, const LanguageModel& model, const SlotFolder& folder, int64_t slot,
                           const std::string& action, const nlohmann::json& body);

}  // namespace ssm::serve
