#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "core/safetensors.h"

namespace ssm {

namespace fs = std::filesystem;

namespace {

// GPT-2's byte → printable character map (bytes_to_unicode), as UTF-8.
std::string byte_char(int b) {
  int cp;
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
    cp = b;
  } else {
    int n = 0;  // rank of b among the bytes not printable as themselves
    for (int i = 0; i < b; ++i)
      if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

std::string checkpoint_name(int64_t step) { return fmt::format("checkpoint-{:08d}", step); }

std::optional<int64_t> checkpoint_step(const fs::path& p) {
  const std::string name = p.filename().string();
  const std::string prefix = "checkpoint-";
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) return std::nullopt;
  int64_t step = 0;
  for (char ch : name.substr(prefix.size())) {
    if (ch < '0' || ch > '9') return std::nullopt;
    step = step * 10 + (ch - '0');
  }
  return step;
}

// Checkpoint folders being written, or being removed, have names that latest_checkpoint ignores.
const std::string kUnfinishedPrefix = ".tmp-";
const std::string kRetiredPrefix = ".old-";

bool is_unfinished_checkpoint(const std::string& name) {
  return name.rfind(kUnfinishedPrefix + "checkpoint-", 0) == 0 || name.rfind(kRetiredPrefix + "checkpoint-", 0) == 0;
}

// Removes a checkpoint folder: first renamed out of sight (one atomic step), then deleted file by file,
// so that a crash midway never leaves a checkpoint-* folder with files missing.
void retire(const fs::path& checkpoint) {
  const fs::path old =
      checkpoint.parent_path() / fmt::format("{}{}-{}", kRetiredPrefix, checkpoint.filename().string(), ::getpid());
  std::error_code error;
  fs::remove_all(old, error);
  fs::rename(checkpoint, old, error);
  if (error) fail("cannot remove checkpoint '{}': {}", checkpoint.string(), error.message());
  fs::remove_all(old, error);
}

}  // namespace

std::string byte_tokenizer_json(int64_t vocab_size) {
  SSM_CHECK(vocab_size >= 256, "a byte-level tokenizer needs a vocabulary of at least 256, got {}", vocab_size);
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  Json added = Json::array();
  if (vocab_size >= 257) {
    added.push_back({{"id", 256},
                     {"content", "<|endoftext|>"},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  Json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", Json::array()}}}};
  return tok.dump(1) + "\n";
}

void write_model_folder(const std::string& folder, const LanguageModel& model, const std::string& tokenizer_json) {
  model.save(folder);
  if (!tokenizer_json.empty()) write_text_file((fs::path(folder) / "tokenizer.json").string(), tokenizer_json);
}

std::string save_checkpoint(const std::string& dir, const LanguageModel& model, const AdamW& optimizer,
                            const TrainerState& state, const std::string& tokenizer_json, int keep) {
  const fs::path final_path = fs::path(dir) / checkpoint_name(state.step);
  const fs::path tmp =
      fs::path(dir) / fmt::format("{}{}-{}", kUnfinishedPrefix, checkpoint_name(state.step), ::getpid());
  try {
    std::error_code error;
    fs::remove_all(tmp, error);
    fs::create_directory(tmp, error);
    SSM_CHECK(!error, "cannot create folder '{}': {}", tmp.string(), error.message());
    write_model_folder(tmp.string(), model, tokenizer_json);
    write_safetensors((tmp / "optimizer.safetensors").string(), optimizer.state_tensors());
    Json js = {{"step", state.step},
               {"seed", state.seed},
               {"tokens_seen", state.tokens_seen},
               {"optimizer_steps", optimizer.steps()},
               {"options", state.options}};
    write_text_file((tmp / "trainer_state.json").string(), js.dump(2) + "\n");
    // The files are on the disk (write_text_file syncs them and the folder); the rename publishes them whole.
    // A checkpoint of the same step (one that latest_checkpoint skipped) is replaced only once the new one
    // is complete; a crash between the two renames leaves both under unfinished names, and --resume
    // continues from an earlier checkpoint.
    if (fs::exists(final_path)) retire(final_path);
    SSM_CHECK(::rename(tmp.c_str(), final_path.c_str()) == 0, "cannot rename '{}' to '{}': {}", tmp.string(),
              final_path.string(), std::strerror(errno));
    sync_folder(dir);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    const std::optional<std::string> last = latest_checkpoint(dir);
    fail("cannot save checkpoint '{}': {}; {}", final_path.string(), e.what(),
         last ? fmt::format("the last complete checkpoint, '{}', is intact", *last) : "no complete checkpoint yet");
  }
  // Keep the newest `keep`.
  std::vector<std::pair<int64_t, fs::path>> all;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory())
      if (auto s = checkpoint_step(entry.path())) all.emplace_back(*s, entry.path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + size_t(std::max(keep, 1)) < all.size(); ++i) retire(all[i].second);
  return final_path.string();
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  if (!fs::is_directory(dir)) return std::nullopt;
  std::optional<std::pair<int64_t, std::string>> best;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_directory()) continue;
    const auto s = checkpoint_step(entry.path());
    if (!s || !fs::exists(entry.path() / "trainer_state.json")) continue;
    if (!best || *s > best->first) best = std::pair{*s, entry.path().string()};
  }
  if (!best) return std::nullopt;
  return best->second;
}

int remove_checkpoints(const std::string& dir) {
  if (!fs::is_directory(dir)) return 0;
  remove_unfinished_checkpoints(dir);
  std::vector<fs::path> doomed;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && checkpoint_step(entry.path())) doomed.push_back(entry.path());
  for (const auto& p : doomed) retire(p);
  return int(doomed.size());
}

int remove_unfinished_checkpoints(const std::string& dir) {
  if (!fs::is_directory(dir)) return 0;
  std::vector<fs::path> doomed;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && is_unfinished_checkpoint(entry.path().filename().string()))
      doomed.push_back(entry.path());
  std::error_code error;
  for (const auto& p : doomed) fs::remove_all(p, error);
  return int(doomed.size());
}

TrainerState read_trainer_state(const std::string& checkpoint) {
  const std::string path = (fs::path(checkpoint) / "trainer_state.json").string();
  const Json js = read_json_file(path);
  TrainerState s;
  try {
    s.step = js.at("step").get<int64_t>();
    s.seed = js.at("seed").get<uint64_t>();
    s.tokens_seen = js.at("tokens_seen").get<int64_t>();
    if (js.contains("options")) s.options = js["options"];
  } catch (const Json::exception& e) {
    fail("'{}': bad trainer state: {}", path, e.what());
  }
  return s;
}

void load_optimizer_state(const std::string& checkpoint, AdamW& optimizer, int64_t steps) {
  const std::string path = (fs::path(checkpoint) / "optimizer.safetensors").string();
  SSM_CHECK(fs::exists(path), "checkpoint '{}' has no optimizer.safetensors", checkpoint);
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::map<std::string, Tensor> tensors;
  for (const auto& name : file.names()) tensors[name] = file.get(name);
  optimizer.load_state(tensors, steps, path);
}

}  // namespace ssm
