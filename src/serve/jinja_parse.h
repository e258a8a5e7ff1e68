// The Jinja subset that Hugging Face chat templates use, parsed into a tree, with the environment
// transformers renders them in (trim_blocks and lstrip_blocks on, one trailing newline dropped):
//   text, {{ expr }}, {# comments #}, whitespace control {%- -%} {{- -}} {#- -#} (and + to keep it),
//   {% if %}{% elif %}{% else %}{% endif %}, {% for x in expr %} / {% for k, v in expr %} ... {% endfor %}
//   (loop.index, index0, revindex, revindex0, first, last, length), {% set x = expr %}, {% set ns.x = expr %};
//   expressions: literals ('..', "..", adjacent strings join, integers, floats, true/false/none in either
//   case, lists, dicts, tuples), names, x.y, x[i], slices x[a:b:c], a if c else b, or, and, not,
//   == != < <= > >= in / not in (chained), + - ~ * / // % **, unary -, filters x|f / x|f(args),
//   tests x is [not] t, and the calls jinja_builtins.h lists.
// Anything else (macros, call blocks, {% raw %}, includes, for-else, loop filters, break, ...) is an
// Error naming it and its line, at parse time: a template is checked once, when the server loads it.
// (jinja_lex.h splits the text into the tags and tokens this parser reads.)
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "serve/jinja_value.h"

namespace ssm::serve::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    literal,      // value
    name,         // name
    list,         // args: the items (a tuple is a list too)
    dict,         // args: key, value, key, value, ...
    attribute,    // args[0].name
    item,         // args[0][args[1]]
    slice,        // args[0][args[1]:args[2]:args[3]], a missing bound a literal undefined
    call,         // name(args, keywords): a global function
    method,       // args[0].name(args[1...])
    filter,       // args[0] | name(args[1...], keywords)
    test,         // args[0] is [not] name(args[1...])
    unary,        // name ("-", "+", "not") args[0]
    binary,       // args[0] name args[1]: or and + - ~ * / // % **
    compare,      // args[0] ops[0] args[1] ops[1] args[2] ...: == != < <= > >= in notin
    conditional,  // args[1] if args[0] else args[2] (absent: undefined)
  };
  Kind kind;
  int line = 0;
  Value value;
  std::string name;
  bool negated = false;  // test: "is not"
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
  std::vector<std::string> ops;
  int depth = 1;  // the levels of the tree from here down (kMaxExprDepth at most)
};

struct Node;
using Body = std::vector<Node>;

struct Node {
  enum class Kind { text, output, branch, loop, assign };
  Kind kind;
  int line = 0;
  std::string text;                                // text
  ExprPtr expr;                                    // output, loop: the sequence, assign: the value
  std::vector<std::string> targets;                // loop: one or two names; assign: name, or namespace and attribute
  std::vector<std::pair<ExprPtr, Body>> branches;  // branch: condition (null: else) and body
  Body body;                                       // loop
};

// Throws Error("line N: ...") for a syntax error or an unsupported construct.
Body parse(std::string_view source);

}  // namespace ssm::serve::jinja
