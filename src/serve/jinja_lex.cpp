#include "serve/jinja_lex.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "serve/jinja_value.h"
#include "tokenizer/utf8_stream.h"

namespace ssm::serve::jinja {

namespace {

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Splits the template into pieces, applying whitespace control, trim_blocks and lstrip_blocks as Jinja's
// lexer does.
class Lexer {
 public:
  explicit Lexer(std::string_view raw) {
    // Jinja reads the template line by line: newlines become "\n" and one final newline goes.
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        source_ += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        source_ += raw[i];
      }
    }
    if (!source_.empty() && source_.back() == '\n') source_.pop_back();
  }

  std::vector<Piece> run() {
    bool line_starting = true;  // the text so far ends a line (or there is none)
    while (pos_ < source_.size()) {
      size_t open = source_.find('{', pos_);
      while (open != std::string::npos && open + 1 < source_.size() && !std::strchr("{%#", source_[open + 1]))
        open = source_.find('{', open + 1);
      if (open == std::string::npos || open + 1 >= source_.size()) {
        add_text(source_.substr(pos_));
        break;
      }
      const char kind = source_[open + 1];
      const char sign = open + 2 < source_.size() ? source_[open + 2] : 0;
      std::string text = source_.substr(pos_, open - pos_);
      if (sign == '-') {
        while (!text.empty() && is_space(text.back())) text.pop_back();
      } else if (sign != '+' && kind != '{') {  // lstrip_blocks: a block tag alone on its line takes its indent
        const size_t line_begin = text.rfind('\n') + 1;  // 0 when there is none
        if ((line_begin > 0 || line_starting) && line_begin < text.size() &&
            std::all_of(text.begin() + long(line_begin), text.end(), is_space))
          text.resize(line_begin);
      }
      add_text(text);
      line_ += int(std::count(source_.begin() + long(pos_), source_.begin() + long(open), '\n'));
      pos_ = open + 2 + (sign == '-' || sign == '+');
      const int start_line = line_;
      if (kind == '#') {
        const size_t close = source_.find("#}", pos_);
        if (close == std::string::npos) fail(start_line, "a comment {{# is not closed");
        line_ += int(std::count(source_.begin() + long(pos_), source_.begin() + long(close), '\n'));
        pos_ = close + 2;
        finish_tag(source_[close - 1], true);
      } else {
        Piece piece{kind == '{' ? Piece::Kind::output : Piece::Kind::statement, start_line, {}, {}};
        const char end_sign = lex_tag(kind == '{' ? '}' : '%', piece.tokens);
        if (piece.tokens.size() == 1) fail(start_line, "an empty {} tag", kind == '{' ? "{{ }}" : "{% %}");
        pieces_.push_back(std::move(piece));
        finish_tag(end_sign, kind == '%');
      }
      line_starting = pos_ > 0 && source_[pos_ - 1] == '\n';
    }
    return std::move(pieces_);
  }

 private:
  void add_text(std::string text) {
    if (text.empty()) return;
    if (!pieces_.empty() && pieces_.back().kind == Piece::Kind::text)
      pieces_.back().text += text;
    else
      pieces_.push_back(Piece{Piece::Kind::text, line_, std::move(text), {}});
  }

  // After a tag's closing delimiter (pos_ past it): '-' takes all whitespace that follows; a block tag
  // or comment without '+' takes one newline (trim_blocks).
  void finish_tag(char sign, bool block) {
    if (sign == '-') {
      while (pos_ < source_.size() && is_space(source_[pos_])) line_ += source_[pos_++] == '\n';
    } else if (block && sign != '+' && pos_ < source_.size() && source_[pos_] == '\n') {
      ++pos_;
      ++line_;
    }
  }

  // Tokens up to the tag's end ("}}" or "%}", outside brackets); returns the sign before it ('-', '+' or 0).
  char lex_tag(char closing, std::vector<Token>& tokens) {
    int depth = 0;
    while (true) {
      while (pos_ < source_.size() && is_space(source_[pos_])) line_ += source_[pos_++] == '\n';
      if (pos_ >= source_.size()) fail(line_, "a tag is not closed");
      const std::string_view rest = std::string_view(source_).substr(pos_);
      const std::string end = std::string(1, closing) + "}";
      if (depth == 0)
        for (const char* sign : {"-", "+", ""}) {
          if (*sign == '+' && closing == '}') continue;
          if (rest.starts_with(sign + end)) {
            pos_ += std::strlen(sign) + 2;
            tokens.push_back(Token{Token::Type::end, "", line_, 0, 0});
            return *sign;
          }
        }
      Token t{Token::Type::op, "", line_, 0, 0};
      const char c = rest[0];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t n = 1;
        while (n < rest.size() && (std::isalnum(static_cast<unsigned char>(rest[n])) || rest[n] == '_')) ++n;
        t.type = Token::Type::name;
        t.text = rest.substr(0, n);
        pos_ += n;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number(rest, t);
      } else if (c == '\'' || c == '"') {
        lex_string(t);
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                     ">",  "=",  "(",  ")",  "[",  "]",  "{", "}", ",", ".", ":", "|"};
        const char* op = nullptr;
        for (const char* candidate : kOps)
          if (rest.starts_with(candidate)) {
            op = candidate;
            break;
          }
        if (!op) fail(line_, "unexpected character '{}'", c);
        t.text = op;
        pos_ += t.text.size();
        if (std::strchr("([{", op[0]) && t.text.size() == 1) ++depth;
        if (std::strchr(")]}", op[0]) && t.text.size() == 1 && --depth < 0) fail(line_, "unbalanced '{}'", op);
      }
      tokens.push_back(std::move(t));
    }
  }

  void lex_number(std::string_view rest, Token& t) {
    size_t n = 0;
    while (n < rest.size() && std::isdigit(static_cast<unsigned char>(rest[n]))) ++n;
    bool real = false;
    if (n + 1 < rest.size() && rest[n] == '.' && std::isdigit(static_cast<unsigned char>(rest[n + 1]))) {
      real = true;
      for (++n; n < rest.size() && std::isdigit(static_cast<unsigned char>(rest[n]));) ++n;
    }
    if (n < rest.size() && (rest[n] == 'e' || rest[n] == 'E')) {
      size_t m = n + 1;
      if (m < rest.size() && (rest[m] == '+' || rest[m] == '-')) ++m;
      if (m < rest.size() && std::isdigit(static_cast<unsigned char>(rest[m]))) {
        real = true;
        for (n = m; n < rest.size() && std::isdigit(static_cast<unsigned char>(rest[n]));) ++n;
      }
    }
    const std::string text(rest.substr(0, n));
    t.type = real ? Token::Type::real : Token::Type::integer;
    try {
      if (real)
        t.real = std::stod(text);
      else
        t.integer = std::stoll(text);
    } catch (const std::exception&) {
      fail(line_, "the number {} is out of range", text);
    }
    pos_ += n;
  }

  // A quoted string with Python's escapes (\n \t \r \\ \' \" \xHH \uHHHH; others stay as written).
  void lex_string(Token& t) {
    const char quote = source_[pos_++];
    t.type = Token::Type::string;
    while (true) {
      if (pos_ >= source_.size()) fail(t.line, "a string is not closed");
      const char c = source_[pos_++];
      if (c == quote) return;
      if (c == '\n') ++line_;
      if (c != '\\' || pos_ >= source_.size()) {
        t.text += c;
        continue;
      }
      const char e = source_[pos_++];
      const char* simple = std::strchr("nrt\\'\"0abfv", e);
      if (simple) {
        static const char kValues[] = "\n\r\t\\'\"\0\a\b\f\v";
        t.text += kValues[simple - "nrt\\'\"0abfv"];
      } else if (e == 'x' || e == 'u') {
        utf8_append(t.text, hex_escape(e, t.line));
      } else {
        t.text += '\\';
        t.text += e;
      }
    }
  }

  // The code point of \xHH or \uHHHH (pos_ after the x or u), as Python reads them: exactly 2 or 4 hex
  // digits; a surrogate (half of a UTF-16 pair) has no UTF-8 form and is an error as well.
  uint32_t hex_escape(char e, int line) {
    const size_t digits = e == 'x' ? 2 : 4;
    uint32_t code = 0;
    for (size_t i = 0; i < digits; ++i, ++pos_) {
      if (pos_ >= source_.size() || !std::isxdigit(static_cast<unsigned char>(source_[pos_])))
        fail(line, "a \\{} escape takes {} hex digits", e, digits);
      const char c = char(std::tolower(static_cast<unsigned char>(source_[pos_])));
      code = code * 16 + uint32_t(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    if (code >= 0xD800 && code <= 0xDFFF) fail(line, "the \\u escape of a surrogate, {:04x}, is not text", code);
    return code;
  }

  std::string source_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Piece> pieces_;
};

}  // namespace

std::vector<Piece> lex(std::string_view source) { return Lexer(source).run(); }

}  // namespace ssm::serve::jinja
