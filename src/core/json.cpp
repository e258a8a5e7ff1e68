#include "core/json.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/file_util.h"

namespace ssm {

namespace {

// Thrown when the text nests too deep; a Json::exception, so callers handle it as they handle bad syntax.
class TooDeep : public Json::exception {
 public:
  TooDeep() : Json::exception(0, "JSON nested more than 512 levels deep") {}
};
static_assert(kMaxJsonDepth == 512, "TooDeep's message names the limit");

// nlohmann's own DOM builder, counting the depth as arrays and objects open. (A parse callback would
// do the same but costs ~10% of the parse: it is called for every value, as a prompt's token ids are.)
class DepthLimitedDom {
 public:
  explicit DepthLimitedDom(Json& result) : dom_(result, true) {}
  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(Json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(Json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(Json::number_float_t v, const Json::string_t& text) { return dom_.number_float(v, text); }
  bool string(Json::string_t& v) { return dom_.string(v); }
  bool binary(Json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) { return open() && dom_.start_object(n); }
  bool key(Json::string_t& v) { return dom_.key(v); }
  bool end_object() { return close() && dom_.end_object(); }
  bool start_array(std::size_t n) { return open() && dom_.start_array(n); }
  bool end_array() { return close() && dom_.end_array(); }
  bool parse_error(std::size_t at, const std::string& token, const nlohmann::detail::exception& e) {
    return dom_.parse_error(at, token, e);
  }

 private:
  bool open() {
    if (depth_ >= kMaxJsonDepth) throw TooDeep();
    ++depth_;
    return true;
  }
  bool close() {
    --depth_;
    return true;
  }
  nlohmann::detail::json_sax_dom_parser<Json> dom_;
  int depth_ = 0;
};

}  // namespace

Json parse_json(std::string_view text) {
  Json result;
  DepthLimitedDom builder(result);
  Json::sax_parse(text, &builder);
  return result;
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
