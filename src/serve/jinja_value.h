// The values a chat template computes with, as Jinja (Python) has them: undefined, none, booleans,
// integers, floats, strings, lists, dicts and namespaces. A string also records which of its bytes
// came from the request's messages, so that the prompt's tokenizer can keep special tokens a user
// typed as plain text while the template's own become special tokens.
#pragma once
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ssm::serve::jinja {

// A template that cannot be parsed, uses what this renderer does not implement, or fails while rendering.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// The template's own raise_exception(message): the request is at fault (roles out of order, ...).
class Raised : public Error {
 public:
  using Error::Error;
};

// Error("line N: ...") about the template's line N.
template <class... Args>
[[noreturn]] void fail(int line, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format("line {}: {}", line, fmt::format(format, std::forward<Args>(args)...)));
}

struct Span {  // bytes [begin, end) of a string
  size_t begin = 0, end = 0;
  bool operator==(const Span&) const = default;
};

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // in insertion order, as Python's dict

struct Value {
  enum class Type { undefined, none, boolean, integer, real, string, list, dict, ns };
  Type type = Type::undefined;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string text;
  std::vector<Span> user;      // string: the bytes that came from the request's messages (sorted, disjoint)
  std::shared_ptr<List> list;  // list
  std::shared_ptr<Dict> dict;  // dict and namespace (a namespace is shared: `set ns.x` changes every copy)
  std::string undefined_name;  // undefined: what was looked up, for the error that using it raises
  int depth = 0;               // list, dict, namespace: the levels of items inside (kMaxValueDepth at most)

  static Value none() { return make(Type::none); }
  static Value of(bool b) {
    Value v = make(Type::boolean);
    v.boolean = b;
    return v;
  }
  static Value of(int64_t i) {
    Value v = make(Type::integer);
    v.integer = i;
    return v;
  }
  static Value of(double d) {
    Value v = make(Type::real);
    v.real = d;
    return v;
  }
  static Value of(std::string s, bool from_user = false);
  static Value of(List items) {
    Value v = make(Type::list);
    for (const Value& item : items) v.hold(item);
    v.list = std::make_shared<List>(std::move(items));
    return v;
  }
  static Value of(Dict items, Type type = Type::dict) {
    Value v = make(type);
    for (const auto& entry : items) v.hold(entry.second);
    v.dict = std::make_shared<Dict>(std::move(items));
    return v;
  }
  // Printing, comparing and freeing a value recurse once per level: `{% set x = [x] %}` in a loop, or a
  // request's deeply nested JSON, stops here instead of at the end of the stack.
  static constexpr int kMaxValueDepth = 128;
  void hold(const Value& item) {
    depth = std::max(depth, item.depth + 1);
    if (depth > kMaxValueDepth) throw Error(fmt::format("a value nested more than {} levels deep", kMaxValueDepth));
  }
  static Value missing(std::string name) {
    Value v;
    v.undefined_name = std::move(name);
    return v;
  }
  static Value make(Type type) {
    Value v;
    v.type = type;
    return v;
  }

  bool is(Type t) const { return type == t; }
  bool is_number() const { return type == Type::integer || type == Type::real || type == Type::boolean; }
  double number() const {
    return type == Type::real ? real : type == Type::integer ? double(integer) : double(boolean);
  }
  bool truthy() const;
  // A dict's or namespace's entry, else an undefined that names it.
  Value get(const std::string& key) const;
  const char* type_name() const;
};

// JSON (the request's messages) as values; from_user marks every string in it as the user's.
Value from_json(const nlohmann::json& json, bool from_user);

// Whether a user string is in the value (a list's or dict's items too).
bool has_user(const Value& value);
// Python's str(): what {{ value }} prints (an undefined prints nothing); strings keep their user spans, and
// a list or dict holding a user string is the user's as a whole.
Value to_string(const Value& value);
// Python's repr() of a string, list or dict, as str() of a list shows its items.
std::string repr(const Value& value);
// json.dumps(value, ensure_ascii=False, indent=indent) as transformers' tojson filter (-1: no indent).
std::string to_json(const Value& value, int indent = -1);

// Python's ==, and its ordering of numbers and of strings (anything else is an Error).
bool equal(const Value& a, const Value& b);
bool less(const Value& a, const Value& b);

// Strings with their user spans: out += s, a + b, and the bytes [begin, end) of s. A string (the rendered
// prompt included) grows to kMaxStringBytes at most: `'ab' * 10**9` is an Error, not all of memory.
inline constexpr size_t kMaxStringBytes = size_t(16) << 20;
void append(Value& out, const Value& s);
Value concat(const Value& a, const Value& b);
Value substring(const Value& s, size_t begin, size_t end);
// The byte offset of each character (code point) of `text`, then text.size(): strings index by character.
std::vector<size_t> char_offsets(const std::string& text);

}  // namespace ssm::serve::jinja
