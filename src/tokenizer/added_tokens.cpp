#include "tokenizer/added_tokens.h"

namespace ssm {
namespace {
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
// Letters, digits, '_' and (approximately) every non-ASCII character.
bool is_word_byte(char c) {
  const auto b = uint8_t(c);
  return b >= 0x80 || (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b == '_';
}
}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) {
  nodes_.emplace_back();
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) continue;
    int32_t node = 0;
    for (char c : token.content) {
      const uint8_t b = uint8_t(c);
      int32_t next = -1;
      for (const auto& [byte, child] : nodes_[size_t(node)].children)
        if (byte == b) next = child;
      if (next < 0) {
        next = int32_t(nodes_.size());
        nodes_[size_t(node)].children.emplace_back(b, next);
        nodes_.emplace_back();
      }
      node = next;
    }
    if (nodes_[size_t(node)].token >= 0) continue;  // the same content twice: the first wins
    nodes_[size_t(node)].token = int32_t(tokens_.size());
    tokens_.push_back(token);
    first_byte_[uint8_t(token.content[0])] = true;
  }
}

bool AddedTokenMatcher::match_at(std::string_view text, size_t pos, size_t floor, Match* m) const {
  // Walk the trie, remembering every token that ends on the way; try the longest first.
  int32_t found[64];
  size_t found_end[64];
  int count = 0;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    int32_t next = -1;
    for (const auto& [byte, child] : nodes_[size_t(node)].children)
      if (byte == uint8_t(text[i])) {
        next = child;
        break;
      }
    if (next < 0) break;
    node = next;
    if (nodes_[size_t(node)].token >= 0) {
      if (count == 64) {  // keep the 64 longest
        for (int k = 1; k < 64; ++k) found[k - 1] = found[k], found_end[k - 1] = found_end[k];
        --count;
      }
      found[count] = nodes_[size_t(node)].token;
      found_end[count++] = i + 1;
    }
  }
  for (int k = count - 1; k >= 0; --k) {
    const AddedToken& token = tokens_[size_t(found[k])];
    size_t begin = pos, end = found_end[k];
    if (token.single_word) {
      const bool left_ok = begin == 0 || !is_word_byte(text[begin - 1]);
      const bool right_ok = end == text.size() || !is_word_byte(text[end]);
      if (!left_ok || !right_ok) continue;
    }
    if (token.lstrip)
      while (begin > floor && is_space(text[begin - 1])) --begin;
    if (token.rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    *m = Match{begin, end, token.id};
    return true;
  }
  return false;
}

}  // namespace ssm
