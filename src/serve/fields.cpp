#include "serve/fields.h"

#include <algorithm>
#include <cmath>

#include "serve/api_error.h"

namespace ssm::serve {

Fields::Fields(const nlohmann::json& object, const std::vector<std::string>& known, std::string where)
    : object_(object), where_(std::move(where)) {
  if (!object.is_object()) {
    if (where_.empty()) bad_field("", "the request body must be a JSON object");
    const std::string self = where_.substr(0, where_.size() - 1);  // "messages[2]." names "messages[2]"
    bad_field(self, "'{}' must be a JSON object", self);
  }
  for (const auto& [key, value] : object.items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      bad_field(path(key), "unknown field '{}'", path(key));
}

const nlohmann::json* Fields::get(const std::string& name) const {
  const auto it = object_.find(name);
  return it == object_.end() || it->is_null() ? nullptr : &*it;
}

std::optional<int64_t> Fields::integer(const std::string& name, int64_t min, int64_t max) const {
  const nlohmann::json* v = get(name);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) bad_field(path(name), "'{}' must be an integer", path(name));
  // Integers beyond int64 arrive as unsigned.
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX))
    bad_field(path(name), "'{}' must be at most {}", path(name), max);
  const int64_t x = v->get<int64_t>();
  if (x < min || x > max) bad_field(path(name), "'{}' must be between {} and {}, got {}", path(name), min, max, x);
  return x;
}

std::optional<double> Fields::number(const std::string& name, double min, double max) const {
  const nlohmann::json* v = get(name);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad_field(path(name), "'{}' must be a number", path(name));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < min || x > max)
    bad_field(path(name), "'{}' must be between {} and {}, got {}", path(name), min, max, x);
  return x;
}

std::optional<bool> Fields::boolean(const std::string& name) const {
  const nlohmann::json* v = get(name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad_field(path(name), "'{}' must be true or false", path(name));
  return v->get<bool>();
}

std::optional<std::string> Fields::string(const std::string& name) const {
  const nlohmann::json* v = get(name);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad_field(path(name), "'{}' must be a string", path(name));
  return v->get<std::string>();
}

void Fields::unsupported(const std::string& name, const nlohmann::json& neutral) const {
  const nlohmann::json* v = get(name);
  if (v && *v != neutral) bad_field(path(name), "'{}' is not supported by this server yet", path(name));
}

}  // namespace ssm::serve
