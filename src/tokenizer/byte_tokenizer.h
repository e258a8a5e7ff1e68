// ByteTokenizer: one id per byte (0..255) plus special tokens (256..), for models trained on raw bytes
// that come without a tokenizer.json. Made by make_byte_tokenizer() (tokenizer.h).
#pragma once
#include <string>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/tokenizer.h"

namespace ssm {

class ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(const std::vector<std::string>& specials);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_ordinary(std::string_view text) const override;
  std::string_view token_bytes(int32_t id) const override;
  int32_t vocab_size() const override { return 256 + int32_t(specials_.size()); }
  std::optional<int32_t> token_id(std::string_view token) const override;
  bool is_special(int32_t id) const override { return id >= 256 && id < vocab_size(); }
  std::string kind() const override { return "byte"; }

 private:
  std::vector<std::string> specials_;
  std::string bytes_;  // the 256 one-byte tokens, back to back
  AddedTokenMatcher matcher_;
};

}  // namespace ssm
