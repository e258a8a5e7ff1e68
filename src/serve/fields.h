// Typed, strict reading of a JSON request object: a field of the wrong type or out of range, and a
// field the server does not know, is a 400 that names it. A field set to null counts as absent, as
// OpenAI's API has it.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ssm::serve {

class Fields {
 public:
  // `object` must be a JSON object whose keys are all in `known`; `where` prefixes field names in
  // messages ("messages[2]." for a message's fields).
  Fields(const nlohmann::json& object, const std::vector<std::string>& known, std::string where = {});

  const nlohmann::json* get(const std::string& name) const;  // null when absent or null
  std::optional<int64_t> integer(const std::string& name, int64_t min, int64_t max) const;
  std::optional<double> number(const std::string& name, double min, double max) const;
  std::optional<bool> boolean(const std::string& name) const;
  std::optional<std::string> string(const std::string& name) const;
  // Refuses a field the server knows but does not implement yet unless it is null or `neutral`.
  void unsupported(const std::string& name, const nlohmann::json& neutral) const;

  std::string path(const std::string& name) const { return where_ + name; }

 private:
  const nlohmann::json& object_;
  std::string where_;
};

}  // namespace ssm::serve
