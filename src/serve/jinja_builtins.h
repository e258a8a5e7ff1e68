// The functions, filters, tests and methods a chat template may call, as Jinja and transformers'
// chat-template environment define them:
//   functions  raise_exception(message), namespace(name=value, ...), range([start,] stop[, step]),
//              strftime_now(format)
//   filters    trim, length (count), tojson(indent=N), upper, lower, capitalize, title, default(value[, boolean])
//              (d), first, last, join(separator), string, int, float, list, items, reverse, replace(old, new)
//   tests      defined, undefined, none, boolean, true, false, string, number, integer, float, mapping,
//              sequence, iterable, odd, even, divisibleby(n), eq/equalto(x), ne(x)
//   methods    str: strip, lstrip, rstrip ([chars]), upper, lower, title, capitalize, startswith, endswith,
//              split([separator]), replace(old, new); dict: items, keys, values, get(key[, default])
// Case changes (upper, lower, capitalize, title) change ASCII letters only.
// The parser refuses any other name when it loads a template (known_*), and calls apply the rest.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "serve/jinja_value.h"

namespace ssm::serve::jinja {

using Keywords = std::vector<std::pair<std::string, Value>>;

bool known_function(std::string_view name);
bool known_filter(std::string_view name);
bool known_test(std::string_view name);
bool known_method(std::string_view name);

Value call_function(const std::string& name, const std::vector<Value>& args, const Keywords& keywords);
Value apply_filter(const std::string& name, const Value& input, const std::vector<Value>& args,
                   const Keywords& keywords);
bool apply_test(const std::string& name, const Value& input, const std::vector<Value>& args);
Value call_method(const std::string& name, const Value& self, const std::vector<Value>& args);

}  // namespace ssm::serve::jinja
