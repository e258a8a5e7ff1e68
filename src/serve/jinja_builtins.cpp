#include "serve/jinja_builtins.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <ctime>

namespace ssm::serve::jinja {

namespace {

using T = Value::Type;

constexpr std::array kFunctions = {"raise_exception", "namespace", "range", "strftime_now"};
constexpr std::array kFilters = {"trim",  "length",  "count", "tojson", "upper",   "lower",  "capitalize",
                                 "title", "default", "d",     "first",  "last",    "join",   "string",
                                 "int",   "float",   "list",  "items",  "reverse", "replace"};
constexpr std::array kTests = {"defined", "undefined",   "none",  "boolean", "true",     "false",    "string",
                               "number",  "integer",     "float", "mapping", "sequence", "iterable", "odd",
                               "even",    "divisibleby", "eq",    "equalto", "ne"};
constexpr std::array kMethods = {"strip",   "lstrip",     "rstrip",     "upper",    "lower",
                                 "title",   "capitalize", "startswith", "endswith", "split",
                                 "replace", "items",      "keys",       "values",   "get"};

template <size_t N>
bool in(const std::array<const char*, N>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

void expect_count(const std::string& what, const std::vector<Value>& args, size_t min, size_t max) {
  if (args.size() < min || args.size() > max)
    throw Error(fmt::format("{} takes {} to {} arguments, {} given", what, min, max, args.size()));
}

const std::string& text_of(const std::string& what, const Value& v) {
  if (!v.is(T::string)) throw Error(fmt::format("{} needs a string, not {}", what, v.type_name()));
  return v.text;
}

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Python's str.strip([chars]) (whitespace when chars is absent or none), keeping the user spans.
Value strip(const Value& s, const std::vector<Value>& args, bool left, bool right) {
  const std::string chars = args.empty() || args[0].is(T::none) ? "" : text_of("strip's characters", args[0]);
  const auto stripped = [&](char c) { return chars.empty() ? is_space(c) : chars.find(c) != std::string::npos; };
  size_t begin = 0, end = s.text.size();
  while (left && begin < end && stripped(s.text[begin])) ++begin;
  while (right && end > begin && stripped(s.text[end - 1])) --end;
  return substring(s, begin, end);
}

// ASCII case changes (other characters stay as they are): lengths, and so user spans, do not change.
Value map_case(const Value& s, int (*change)(int)) {
  Value out = s;
  for (char& c : out.text) c = char(change(static_cast<unsigned char>(c)));
  return out;
}

Value capitalize(const Value& s) {
  Value out = map_case(s, [](int c) { return std::tolower(c); });
  if (!out.text.empty()) out.text[0] = char(std::toupper(static_cast<unsigned char>(out.text[0])));
  return out;
}

Value title(const Value& s) {
  Value out = s;
  bool word_start = true;
  for (char& c : out.text) {
    const bool letter = std::isalpha(static_cast<unsigned char>(c)) != 0;
    if (letter)
      c = char(word_start ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
    word_start = !letter;
  }
  return out;
}

Value replace(const Value& s, const std::vector<Value>& args) {
  expect_count("replace", args, 2, 2);
  const std::string& old = text_of("replace", args[0]);
  if (old.empty()) throw Error("replace: an empty string to replace is not supported");
  Value out = Value::of(std::string());
  size_t from = 0;
  for (size_t at; (at = s.text.find(old, from)) != std::string::npos; from = at + old.size()) {
    append(out, substring(s, from, at));
    append(out, args[1]);
  }
  append(out, substring(s, from, s.text.size()));
  return out;
}

Value split(const Value& s, const std::vector<Value>& args) {
  List parts;
  if (args.empty() || args[0].is(T::none)) {  // runs of whitespace, none empty
    size_t i = 0;
    while (true) {
      while (i < s.text.size() && is_space(s.text[i])) ++i;
      if (i == s.text.size()) break;
      size_t j = i;
      while (j < s.text.size() && !is_space(s.text[j])) ++j;
      parts.push_back(substring(s, i, j));
      i = j;
    }
    return Value::of(std::move(parts));
  }
  const std::string& separator = text_of("split", args[0]);
  if (separator.empty()) throw Error("split: empty separator");
  size_t from = 0;
  for (size_t at; (at = s.text.find(separator, from)) != std::string::npos; from = at + separator.size())
    parts.push_back(substring(s, from, at));
  parts.push_back(substring(s, from, s.text.size()));
  return Value::of(std::move(parts));
}

// str.startswith / endswith with a string or a list of strings.
bool affix(const Value& s, const Value& candidates, bool prefix) {
  if (candidates.is(T::list)) {
    for (const Value& one : *candidates.list)
      if (affix(s, one, prefix)) return true;
    return false;
  }
  const std::string& a = text_of(prefix ? "startswith" : "endswith", candidates);
  return prefix ? s.text.starts_with(a) : s.text.ends_with(a);
}

Value pairs(const Value& dict) {
  List out;
  for (const auto& [key, value] : *dict.dict) out.push_back(Value::of(List{Value::of(key), value}));
  return Value::of(std::move(out));
}

int64_t length(const Value& v) {
  switch (v.type) {
    case T::undefined:
      return 0;
    case T::string:
      return int64_t(char_offsets(v.text).size()) - 1;
    case T::list:
      return int64_t(v.list->size());
    case T::dict:
      return int64_t(v.dict->size());
    default:
      throw Error(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

List as_list(const Value& v) {
  if (v.is(T::list)) return *v.list;
  if (v.is(T::dict)) {
    List keys;
    for (const auto& entry : *v.dict) keys.push_back(Value::of(entry.first));
    return keys;
  }
  if (v.is(T::string)) {
    List chars;
    const auto at = char_offsets(v.text);
    for (size_t i = 0; i + 1 < at.size(); ++i) chars.push_back(substring(v, at[i], at[i + 1]));
    return chars;
  }
  if (v.is(T::undefined)) return {};
  throw Error(fmt::format("a {} is not a sequence", v.type_name()));
}

Value range(const std::vector<Value>& args) {
  expect_count("range", args, 1, 3);
  for (const Value& a : args)
    if (!a.is(T::integer)) throw Error("range takes integers");
  const int64_t start = args.size() > 1 ? args[0].integer : 0;
  const int64_t stop = args.size() > 1 ? args[1].integer : args[0].integer;
  const int64_t step = args.size() > 2 ? args[2].integer : 1;
  if (step == 0) throw Error("range: the step cannot be zero");
  List out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
    if (out.size() >= 100000) throw Error("range: more than 100000 items");
    out.push_back(Value::of(i));
    if (__builtin_add_overflow(i, step, &i)) break;  // past the end of int64 is past `stop` too
  }
  return Value::of(std::move(out));
}

Value strftime_now(const std::vector<Value>& args) {
  expect_count("strftime_now", args, 1, 1);
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buffer[256];
  const size_t n = std::strftime(buffer, sizeof(buffer), text_of("strftime_now", args[0]).c_str(), &local);
  return Value::of(std::string(buffer, n));
}

const Value* keyword(const Keywords& keywords, const char* name) {
  for (const auto& [key, value] : keywords)
    if (key == name) return &value;
  return nullptr;
}

}  // namespace

bool known_function(std::string_view name) { return in(kFunctions, name); }
bool known_filter(std::string_view name) { return in(kFilters, name); }
bool known_test(std::string_view name) { return in(kTests, name); }
bool known_method(std::string_view name) { return in(kMethods, name); }

Value call_function(const std::string& name, const std::vector<Value>& args, const Keywords& keywords) {
  if (name == "raise_exception") {
    expect_count(name, args, 1, 1);
    throw Raised(to_string(args[0]).text);
  }
  if (name == "namespace") {
    if (!args.empty()) throw Error("namespace() takes keyword arguments only");
    return Value::of(Dict(keywords.begin(), keywords.end()), T::ns);
  }
  if (name == "range") return range(args);
  return strftime_now(args);
}

Value apply_filter(const std::string& name, const Value& input, const std::vector<Value>& args,
                   const Keywords& keywords) {
  if (name == "default" || name == "d") {
    expect_count(name, args, 0, 2);
    const bool falsy_too = args.size() > 1 && args[1].truthy();
    const bool use_default = input.is(T::undefined) || (falsy_too && !input.truthy());
    return use_default ? (args.empty() ? Value::of(std::string()) : args[0]) : input;
  }
  if (name == "tojson") {
    const Value* indent = keyword(keywords, "indent");
    if (!args.empty()) indent = &args[0];
    if (indent && !indent->is(T::integer) && !indent->is(T::none)) throw Error("tojson: indent must be an integer");
    return Value::of(to_json(input, indent && indent->is(T::integer) ? int(indent->integer) : -1), has_user(input));
  }
  if (!keywords.empty()) throw Error(fmt::format("the filter '{}' takes no keyword arguments", name));
  if (name == "length" || name == "count") return Value::of(length(input));
  if (name == "string") return to_string(input);
  if (name == "list") return Value::of(as_list(input));
  if (name == "items") {
    if (!input.is(T::dict)) throw Error(fmt::format("items needs a dict, not {}", input.type_name()));
    return pairs(input);
  }
  if (name == "first" || name == "last") {
    const List items = as_list(input);
    return items.empty() ? Value::missing(name) : name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    List items = as_list(input);
    std::reverse(items.begin(), items.end());
    if (!input.is(T::string)) return Value::of(std::move(items));
    Value out = Value::of(std::string());
    for (const Value& c : items) append(out, c);
    return out;
  }
  if (name == "join") {
    expect_count(name, args, 0, 1);
    const Value separator = args.empty() ? Value::of(std::string()) : to_string(args[0]);
    Value out = Value::of(std::string());
    const List items = as_list(input);
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) append(out, separator);
      append(out, to_string(items[i]));
    }
    return out;
  }
  if (name == "int" || name == "float") {
    const Value s = to_string(input);
    try {
      if (input.is_number()) return name == "int" ? Value::of(int64_t(input.number())) : Value::of(input.number());
      return name == "int" ? Value::of(int64_t(std::stoll(s.text))) : Value::of(std::stod(s.text));
    } catch (const std::exception&) {
      return name == "int" ? Value::of(int64_t(0)) : Value::of(0.0);
    }
  }
  // The string filters: what they act on is the value's str(), as Jinja's are.
  const Value s = to_string(input);
  if (name == "trim") return strip(s, args, true, true);
  if (name == "upper") return map_case(s, [](int c) { return std::toupper(c); });
  if (name == "lower") return map_case(s, [](int c) { return std::tolower(c); });
  if (name == "capitalize") return capitalize(s);
  if (name == "title") return title(s);
  return replace(s, args);  // replace
}

bool apply_test(const std::string& name, const Value& v, const std::vector<Value>& args) {
  const bool integer = v.is(T::integer);
  if (name == "defined") return !v.is(T::undefined);
  if (name == "undefined") return v.is(T::undefined);
  if (name == "none") return v.is(T::none);
  if (name == "boolean") return v.is(T::boolean);
  if (name == "true") return v.is(T::boolean) && v.boolean;
  if (name == "false") return v.is(T::boolean) && !v.boolean;
  if (name == "string") return v.is(T::string);
  if (name == "number") return v.is_number();
  if (name == "integer") return integer;
  if (name == "float") return v.is(T::real);
  if (name == "mapping") return v.is(T::dict);
  if (name == "sequence") return v.is(T::string) || v.is(T::list) || v.is(T::dict);
  if (name == "iterable") return v.is(T::string) || v.is(T::list) || v.is(T::dict);
  if (name == "odd" || name == "even") {
    if (!integer) throw Error(fmt::format("the test '{}' needs an integer", name));
    return (((v.integer % 2) + 2) % 2 == 1) == (name == "odd");
  }
  expect_count(name, args, 1, 1);
  if (name == "divisibleby") {
    if (!integer || !args[0].is(T::integer) || args[0].integer == 0)
      throw Error("divisibleby needs integers and a divisor other than 0");
    return v.integer % args[0].integer == 0;
  }
  const bool same = equal(v, args[0]);
  return name == "ne" || name == "!=" ? !same : same;
}

Value call_method(const std::string& name, const Value& self, const std::vector<Value>& args) {
  if (name == "items" || name == "keys" || name == "values" || name == "get") {
    if (!self.is(T::dict)) throw Error(fmt::format("a {} has no method '{}'", self.type_name(), name));
    if (name == "get") {
      expect_count(name, args, 1, 2);
      const Value found = args[0].is(T::string) ? self.get(args[0].text) : Value::missing("key");
      return found.is(T::undefined) ? (args.size() > 1 ? args[1] : Value::none()) : found;
    }
    expect_count(name, args, 0, 0);
    if (name == "items") return pairs(self);
    List out;
    for (const auto& [key, value] : *self.dict) out.push_back(name == "keys" ? Value::of(key) : value);
    return Value::of(std::move(out));
  }
  text_of("the method '" + name + "'", self);
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    expect_count(name, args, 0, 1);
    return strip(self, args, name != "rstrip", name != "lstrip");
  }
  if (name == "startswith" || name == "endswith") {
    expect_count(name, args, 1, 1);
    return Value::of(affix(self, args[0], name == "startswith"));
  }
  if (name == "split") {
    expect_count(name, args, 0, 1);
    return split(self, args);
  }
  if (name == "replace") return replace(self, args);
  expect_count(name, args, 0, 0);
  if (name == "upper") return map_case(self, [](int c) { return std::toupper(c); });
  if (name == "lower") return map_case(self, [](int c) { return std::tolower(c); });
  if (name == "capitalize") return capitalize(self);
  return title(self);
}

}  // namespace ssm::serve::jinja
