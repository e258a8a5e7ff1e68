#include "serve/jinja_render.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "serve/jinja_builtins.h"

namespace ssm::serve::jinja {

namespace {

using T = Value::Type;

[[noreturn]] void undefined_error(const Value& v) {
  throw Error(fmt::format("'{}' is undefined", v.undefined_name.empty() ? "value" : v.undefined_name));
}

// Python's index into a sequence of `size` (negative counts from the end); -1 when outside.
int64_t index_into(int64_t index, size_t size) {
  if (index < 0) index += int64_t(size);
  return index >= 0 && index < int64_t(size) ? index : -1;
}

// The items a {% for %} visits: a list's items, a dict's keys, a string's characters.
List items_of(const Value& v) {
  switch (v.type) {
    case T::undefined:
      return {};
    case T::list:
      return *v.list;
    case T::dict: {
      List keys;
      for (const auto& entry : *v.dict) keys.push_back(Value::of(entry.first));
      return keys;
    }
    case T::string: {
      List chars;
      const auto at = char_offsets(v.text);
      for (size_t i = 0; i + 1 < at.size(); ++i) chars.push_back(substring(v, at[i], at[i + 1]));
      return chars;
    }
    default:
      throw Error(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

// Python's integer arithmetic in int64: a result that does not fit is an Error (Python's ints would
// grow), never undefined behaviour.
void check_overflow(bool overflowed, const std::string& op) {
  if (overflowed) throw Error(fmt::format("integer overflow in '{}'", op));
}

int64_t integer_arithmetic(const std::string& op, int64_t i, int64_t j) {
  int64_t r = 0;
  if (op == "+") check_overflow(__builtin_add_overflow(i, j, &r), op);
  if (op == "-") check_overflow(__builtin_sub_overflow(i, j, &r), op);
  if (op == "*") check_overflow(__builtin_mul_overflow(i, j, &r), op);
  if (op == "//") {  // floor division
    check_overflow(i == INT64_MIN && j == -1, op);
    r = i / j - ((i % j != 0) && ((i < 0) != (j < 0)) ? 1 : 0);
  }
  if (op == "%") {  // the sign of the divisor, as Python's
    r = j == -1 ? 0 : i % j;
    if (r != 0 && (r < 0) != (j < 0)) r += j;
  }
  if (op == "**") {  // j >= 0, by squaring
    r = 1;
    for (int64_t base = i, e = j; e > 0; e >>= 1) {
      if (e & 1) check_overflow(__builtin_mul_overflow(r, base, &r), op);
      if (e > 1) check_overflow(__builtin_mul_overflow(base, base, &base), op);
    }
  }
  return r;
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (a.is(T::undefined)) undefined_error(a);
  if (b.is(T::undefined)) undefined_error(b);
  if (op == "+" && a.is(T::string) && b.is(T::string)) return concat(a, b);
  if (op == "+" && a.is(T::list) && b.is(T::list)) {
    List items = *a.list;
    items.insert(items.end(), b.list->begin(), b.list->end());
    return Value::of(std::move(items));
  }
  if (op == "*" && a.is(T::string) && b.is(T::integer)) {
    if (b.integer > 0 && a.text.size() > kMaxStringBytes / size_t(b.integer))
      throw Error(fmt::format("a string longer than {} bytes", kMaxStringBytes));
    Value out = Value::of(std::string());
    for (int64_t i = 0; i < b.integer; ++i) append(out, a);
    return out;
  }
  if (!a.is_number() || !b.is_number())
    throw Error(fmt::format("unsupported operand types for {}: {} and {}", op, a.type_name(), b.type_name()));
  const bool integers = !a.is(T::real) && !b.is(T::real);
  const double x = a.number(), y = b.number();
  if ((op == "/" || op == "//" || op == "%") && y == 0) throw Error("division by zero");
  if (op == "/") return Value::of(x / y);
  if (integers) {
    const auto integer_of = [](const Value& v) { return v.is(T::integer) ? v.integer : int64_t(v.boolean); };
    const int64_t j = integer_of(b);
    if (op != "**" || j >= 0) return Value::of(integer_arithmetic(op, integer_of(a), j));
  }
  if (op == "+") return Value::of(x + y);
  if (op == "-") return Value::of(x - y);
  if (op == "*") return Value::of(x * y);
  if (op == "//") return Value::of(std::floor(x / y));
  if (op == "%") return Value::of(x - y * std::floor(x / y));
  return Value::of(std::pow(x, y));  // **
}

bool contains(const Value& container, const Value& item) {
  switch (container.type) {
    case T::undefined:
      return false;
    case T::string:
      if (!item.is(T::string)) throw Error(fmt::format("'in <string>' needs a string, not {}", item.type_name()));
      return container.text.find(item.text) != std::string::npos;
    case T::list:
      for (const Value& v : *container.list)
        if (equal(v, item)) return true;
      return false;
    case T::dict:
      return item.is(T::string) && !container.get(item.text).is(T::undefined);
    default:
      throw Error(fmt::format("'in' needs a string, list or dict, not {}", container.type_name()));
  }
}

bool compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return equal(a, b);
  if (op == "!=") return !equal(a, b);
  if (op == "<") return less(a, b);
  if (op == ">") return less(b, a);
  if (op == "<=") return !less(b, a);
  if (op == ">=") return !less(a, b);
  if (op == "in") return contains(b, a);
  return !contains(b, a);  // notin
}

// Python's s[start:stop:step] of a list or string (by character).
Value slice(const Value& target, const Value& start, const Value& stop, const Value& step) {
  const auto bound = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is(T::undefined) || v.is(T::none)) return std::nullopt;
    if (!v.is(T::integer)) throw Error(fmt::format("a slice's {} must be an integer", what));
    return v.integer;
  };
  const int64_t stride = bound(step, "step").value_or(1);
  if (stride == 0) throw Error("a slice's step cannot be zero");
  const std::vector<size_t> at = target.is(T::string) ? char_offsets(target.text) : std::vector<size_t>();
  if (!target.is(T::string) && !target.is(T::list))
    throw Error(fmt::format("a {} cannot be sliced", target.type_name()));
  const int64_t size = target.is(T::string) ? int64_t(at.size()) - 1 : int64_t(target.list->size());
  const auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v) return fallback;
    int64_t x = *v < 0 ? *v + size : *v;
    return stride > 0 ? std::clamp<int64_t>(x, 0, size) : std::clamp<int64_t>(x, -1, size - 1);
  };
  const int64_t first = clamp(bound(start, "start"), stride > 0 ? 0 : size - 1);
  const int64_t last = clamp(bound(stop, "stop"), stride > 0 ? size : -1);
  Value out = target.is(T::string) ? Value::of(std::string()) : Value::of(List());
  for (int64_t i = first; stride > 0 ? i < last : i > last; i += stride) {
    if (target.is(T::string))
      append(out, substring(target, at[size_t(i)], at[size_t(i) + 1]));
    else
      out.list->push_back((*target.list)[size_t(i)]);
  }
  return out;
}

class Renderer {
 public:
  Renderer(const Dict& globals, const RenderLimits& limits) : scopes_{globals}, limits_(limits) {}

  void run(const Body& body) {
    for (const Node& node : body) {
      try {
        execute(node);
      } catch (const Raised&) {
        throw;
      } catch (const Error& e) {
        if (std::string_view(e.what()).starts_with("line ")) throw;
        fail(node.line, "{}", e.what());
      }
    }
  }

  Value output = Value::of(std::string());

 private:
  void execute(const Node& node) {
    switch (node.kind) {
      case Node::Kind::text:
        if (output.text.size() + node.text.size() > kMaxStringBytes)
          throw Error(fmt::format("a string longer than {} bytes", kMaxStringBytes));
        output.text += node.text;
        return;
      case Node::Kind::output:
        append(output, to_string(eval(*node.expr)));
        return;
      case Node::Kind::branch:
        for (const auto& [condition, body] : node.branches)
          if (!condition || eval(*condition).truthy()) return run(body);
        return;
      case Node::Kind::loop:
        return loop(node);
      case Node::Kind::assign:
        return assign(node);
    }
  }

  void loop(const Node& node) {
    const List items = items_of(eval(*node.expr));
    const int64_t n = int64_t(items.size());
    for (int64_t i = 0; i < n; ++i) {
      // Nested loops over long strings can multiply into billions of steps; a chat template makes a few
      // per message.
      if (++loop_iterations_ > limits_.loop_iterations)
        throw Error(fmt::format("the template ran more than {} loop iterations", limits_.loop_iterations));
      Dict scope;
      const Value& item = items[size_t(i)];
      if (node.targets.size() == 1) {
        scope.emplace_back(node.targets[0], item);
      } else {
        if (!item.is(T::list) || item.list->size() != 2)
          throw Error(
              fmt::format("cannot unpack a {} into {}, {}", item.type_name(), node.targets[0], node.targets[1]));
        scope.emplace_back(node.targets[0], (*item.list)[0]);
        scope.emplace_back(node.targets[1], (*item.list)[1]);
      }
      scope.emplace_back("loop", Value::of(Dict{{"index", Value::of(i + 1)},
                                                {"index0", Value::of(i)},
                                                {"revindex", Value::of(n - i)},
                                                {"revindex0", Value::of(n - i - 1)},
                                                {"first", Value::of(i == 0)},
                                                {"last", Value::of(i == n - 1)},
                                                {"length", Value::of(n)}}));
      scopes_.push_back(std::move(scope));
      run(node.body);
      scopes_.pop_back();
    }
  }

  void assign(const Node& node) {
    Value value = eval(*node.expr);
    if (node.targets.size() == 1) return set(scopes_.back(), node.targets[0], std::move(value));
    const Value ns = lookup(node.targets[0]);
    if (!ns.is(T::ns))
      throw Error(fmt::format("cannot set '{}.{}': '{}' is not a namespace", node.targets[0], node.targets[1],
                              node.targets[0]));
    // No namespace inside a namespace: namespaces are the only values that change, so this keeps every
    // value a tree (`set ns.self = ns` would make a cycle that is never freed).
    if (holds_namespace(value))
      throw Error(fmt::format("cannot set '{}.{}': a namespace cannot hold a namespace", node.targets[0],
                              node.targets[1]));
    set(*ns.dict, node.targets[1], std::move(value));
  }

  static bool holds_namespace(const Value& v) {
    if (v.is(T::ns)) return true;
    if (v.is(T::list)) return std::any_of(v.list->begin(), v.list->end(), holds_namespace);
    if (v.is(T::dict))
      return std::any_of(v.dict->begin(), v.dict->end(), [](const auto& entry) { return holds_namespace(entry.second); });
    return false;
  }

  static void set(Dict& scope, const std::string& name, Value value) {
    for (auto& entry : scope)
      if (entry.first == name) {
        entry.second = std::move(value);
        return;
      }
    scope.emplace_back(name, std::move(value));
  }

  Value lookup(const std::string& name) const {
    for (auto scope = scopes_.rbegin(); scope != scopes_.rend(); ++scope)
      for (const auto& entry : *scope)
        if (entry.first == name) return entry.second;
    return Value::missing(name);
  }

  std::vector<Value> eval_args(const Expr& e, size_t from) {
    std::vector<Value> args;
    for (size_t i = from; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
    return args;
  }
  Keywords eval_keywords(const Expr& e) {
    Keywords keywords;
    for (const auto& [name, value] : e.keywords) keywords.emplace_back(name, eval(*value));
    return keywords;
  }

  Value eval(const Expr& e) {
    using K = Expr::Kind;
    switch (e.kind) {
      case K::literal:
        return e.value;
      case K::name:
        return lookup(e.name);
      case K::list:
        return Value::of(List(eval_args(e, 0)));
      case K::dict: {
        Dict items;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          const Value key = eval(*e.args[i]);
          if (!key.is(T::string)) throw Error("dict keys must be strings");
          set(items, key.text, eval(*e.args[i + 1]));
        }
        return Value::of(std::move(items));
      }
      case K::attribute: {
        const Value base = eval(*e.args[0]);
        if (base.is(T::undefined)) undefined_error(base);
        return base.get(e.name);
      }
      case K::item:
        return item(eval(*e.args[0]), eval(*e.args[1]));
      case K::slice:
        return slice(eval(*e.args[0]), eval(*e.args[1]), eval(*e.args[2]), eval(*e.args[3]));
      case K::call:
        return call_function(e.name, eval_args(e, 0), eval_keywords(e));
      case K::method: {
        const Value self = eval(*e.args[0]);
        if (self.is(T::undefined)) undefined_error(self);
        return call_method(e.name, self, eval_args(e, 1));
      }
      case K::filter:
        return apply_filter(e.name, eval(*e.args[0]), eval_args(e, 1), eval_keywords(e));
      case K::test:
        return Value::of(apply_test(e.name, eval(*e.args[0]), eval_args(e, 1)) != e.negated);
      case K::unary: {
        const Value v = eval(*e.args[0]);
        if (e.name == "not") return Value::of(!v.truthy());
        if (v.is(T::undefined)) undefined_error(v);
        if (!v.is_number()) throw Error(fmt::format("bad operand type for unary {}: {}", e.name, v.type_name()));
        if (e.name == "+") return v.is(T::boolean) ? Value::of(int64_t(v.boolean)) : v;
        if (v.is(T::real)) return Value::of(-v.real);
        return Value::of(integer_arithmetic("-", 0, v.is(T::integer) ? v.integer : int64_t(v.boolean)));
      }
      case K::binary: {
        const Value a = eval(*e.args[0]);
        if (e.name == "or") return a.truthy() ? a : eval(*e.args[1]);
        if (e.name == "and") return a.truthy() ? eval(*e.args[1]) : a;
        const Value b = eval(*e.args[1]);
        if (e.name == "~") return concat(to_string(a), to_string(b));
        return arithmetic(e.name, a, b);
      }
      case K::compare: {
        Value left = eval(*e.args[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.args[i + 1]);
          if (!compare(e.ops[i], left, right)) return Value::of(false);
          left = std::move(right);
        }
        return Value::of(true);
      }
      case K::conditional:
        if (eval(*e.args[0]).truthy()) return eval(*e.args[1]);
        return e.args.size() > 2 ? eval(*e.args[2]) : Value::missing("else");
    }
    return {};
  }

  static Value item(const Value& base, const Value& key) {
    if (base.is(T::undefined)) undefined_error(base);
    if (base.is(T::dict) || base.is(T::ns)) {
      if (!key.is(T::string)) return Value::missing(repr(key));
      return base.get(key.text);
    }
    if (!key.is(T::integer)) return Value::missing(fmt::format("{}[{}]", base.type_name(), repr(key)));
    if (base.is(T::list)) {
      const int64_t i = index_into(key.integer, base.list->size());
      return i < 0 ? Value::missing(fmt::format("list index {}", key.integer)) : (*base.list)[size_t(i)];
    }
    if (base.is(T::string)) {
      const auto at = char_offsets(base.text);
      const int64_t i = index_into(key.integer, at.size() - 1);
      return i < 0 ? Value::missing(fmt::format("string index {}", key.integer))
                   : substring(base, at[size_t(i)], at[size_t(i) + 1]);
    }
    return Value::missing(fmt::format("{}[{}]", base.type_name(), key.integer));
  }

  std::vector<Dict> scopes_;  // the globals, then one per enclosing loop iteration
  const RenderLimits limits_;
  int64_t loop_iterations_ = 0;  // over the whole render
};

}  // namespace

Value Template::render(const Dict& globals, const RenderLimits& limits) const {
  Renderer renderer(globals, limits);
  renderer.run(body_);
  return std::move(renderer.output);
}

}  // namespace ssm::serve::jinja
