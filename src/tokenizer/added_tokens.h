// Added and special tokens: found in the text before any other splitting, leftmost-longest, as Hugging
// Face tokenizers' AddedVocabulary does (with its single_word, lstrip and rstrip options).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ssm {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;  // match only between non-word characters
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool normalized = true;    // matched in the normalised text (false: in the raw text)
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);
  bool empty() const { return tokens_.empty(); }

  // Calls on_text(piece) for each non-empty stretch between matches and on_token(id) for each match,
  // in order.
  template <class OnText, class OnToken>
  void split(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
    size_t copied = 0, pos = 0;
    while (!tokens_.empty() && pos < text.size()) {
      Match m;
      if (!first_byte_[uint8_t(text[pos])] || !match_at(text, pos, copied, &m)) {
        ++pos;
        continue;
      }
      if (m.begin > copied) on_text(text.substr(copied, m.begin - copied));
      on_token(m.id);
      copied = pos = m.end;
    }
    if (copied < text.size()) on_text(text.substr(copied));
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node
    int32_t token = -1;                                 // index into tokens_ of the token ending here
  };
  struct Match {
    size_t begin, end;
    int32_t id;
  };
  // The longest acceptable token starting at pos; `floor` bounds lstrip's reach to the left.
  bool match_at(std::string_view text, size_t pos, size_t floor, Match* m) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;  // trie; node 0 is the root
  bool first_byte_[256] = {};
};

}  // namespace ssm
