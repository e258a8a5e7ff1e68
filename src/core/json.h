// JSON files with errors that name the file, and the number encodings of transformers 5
// ({"__float__": "Infinity"}).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace ssm {

using Json = nlohmann::json;

Json read_json_file(const std::string& path);
// A number, or transformers 5's {"__float__": "Infinity" | "-Infinity" | "NaN"}; `what` names it in errors.
double json_to_double(const Json& value, const std::string& what);

}  // namespace ssm
