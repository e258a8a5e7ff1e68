// JSON files with errors that name the file, and the number encodings of transformers 5
// ({"__float__": "Infinity"}).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace ssm {

using Json = nlohmann::json;

// JSON text whose arrays and objects nest kMaxJsonDepth levels at most. The parser keeps its own
// stack, but copying, comparing and printing a value recurse once per level, so a file of 300,000
// '['s would overflow the stack later; deeper text throws a Json::exception, as a syntax error does.
inline constexpr int kMaxJsonDepth = 512;
Json parse_json(std::string_view text);
// parse_json of a file; errors (unreadable, not JSON, too deep) name it.
Json read_json_file(const std::string& path);
// `value` as JSON text for an error message: at most 8 levels deep (deeper arrays and objects show as
// [...] and {...}) and about 120 characters, however large the value.
std::string json_excerpt(const Json& value);
// A number, or transformers 5's {"__float__": "Infinity" | "-Infinity" | "NaN"}; `what` names it in errors.
double json_to_double(const Json& value, const std::string& what);

}  // namespace ssm
