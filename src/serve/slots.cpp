#include "serve/slots.h"

#include <cctype>
#include <chrono>
#include <filesystem>

#include "serve/api_error.h"
#include "serve/fields.h"

namespace ssm::serve {

namespace {

bool plain_file_name(const std::string& name) {
  if (name.empty() || name.size() > 255 || name[0] == '.') return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

double milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

nlohmann::json slot_action(Scheduler& scheduler, const LanguageModel& model, const SlotFolder& folder, int64_t slot,
                           const std::string& action, const nlohmann::json& body) {
  if (folder.path.empty())
    throw ApiError(501, "saving and restoring slots is off: start the server with --slot-save-path DIR", {},
                   "not_supported");
  if (slot < 0 || slot >= folder.slots)
    bad_field("id_slot", "there is no slot {}: this server has {} (0 to {})", slot, folder.slots, folder.slots - 1);
  if (action != "save" && action != "restore") bad_field("action", "'action' must be save or restore");
  const Fields fields(body, {"filename"});
  const std::string filename = fields.string("filename").value_or("");
  if (!plain_file_name(filename))
    bad_field("filename",
              "'filename' must be a plain file name (letters, digits, '.', '_', '-'; not starting with '.')");
  const std::string path = (std::filesystem::path(folder.path) / filename).string();
  const auto start = std::chrono::steady_clock::now();
  if (action == "save") {
    const SlotSnapshots snapshots = scheduler.slot_snapshots(slot);
    const int64_t written = write_slot_file(path, folder.model_name, snapshots);
    return {{"id_slot", slot},
            {"filename", filename},
            {"n_saved", snapshots.tokens.size()},
            {"n_snapshots", snapshots.snapshots.size()},
            {"n_written", written},
            {"timings", {{"save_ms", milliseconds_since(start)}}}};
  }
  if (!std::filesystem::exists(path)) throw ApiError(404, "no saved slot named '" + filename + "'", "filename");
  int64_t read = 0;
  SlotSnapshots snapshots = read_slot_file(path, model, &read);
  const int64_t tokens = int64_t(snapshots.tokens.size());
  const int64_t kept = scheduler.restore_slot(slot, std::move(snapshots));
  return {{"id_slot", slot},     {"filename", filename}, {"n_restored", tokens},
          {"n_snapshots", kept}, {"n_read", read},       {"timings", {{"restore_ms", milliseconds_since(start)}}}};
}

}  // namespace ssm::serve
