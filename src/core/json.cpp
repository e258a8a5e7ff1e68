#include "core/json.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/file_util.h"

namespace ssm {

namespace {

// Thrown from the parser's callback; a Json::exception, so callers handle it as they handle bad syntax.
class TooDeep : public Json::exception {
 public:
  TooDeep() : Json::exception(0, "JSON nested more than 512 levels deep") {}
};
static_assert(kMaxJsonDepth == 512, "TooDeep's message names the limit");

}  // namespace

Json parse_json(std::string_view text) {
  return Json::parse(text, [](int depth, Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth)
      throw TooDeep();
    return true;
  });
}

Json read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return parse_json(text);
  } catch (const Json::exception& e) {
    fail("'{}' is not valid JSON: {}", path, e.what());
  }
}

namespace {

constexpr int kExcerptDepth = 8;
constexpr size_t kExcerptChars = 120;

// Appends `value` to `out` until out reaches kExcerptChars; `depth` levels of nesting are left.
void append_excerpt(const Json& value, int depth, std::string& out) {
  if (out.size() >= kExcerptChars) return;
  constexpr auto replace = Json::error_handler_t::replace;
  if (value.is_string() && value.get_ref<const std::string&>().size() > kExcerptChars) {
    out += Json(value.get_ref<const std::string&>().substr(0, kExcerptChars)).dump(-1, ' ', false, replace);
    return;
  }
  if (!value.is_structured()) {
    out += value.dump(-1, ' ', false, replace);
    return;
  }
  const bool array = value.is_array();
  if (depth == 0 && !value.empty()) {
    out += array ? "[...]" : "{...}";
    return;
  }
  out += array ? '[' : '{';
  bool first = true;
  for (auto it = value.begin(); it != value.end() && out.size() < kExcerptChars; ++it) {
    if (!first) out += ", ";
    first = false;
    if (!array) out += Json(it.key().substr(0, kExcerptChars)).dump(-1, ' ', false, replace) + ": ";
    append_excerpt(it.value(), depth - 1, out);
  }
  out += array ? ']' : '}';
}

}  // namespace

std::string json_excerpt(const Json& value) {
  std::string out;
  append_excerpt(value, kExcerptDepth, out);
  if (out.size() > kExcerptChars) out = out.substr(0, kExcerptChars) + "...";
  return out;
}

double json_to_double(const Json& value, const std::string& what) {
  if (value.is_number()) return value.get<double>();
  if (value.is_object() && value.size() == 1 && value.contains("__float__") && value["__float__"].is_string()) {
    const std::string text = value["__float__"].get<std::string>();
    if (text == "Infinity") return std::numeric_limits<double>::infinity();
    if (text == "-Infinity") return -std::numeric_limits<double>::infinity();
    if (text == "NaN") return std::numeric_limits<double>::quiet_NaN();
  }
  fail("{}: expected a number, got {}", what, json_excerpt(value));
}

}  // namespace ssm
