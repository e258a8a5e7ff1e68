// Typed access to the keys of a config.json object, with errors that name the file and the key,
// and the check that refuses keys the reader does not know.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/json.h"

namespace ssm {

class ConfigReader {
 public:
  // Bounds on what a config may ask for, far above any released model (hidden sizes and vocabularies of
  // 10^4..10^6, at most a few hundred layers): a corrupt or hostile file gets an error, not an integer
  // overflow in a product of sizes or millions of layer plans.
  static constexpr int64_t kMaxSize = int64_t(1) << 24;
  static constexpr int64_t kMaxLayers = 4096;

  // `json` must outlive the reader; `source` names the file (and section) in messages.
  ConfigReader(const Json& json, std::string source);

  bool has(const std::string& key) const { return json_.contains(key) && !json_[key].is_null(); }
  bool is_string(const std::string& key) const { return has(key) && json_[key].is_string(); }
  int64_t integer(const std::string& key) const;
  int64_t integer(const std::string& key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }
  int64_t positive(const std::string& key) const;  // in [1, kMaxSize]
  int64_t positive(const std::string& key, int64_t fallback) const { return has(key) ? positive(key) : fallback; }
  int64_t layers(const std::string& key) const;  // a layer count: in [1, kMaxLayers]
  double number(const std::string& key, double fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  std::vector<double> numbers(const std::string& key) const;  // an array of numbers (infinities allowed)
  // A nested object as a reader of its own (an empty object when the key is absent).
  ConfigReader section(const std::string& key) const;
  // Fails on the first key in neither set (keys starting with '_' are metadata and always allowed).
  void reject_unknown(const std::set<std::string>& known, const std::set<std::string>& also = {}) const;

  const Json& json() const { return json_; }
  const std::string& source() const { return source_; }

 private:
  const Json& json_;
  std::string source_;
};

}  // namespace ssm
