#include "serve/jinja_parse.h"

#include <fmt/format.h>

#include <algorithm>

#include "serve/jinja_builtins.h"
#include "serve/jinja_lex.h"

namespace ssm::serve::jinja {

namespace {

// Rendering and freeing an expression recurse once per level, and so does parsing a nested one: deeper
// expressions (`- - - ... 1`, `1 + 1 + ... + 1`, thousands of brackets) are refused rather than
// overflowing the stack. Real templates nest a few levels.
constexpr int kMaxExprDepth = 128;

void adopt_depth(Expr& parent, const Expr& child) {
  parent.depth = std::max(parent.depth, child.depth + 1);
  if (parent.depth > kMaxExprDepth) fail(parent.line, "an expression nested more than {} levels deep", kMaxExprDepth);
}

ExprPtr make(Expr::Kind kind, int line, std::vector<ExprPtr> args = {}, std::string name = {}) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  e->args = std::move(args);
  e->name = std::move(name);
  for (const ExprPtr& arg : e->args) adopt_depth(*e, *arg);
  return e;
}

ExprPtr literal(Value value, int line) {
  ExprPtr e = make(Expr::Kind::literal, line);
  e->value = std::move(value);
  return e;
}

Node node(Node::Kind kind, int line) {
  Node n;
  n.kind = kind;
  n.line = line;
  return n;
}

std::vector<ExprPtr> pair(ExprPtr a, ExprPtr b) {
  std::vector<ExprPtr> v;
  v.push_back(std::move(a));
  v.push_back(std::move(b));
  return v;
}

// Expressions, by Jinja's precedence: conditional < or < and < not < comparisons < + - < ~ < * / // %
// < ** < unary < filters, tests, calls < . [] < primary.
class ExprParser {
 public:
  explicit ExprParser(const std::vector<Token>& tokens, size_t start = 0) : tokens_(tokens), pos_(start) {}

  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  bool at_op(const char* op) const { return peek().type == Token::Type::op && peek().text == op; }
  bool at_name(const char* name) const { return peek().type == Token::Type::name && peek().text == name; }
  bool at_end() const { return peek().type == Token::Type::end; }
  const Token& next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  void expect_op(const char* op) {
    if (!at_op(op)) fail(peek().line, "expected '{}', found {}", op, describe(peek()));
    ++pos_;
  }
  std::string expect_name() {
    if (peek().type != Token::Type::name) fail(peek().line, "expected a name, found {}", describe(peek()));
    return next().text;
  }
  void expect_end(const char* what) {
    if (!at_end()) fail(peek().line, "unexpected {} in {}", describe(peek()), what);
  }
  static std::string describe(const Token& t) {
    if (t.type == Token::Type::end) return "the end of the tag";
    if (t.type == Token::Type::string) return "a string";
    if (t.type == Token::Type::integer || t.type == Token::Type::real) return "a number";
    return "'" + t.text + "'";
  }

  // conditional: whether "a if b else c" is read ({% for %}'s sequence stops before an "if").
  ExprPtr expression(bool conditional = true) {
    const Nesting nesting(*this);
    ExprPtr value = or_expr();
    while (conditional && at_name("if")) {
      const int line = next().line;
      std::vector<ExprPtr> args;
      args.push_back(or_expr());
      args.push_back(std::move(value));
      if (at_name("else")) {
        next();
        args.push_back(expression());
      }
      value = make(Expr::Kind::conditional, line, std::move(args));
    }
    return value;
  }

 private:
  // One level of the parser's own recursion (brackets, prefix operators), bounded as the trees are.
  class Nesting {
   public:
    explicit Nesting(ExprParser& parser) : parser_(parser) {
      if (++parser_.nesting_ > kMaxExprDepth)
        fail(parser_.peek().line, "an expression nested more than {} levels deep", kMaxExprDepth);
    }
    ~Nesting() { --parser_.nesting_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;

   private:
    ExprParser& parser_;
  };

  ExprPtr or_expr() {
    ExprPtr left = and_expr();
    while (at_name("or")) {
      const int line = next().line;
      left = make(Expr::Kind::binary, line, pair(std::move(left), and_expr()), "or");
    }
    return left;
  }
  ExprPtr and_expr() {
    ExprPtr left = not_expr();
    while (at_name("and")) {
      const int line = next().line;
      left = make(Expr::Kind::binary, line, pair(std::move(left), not_expr()), "and");
    }
    return left;
  }
  ExprPtr not_expr() {
    if (!at_name("not")) return compare();
    const int line = next().line;
    const Nesting nesting(*this);
    std::vector<ExprPtr> args;
    args.push_back(not_expr());
    return make(Expr::Kind::unary, line, std::move(args), "not");
  }
  ExprPtr compare() {
    ExprPtr first = math1();
    std::vector<ExprPtr> args;
    std::vector<std::string> ops;
    const int line = peek().line;
    while (true) {
      std::string op;
      if (peek().type == Token::Type::op &&
          (at_op("==") || at_op("!=") || at_op("<") || at_op("<=") || at_op(">") || at_op(">="))) {
        op = next().text;
      } else if (at_name("in")) {
        next();
        op = "in";
      } else if (at_name("not") && peek(1).type == Token::Type::name && peek(1).text == "in") {
        pos_ += 2;
        op = "notin";
      } else {
        break;
      }
      if (args.empty()) args.push_back(std::move(first));
      args.push_back(math1());
      ops.push_back(op);
    }
    if (args.empty()) return first;
    ExprPtr e = make(Expr::Kind::compare, line, std::move(args));
    e->ops = std::move(ops);
    return e;
  }
  ExprPtr math1() {
    ExprPtr left = concat();
    while (at_op("+") || at_op("-")) {
      const Token& op = next();
      left = make(Expr::Kind::binary, op.line, pair(std::move(left), concat()), op.text);
    }
    return left;
  }
  ExprPtr concat() {
    ExprPtr left = math2();
    while (at_op("~")) {
      const int line = next().line;
      left = make(Expr::Kind::binary, line, pair(std::move(left), math2()), "~");
    }
    return left;
  }
  ExprPtr math2() {
    ExprPtr left = power();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const Token& op = next();
      left = make(Expr::Kind::binary, op.line, pair(std::move(left), power()), op.text);
    }
    return left;
  }
  ExprPtr power() {
    ExprPtr left = unary(true);
    while (at_op("**")) {
      const int line = next().line;
      left = make(Expr::Kind::binary, line, pair(std::move(left), unary(true)), "**");
    }
    return left;
  }
  ExprPtr unary(bool with_filters) {
    ExprPtr e;
    if (at_op("-") || at_op("+")) {
      const Token& op = next();
      const Nesting nesting(*this);
      std::vector<ExprPtr> args;
      args.push_back(unary(false));
      e = make(Expr::Kind::unary, op.line, std::move(args), op.text);
    } else {
      e = primary();
    }
    e = postfix(std::move(e));
    return with_filters ? filters(std::move(e)) : std::move(e);
  }

  ExprPtr primary() {
    const Token& t = next();
    switch (t.type) {
      case Token::Type::string: {
        std::string text = t.text;
        while (peek().type == Token::Type::string) text += next().text;  // "a" "b" is "ab", as in Python
        return literal(Value::of(std::move(text)), t.line);
      }
      case Token::Type::integer:
        return literal(Value::of(t.integer), t.line);
      case Token::Type::real:
        return literal(Value::of(t.real), t.line);
      case Token::Type::name:
        if (t.text == "true" || t.text == "True") return literal(Value::of(true), t.line);
        if (t.text == "false" || t.text == "False") return literal(Value::of(false), t.line);
        if (t.text == "none" || t.text == "None") return literal(Value::none(), t.line);
        if (at_op("(")) {
          if (!known_function(t.text)) fail(t.line, "the function '{}' is not supported", t.text);
          ExprPtr call = make(Expr::Kind::call, t.line, {}, t.text);
          arguments(*call);
          return call;
        }
        return make(Expr::Kind::name, t.line, {}, t.text);
      case Token::Type::op:
        if (t.text == "(") {
          ExprPtr inner = expression();
          if (!at_op(",")) {
            expect_op(")");
            return inner;
          }
          std::vector<ExprPtr> items;
          items.push_back(std::move(inner));
          while (at_op(",")) {
            next();
            if (at_op(")")) break;
            items.push_back(expression());
          }
          expect_op(")");
          return make(Expr::Kind::list, t.line, std::move(items));
        }
        if (t.text == "[") return sequence(t.line, "]", false);
        if (t.text == "{") return sequence(t.line, "}", true);
        break;
      case Token::Type::end:
        break;
    }
    fail(t.line, "unexpected {}", describe(t));
  }

  // [a, b, ...] or {k: v, ...} after its opening bracket.
  ExprPtr sequence(int line, const char* closing, bool dict) {
    std::vector<ExprPtr> items;
    while (!at_op(closing)) {
      items.push_back(expression());
      if (dict) {
        expect_op(":");
        items.push_back(expression());
      }
      if (!at_op(",")) break;
      next();
    }
    expect_op(closing);
    return make(dict ? Expr::Kind::dict : Expr::Kind::list, line, std::move(items));
  }

  ExprPtr postfix(ExprPtr e) {
    while (true) {
      if (at_op(".")) {
        const int line = next().line;
        const std::string name = expect_name();
        if (at_op("(")) {
          if (!known_method(name)) fail(line, "the method '{}' is not supported", name);
          std::vector<ExprPtr> args;
          args.push_back(std::move(e));
          e = make(Expr::Kind::method, line, std::move(args), name);
          arguments(*e);
          if (!e->keywords.empty()) fail(line, "keyword arguments to '{}' are not supported", name);
        } else {
          std::vector<ExprPtr> args;
          args.push_back(std::move(e));
          e = make(Expr::Kind::attribute, line, std::move(args), name);
        }
      } else if (at_op("[")) {
        e = subscript(std::move(e));
      } else if (at_op("(")) {
        fail(peek().line, "only functions and methods can be called");
      } else {
        return e;
      }
    }
  }

  ExprPtr subscript(ExprPtr target) {
    const int line = next().line;  // [
    std::vector<ExprPtr> args;
    args.push_back(std::move(target));
    const auto bound = [&] { return at_op(":") || at_op("]") ? literal(Value(), line) : expression(); };
    args.push_back(bound());
    if (!at_op(":")) {
      expect_op("]");
      return make(Expr::Kind::item, line, std::move(args));
    }
    next();
    args.push_back(bound());
    if (at_op(":")) {
      next();
      args.push_back(bound());
    } else {
      args.push_back(literal(Value(), line));
    }
    expect_op("]");
    return make(Expr::Kind::slice, line, std::move(args));
  }

  ExprPtr filters(ExprPtr e) {
    while (true) {
      if (at_op("|")) {
        const int line = next().line;
        const std::string name = expect_name();
        if (!known_filter(name)) fail(line, "the filter '{}' is not supported", name);
        std::vector<ExprPtr> args;
        args.push_back(std::move(e));
        e = make(Expr::Kind::filter, line, std::move(args), name);
        if (at_op("(")) arguments(*e);
      } else if (at_name("is")) {
        const int line = next().line;
        const bool negated = at_name("not");
        if (negated) next();
        // "none", "true" and "false" are tests as well as constants.
        const std::string name = expect_name();
        if (!known_test(name)) fail(line, "the test '{}' is not supported", name);
        std::vector<ExprPtr> args;
        args.push_back(std::move(e));
        e = make(Expr::Kind::test, line, std::move(args), name);
        e->negated = negated;
        if (at_op("(")) arguments(*e);
        if (!e->keywords.empty()) fail(line, "keyword arguments to the test '{}' are not supported", name);
      } else if (at_op("(")) {
        fail(peek().line, "only functions and methods can be called");
      } else {
        return e;
      }
    }
  }

  // (a, b, name=c) into e's args (after those it has) and keywords.
  void arguments(Expr& e) {
    expect_op("(");
    while (!at_op(")")) {
      if (peek().type == Token::Type::name && peek(1).type == Token::Type::op && peek(1).text == "=") {
        std::string name = next().text;
        next();
        e.keywords.emplace_back(std::move(name), expression());
        adopt_depth(e, *e.keywords.back().second);
      } else {
        if (!e.keywords.empty()) fail(peek().line, "a positional argument after a keyword argument");
        e.args.push_back(expression());
        adopt_depth(e, *e.args.back());
      }
      if (!at_op(",")) break;
      next();
    }
    expect_op(")");
  }

  const std::vector<Token>& tokens_;
  size_t pos_;
  int nesting_ = 0;
};

// Statements: nests if and for bodies, checking that each is closed.
class Parser {
 public:
  explicit Parser(std::vector<Piece> pieces) : pieces_(std::move(pieces)) {}

  Body body(const std::vector<std::string>& closers, const char* opened_by, int opened_at) {
    Body out;
    for (; at_ < pieces_.size(); ++at_) {
      Piece& p = pieces_[at_];
      if (p.kind == Piece::Kind::text) {
        out.push_back(node(Node::Kind::text, p.line));
        out.back().text = std::move(p.text);
        continue;
      }
      ExprParser tokens(p.tokens);
      if (p.kind == Piece::Kind::output) {
        out.push_back(node(Node::Kind::output, p.line));
        out.back().expr = tokens.expression();
        tokens.expect_end("{{ }}");
        continue;
      }
      const std::string keyword = tokens.expect_name();
      if (std::find(closers.begin(), closers.end(), keyword) != closers.end()) return out;
      if (keyword == "if")
        out.push_back(branch(tokens, p.line));
      else if (keyword == "for")
        out.push_back(loop(tokens, p.line));
      else if (keyword == "set")
        out.push_back(assign(tokens, p.line));
      else if (keyword == "elif" || keyword == "else" || keyword.starts_with("end"))
        fail(p.line, "unexpected {{% {} %}}", keyword);
      else
        fail(p.line, "the statement {{% {} %}} is not supported", keyword);
    }
    if (!closers.empty()) fail(opened_at, "{{% {} %}} is not closed (expected {{% {} %}})", opened_by, closers.back());
    return out;
  }

 private:
  // The keyword of the statement that ended a body, and a parser of the rest of it.
  std::string closer(ExprParser& rest) {
    rest.next();
    return pieces_[at_].tokens[0].text;
  }

  Node branch(ExprParser& tokens, int line) {
    Node node = jinja::node(Node::Kind::branch, line);
    ExprPtr condition = tokens.expression();
    tokens.expect_end("{% if %}");
    bool has_else = false;
    while (true) {
      ++at_;
      Body branch_body = body(
          has_else ? std::vector<std::string>{"endif"} : std::vector<std::string>{"elif", "else", "endif"}, "if", line);
      node.branches.emplace_back(std::move(condition), std::move(branch_body));
      ExprParser rest(pieces_[at_].tokens);
      const std::string keyword = closer(rest);
      if (keyword == "endif") {
        rest.expect_end("{% endif %}");
        return node;
      }
      if (keyword == "elif") {
        condition = rest.expression();
      } else {
        has_else = true;
        condition = nullptr;
      }
      rest.expect_end(keyword == "elif" ? "{% elif %}" : "{% else %}");
    }
  }

  Node loop(ExprParser& tokens, int line) {
    Node node = jinja::node(Node::Kind::loop, line);
    node.targets.push_back(tokens.expect_name());
    if (tokens.at_op(",")) {
      tokens.next();
      node.targets.push_back(tokens.expect_name());
    }
    if (!tokens.at_name("in")) fail(line, "expected 'in' in {{% for %}}");
    tokens.next();
    node.expr = tokens.expression(false);
    if (tokens.at_name("if") || tokens.at_name("recursive"))
      fail(line, "'{}' in {{% for %}} is not supported", tokens.peek().text);
    tokens.expect_end("{% for %}");
    ++at_;
    node.body = body({"else", "endfor"}, "for", line);
    ExprParser rest(pieces_[at_].tokens);
    if (closer(rest) == "else") fail(pieces_[at_].line, "{{% for %}} ... {{% else %}} is not supported");
    rest.expect_end("{% endfor %}");
    return node;
  }

  Node assign(ExprParser& tokens, int line) {
    Node node = jinja::node(Node::Kind::assign, line);
    node.targets.push_back(tokens.expect_name());
    if (tokens.at_op(".")) {
      tokens.next();
      node.targets.push_back(tokens.expect_name());
    }
    if (tokens.at_end()) fail(line, "block assignments ({{% set x %}}...{{% endset %}}) are not supported");
    if (!tokens.at_op("="))
      fail(line, "expected '=' in {{% set %}} (only one name or namespace attribute is assigned)");
    tokens.next();
    node.expr = tokens.expression();
    tokens.expect_end("{% set %}");
    return node;
  }

  std::vector<Piece> pieces_;
  size_t at_ = 0;
};

}  // namespace

Body parse(std::string_view source) { return Parser(lex(source)).body({}, "", 0); }

}  // namespace ssm::serve::jinja
