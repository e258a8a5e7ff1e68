// A parsed template and its rendering, with Jinja's semantics for the subset jinja_parse.h accepts:
// Python's truthiness, operators and str(); an undefined name prints nothing, tests false and
// iterates as empty, but looking something up in it, or adding it, is an Error; a {% for %} body
// is a scope of its own (a {% set %} inside it is gone after the iteration: use a namespace).
#pragma once
#include <cstdint>
#include <string_view>

#include "serve/jinja_parse.h"
#include "serve/jinja_value.h"

namespace ssm::serve::jinja {

// What one render may spend. The default bounds a hostile template (nested loops over long strings)
// to well under a second; a caller that renders untrusted templates by the thousand (the fuzz target)
// can ask for less.
struct RenderLimits {
  int64_t loop_iterations = 100000;  // summed over every {% for %} of the render
};

class Template {
 public:
  // Throws Error naming the line for a syntax error or an unsupported construct.
  explicit Template(std::string_view source) : body_(parse(source)) {}

  // The output (a string whose user spans are the bytes that came from user strings in `globals`).
  // Throws Raised for the template's raise_exception(), Error("line N: ...") for anything else.
  Value render(const Dict& globals, const RenderLimits& limits = {}) const;

 private:
  Body body_;
};

}  // namespace ssm::serve::jinja
