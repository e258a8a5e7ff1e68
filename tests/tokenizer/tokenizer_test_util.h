// Helpers for the tokenizer tests: hand-made byte-level BPE tokenizer.json files and temporary folders.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"

namespace ssm::test {

// A fresh folder under the system temp dir, removed with the object.
class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("ssm-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// GPT-2's byte -> character map, so tests can spell vocabulary tokens.
inline std::string byte_level(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) {
    uint32_t cp = b;
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    if (!printable) {
      int n = 0;
      for (int x = 0; x < b; ++x) {
        const bool p = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
        if (!p) ++n;
      }
      cp = 256 + uint32_t(n);
    }
    if (cp < 0x80) {
      out.push_back(char(cp));
    } else {
      out.push_back(char(0xC0 | (cp >> 6)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    }
  }
  return out;
}

// A byte-level BPE tokenizer.json: ids 0..255 are the bytes (in byte order), then one token per merge in
// merge order (ids 256..), then `extra` vocabulary tokens. Merges and tokens are given as raw bytes.
inline Json make_bpe_json(const std::vector<std::pair<std::string, std::string>>& merges,
                          const std::vector<std::string>& extra = {}) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level(std::string(1, char(b)))] = b;
  int next = 256;
  Json merge_list = Json::array();
  for (const auto& [a, b] : merges) {
    const std::string merged = byte_level(a + b);
    if (!vocab.contains(merged)) vocab[merged] = next++;
    merge_list.push_back(byte_level(a) + " " + byte_level(b));
  }
  for (const std::string& token : extra)
    if (!vocab.contains(byte_level(token))) vocab[byte_level(token)] = next++;
  Json json;
  json["version"] = "1.0";
  json["added_tokens"] = Json::array();
  json["normalizer"] = nullptr;
  json["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                           {"use_regex", true}};
  json["post_processor"] = nullptr;
  json["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  json["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                   {"vocab", vocab}, {"merges", merge_list}};
  return json;
}

inline void add_token(Json& json, int id, const std::string& content, bool special, bool normalized = false) {
  json["added_tokens"].push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                                  {"rstrip", false}, {"normalized", normalized}, {"special", special}});
}

}  // namespace ssm::test
