// The first step of reading a template: its text split into pieces (plain text, {{ expression }} and
// {% statement %}, comments dropped) with Jinja's whitespace rules as transformers sets them (one
// trailing newline dropped, trim_blocks, lstrip_blocks, and the - / + markers), and the inside of each
// tag split into tokens.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ssm::serve::jinja {

struct Token {
  enum class Type { name, string, integer, real, op, end };
  Type type = Type::end;
  std::string text;  // a name, an operator, or a string literal's value
  int line = 0;
  int64_t integer = 0;
  double real = 0;
};

struct Piece {
  enum class Kind { text, output, statement };
  Kind kind;
  int line;
  std::string text;           // text
  std::vector<Token> tokens;  // output and statement, ending with an end token
};

// Throws Error("line N: ...") for an unclosed tag, comment or string, or a character no token starts with.
std::vector<Piece> lex(std::string_view source);

}  // namespace ssm::serve::jinja
