#include "serve/jinja_value.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace ssm::serve::jinja {

namespace {

// Python's repr() of a float: the shortest digits that read back the same, in fixed notation for
// exponents in [-4, 16) (with ".0" when integral), else scientific with a two-digit exponent at least.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buffer[64];
  const auto end = std::to_chars(buffer, buffer + sizeof(buffer), d, std::chars_format::scientific).ptr;
  const std::string scientific(buffer, end);  // [-]d[.ddd]e±XX
  const size_t e = scientific.find('e');
  const bool negative = scientific[0] == '-';
  std::string digits;
  for (size_t i = negative; i < e; ++i)
    if (scientific[i] != '.') digits += scientific[i];
  const int exponent = std::stoi(scientific.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) return out + "0." + std::string(size_t(-exponent - 1), '0') + digits;
    if (digits.size() <= size_t(exponent) + 1)
      return out + digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    return out + digits.substr(0, size_t(exponent) + 1) + "." + digits.substr(size_t(exponent) + 1);
  }
  out += digits[0];
  if (digits.size() > 1) out.append(".").append(digits, 1);
  return out + fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
}

void json_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20)
          out += fmt::format("\\u{:04x}", c);
        else
          out += char(c);
    }
  }
  out += '"';
}

void json_value(const Value& v, int indent, int depth, std::string& out) {
  using T = Value::Type;
  // With an indent, items go on lines of their own; without, they are separated by ", " as Python's default.
  const auto new_line = [&](int level) {
    out += '\n';
    out.append(size_t(indent * level), ' ');
  };
  const auto separator = [&](bool first, int level) {
    if (!first) out += indent < 0 ? ", " : ",";
    if (indent >= 0) new_line(level);
  };
  switch (v.type) {
    case T::none:
      out += "null";
      return;
    case T::boolean:
      out += v.boolean ? "true" : "false";
      return;
    case T::integer:
      out += std::to_string(v.integer);
      return;
    case T::real:
      out += std::isnan(v.real)   ? "NaN"
             : std::isinf(v.real) ? (v.real > 0 ? "Infinity" : "-Infinity")
                                  : float_repr(v.real);
      return;
    case T::string:
      json_string(v.text, out);
      return;
    case T::list:
      out += '[';
      for (size_t i = 0; i < v.list->size(); ++i) {
        separator(i == 0, depth + 1);
        json_value((*v.list)[i], indent, depth + 1, out);
      }
      if (indent >= 0 && !v.list->empty()) new_line(depth);
      out += ']';
      return;
    case T::dict:
      out += '{';
      for (size_t i = 0; i < v.dict->size(); ++i) {
        separator(i == 0, depth + 1);
        json_string((*v.dict)[i].first, out);
        out += ": ";
        json_value((*v.dict)[i].second, indent, depth + 1, out);
      }
      if (indent >= 0 && !v.dict->empty()) new_line(depth);
      out += '}';
      return;
    default:
      throw Error(fmt::format("tojson: a value of type {} is not JSON serializable", v.type_name()));
  }
}

}  // namespace

Value Value::of(std::string s, bool from_user) {
  Value v = make(Type::string);
  v.text = std::move(s);
  if (from_user && !v.text.empty()) v.user.push_back({0, v.text.size()});
  return v;
}

bool Value::truthy() const {
  switch (type) {
    case Type::undefined:
    case Type::none:
      return false;
    case Type::boolean:
      return boolean;
    case Type::integer:
      return integer != 0;
    case Type::real:
      return real != 0;
    case Type::string:
      return !text.empty();
    case Type::list:
      return !list->empty();
    case Type::dict:
      return !dict->empty();
    case Type::ns:
      return true;
  }
  return false;
}

Value Value::get(const std::string& key) const {
  if (type == Type::dict || type == Type::ns)
    for (const auto& [name, value] : *dict)
      if (name == key) return value;
  return missing(key);
}

const char* Value::type_name() const {
  static const char* names[] = {"undefined", "none", "bool", "int", "float", "str", "list", "dict", "namespace"};
  return names[int(type)];
}

namespace {

Value from_json_at(const nlohmann::json& json, bool from_user, int level) {
  if (level > Value::kMaxValueDepth)
    throw Error(fmt::format("a value nested more than {} levels deep", Value::kMaxValueDepth));
  if (json.is_null()) return Value::none();
  if (json.is_boolean()) return Value::of(json.get<bool>());
  if (json.is_number_unsigned() && json.get<uint64_t>() > uint64_t(INT64_MAX)) return Value::of(json.get<double>());
  if (json.is_number_integer()) return Value::of(json.get<int64_t>());
  if (json.is_number()) return Value::of(json.get<double>());
  if (json.is_string()) return Value::of(json.get<std::string>(), from_user);
  if (json.is_array()) {
    List items;
    for (const auto& item : json) items.push_back(from_json_at(item, from_user, level + 1));
    return Value::of(std::move(items));
  }
  Dict items;
  for (const auto& [key, item] : json.items()) items.emplace_back(key, from_json_at(item, from_user, level + 1));
  return Value::of(std::move(items));
}

}  // namespace

Value from_json(const nlohmann::json& json, bool from_user) { return from_json_at(json, from_user, 0); }

bool has_user(const Value& v) {
  if (v.is(Value::Type::string)) return !v.user.empty();
  if (v.is(Value::Type::list))
    return std::any_of(v.list->begin(), v.list->end(), [](const Value& x) { return has_user(x); });
  if (v.is(Value::Type::dict) || v.is(Value::Type::ns))
    return std::any_of(v.dict->begin(), v.dict->end(), [](const auto& entry) { return has_user(entry.second); });
  return false;
}

Value to_string(const Value& v) {
  using T = Value::Type;
  switch (v.type) {
    case T::string:
      return v;
    case T::undefined:
      return Value::of(std::string());
    case T::none:
      return Value::of(std::string("None"));
    case T::boolean:
      return Value::of(std::string(v.boolean ? "True" : "False"));
    case T::integer:
      return Value::of(std::to_string(v.integer));
    case T::real:
      return Value::of(float_repr(v.real));
    default:
      return Value::of(repr(v), has_user(v));
  }
}

std::string repr(const Value& v) {
  using T = Value::Type;
  if (v.type == T::string) {
    const char quote = v.text.find('\'') != std::string::npos && v.text.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, quote);
    for (unsigned char c : v.text) {
      if (c == quote || c == '\\')
        out += '\\', out += char(c);
      else if (c == '\n')
        out += "\\n";
      else if (c == '\r')
        out += "\\r";
      else if (c == '\t')
        out += "\\t";
      else if (c < 0x20 || c == 0x7F)
        out += fmt::format("\\x{:02x}", c);
      else
        out += char(c);
    }
    return out + quote;
  }
  if (v.type == T::list) {
    std::string out = "[";
    for (size_t i = 0; i < v.list->size(); ++i) out += (i ? ", " : "") + repr((*v.list)[i]);
    return out + "]";
  }
  if (v.type == T::dict || v.type == T::ns) {
    std::string out = v.type == T::ns ? "<Namespace {" : "{";
    for (size_t i = 0; i < v.dict->size(); ++i)
      out += (i ? ", " : "") + repr(Value::of((*v.dict)[i].first)) + ": " + repr((*v.dict)[i].second);
    return out + (v.type == T::ns ? "}>" : "}");
  }
  return to_string(v).text;
}

std::string to_json(const Value& value, int indent) {
  std::string out;
  json_value(value, indent, 0, out);
  return out;
}

bool equal(const Value& a, const Value& b) {
  using T = Value::Type;
  if (a.is_number() && b.is_number()) {
    if (a.type != T::real && b.type != T::real)
      return (a.type == T::integer ? a.integer : a.boolean) == (b.type == T::integer ? b.integer : b.boolean);
    return a.number() == b.number();
  }
  if (a.type != b.type) return false;
  switch (a.type) {
    case T::string:
      return a.text == b.text;
    case T::list:
      if (a.list->size() != b.list->size()) return false;
      for (size_t i = 0; i < a.list->size(); ++i)
        if (!equal((*a.list)[i], (*b.list)[i])) return false;
      return true;
    case T::dict:
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [key, value] : *a.dict) {
        const Value other = b.get(key);
        if (other.is(T::undefined) || !equal(value, other)) return false;
      }
      return true;
    case T::ns:
      return a.dict == b.dict;
    default:
      return true;  // undefined, none
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.number() < b.number();
  if (a.is(Value::Type::string) && b.is(Value::Type::string))
    return a.text < b.text;  // UTF-8 bytes sort as code points
  throw Error(fmt::format("'<' is not supported between {} and {}", a.type_name(), b.type_name()));
}

void append(Value& out, const Value& s) {
  const size_t offset = out.text.size();
  if (offset + s.text.size() > kMaxStringBytes)
    throw Error(fmt::format("a string longer than {} bytes", kMaxStringBytes));
  out.text += s.text;
  for (const Span& span : s.user) {
    const Span shifted{span.begin + offset, span.end + offset};
    if (!out.user.empty() && out.user.back().end == shifted.begin)
      out.user.back().end = shifted.end;
    else
      out.user.push_back(shifted);
  }
}

Value concat(const Value& a, const Value& b) {
  Value out = a;
  append(out, b);
  return out;
}

Value substring(const Value& s, size_t begin, size_t end) {
  Value out = Value::of(s.text.substr(begin, end - begin));
  for (const Span& span : s.user) {
    const size_t b = std::max(span.begin, begin), e = std::min(span.end, end);
    if (b < e) out.user.push_back({b - begin, e - begin});
  }
  return out;
}

std::vector<size_t> char_offsets(const std::string& text) {
  std::vector<size_t> offsets;
  for (size_t i = 0; i < text.size(); ++i)
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) offsets.push_back(i);
  offsets.push_back(text.size());
  return offsets;
}

}  // namespace ssm::serve::jinja
