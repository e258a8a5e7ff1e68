#include "core/config_reader.h"

#include "core/error.h"
#include "core/json.h"

namespace ssm {

namespace {
const Json& empty_object() {
  static const Json empty = Json::object();
  return empty;
}
}  // namespace

ConfigReader::ConfigReader(const Json& json, std::string source) : json_(json), source_(std::move(source)) {
  SSM_CHECK(json_.is_object(), "{}: must be a JSON object, got {}", source_, json_excerpt(json_));
}

int64_t ConfigReader::integer(const std::string& key) const {
  SSM_CHECK(has(key), "{}: missing key '{}'", source_, key);
  const Json& v = json_[key];
  SSM_CHECK(v.is_number_integer(), "{}: '{}' must be an integer, got {}", source_, key, json_excerpt(v));
  return v.get<int64_t>();
}

int64_t ConfigReader::positive(const std::string& key) const {
  const int64_t v = integer(key);
  SSM_CHECK(v > 0, "{}: '{}' must be positive, got {}", source_, key, v);
  SSM_CHECK(v <= kMaxSize, "{}: '{}' is {}, beyond any real model (at most {})", source_, key, v, kMaxSize);
  return v;
}

int64_t ConfigReader::layers(const std::string& key) const {
  const int64_t v = positive(key);
  SSM_CHECK(v <= kMaxLayers, "{}: '{}' asks for {} layers, beyond any real model (at most {})", source_, key, v,
            kMaxLayers);
  return v;
}

double ConfigReader::number(const std::string& key, double fallback) const {
  return has(key) ? json_to_double(json_[key], source_ + ": '" + key + "'") : fallback;
}

bool ConfigReader::boolean(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  SSM_CHECK(json_[key].is_boolean(), "{}: '{}' must be true or false, got {}", source_, key, json_excerpt(json_[key]));
  return json_[key].get<bool>();
}

std::string ConfigReader::string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  SSM_CHECK(json_[key].is_string(), "{}: '{}' must be a string, got {}", source_, key, json_excerpt(json_[key]));
  return json_[key].get<std::string>();
}

std::vector<double> ConfigReader::numbers(const std::string& key) const {
  SSM_CHECK(has(key) && json_[key].is_array(), "{}: '{}' must be an array of numbers", source_, key);
  std::vector<double> out;
  for (size_t i = 0; i < json_[key].size(); ++i)
    out.push_back(json_to_double(json_[key][i], fmt::format("{}: '{}'[{}]", source_, key, i)));
  return out;
}

ConfigReader ConfigReader::section(const std::string& key) const {
  if (!has(key)) return ConfigReader(empty_object(), source_ + " " + key);
  SSM_CHECK(json_[key].is_object(), "{}: '{}' must be an object, got {}", source_, key, json_excerpt(json_[key]));
  return ConfigReader(json_[key], source_ + " " + key);
}

void ConfigReader::reject_unknown(const std::set<std::string>& known, const std::set<std::string>& also) const {
  for (const auto& [key, value] : json_.items()) {
    if (known.count(key) || also.count(key) || key.rfind('_', 0) == 0) continue;
    fail("{}: unknown config key '{}'", source_, key);
  }
}

}  // namespace ssm
