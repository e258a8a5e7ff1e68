#include "core/json.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/file_util.h"

namespace ssm {

Json read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    fail("'{}' is not valid JSON: {}", path, e.what());
  }
}

double json_to_double(const Json& value, const std::string& what) {
  if (value.is_number()) return value.get<double>();
  if (value.is_object() && value.size() == 1 && value.contains("__float__") && value["__float__"].is_string()) {
    const std::string text = value["__float__"].get<std::string>();
    if (text == "Infinity") return std::numeric_limits<double>::infinity();
    if (text == "-Infinity") return -std::numeric_limits<double>::infinity();
    if (text == "NaN") return std::numeric_limits<double>::quiet_NaN();
  }
  fail("{}: expected a number, got {}", what, value.dump());
}

}  // namespace ssm
