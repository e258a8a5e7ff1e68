#include "tokenizer/byte_tokenizer.h"

namespace ssm {

ByteTokenizer::ByteTokenizer(const std::vector<std::string>& specials) : specials_(specials) {
  bytes_.resize(256);
  for (int b = 0; b < 256; ++b) bytes_[size_t(b)] = char(b);
  std::vector<AddedToken> added;
  for (size_t i = 0; i < specials_.size(); ++i) {
    SSM_CHECK(!specials_[i].empty(), "byte tokenizer: special token {} is empty", 256 + i);
    for (size_t j = 0; j < i; ++j)
      SSM_CHECK(specials_[j] != specials_[i], "byte tokenizer: special token '{}' is given twice", specials_[i]);
    AddedToken token;
    token.content = specials_[i];
    token.id = int32_t(256 + i);
    token.special = true;
    token.normalized = false;
    added.push_back(token);
  }
  matcher_ = AddedTokenMatcher(added);
}

std::vector<int32_t> ByteTokenizer::encode_ordinary(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = uint8_t(text[i]);
  return ids;
}

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  matcher_.split(
      text,
      [&](std::string_view piece) {
        for (char c : piece) ids.push_back(uint8_t(c));
      },
      [&](int32_t id) { ids.push_back(id); });
  return ids;
}

std::string_view ByteTokenizer::token_bytes(int32_t id) const {
  if (id >= 0 && id < 256) return std::string_view(bytes_).substr(size_t(id), 1);
  SSM_CHECK(id >= 256 && id < vocab_size(), "token id {} is outside the byte vocabulary (size {})", id, vocab_size());
  return specials_[size_t(id - 256)];
}

std::optional<int32_t> ByteTokenizer::token_id(std::string_view token) const {
  for (size_t i = 0; i < specials_.size(); ++i)
    if (specials_[i] == token) return int32_t(256 + i);
  if (token.size() == 1) return int32_t(uint8_t(token[0]));
  return std::nullopt;
}

std::unique_ptr<Tokenizer> make_byte_tokenizer(const std::vector<std::string>& specials, const std::string& bos_token,
                                               const std::string& eos_token) {
  auto tokenizer = std::make_unique<ByteTokenizer>(specials);
  auto special_id = [&](const std::string& name, const char* what) -> std::optional<int32_t> {
    if (name.empty()) return std::nullopt;
    for (size_t i = 0; i < specials.size(); ++i)
      if (specials[i] == name) return int32_t(256 + i);
    fail("byte tokenizer: {} token '{}' is not one of its special tokens", what, name);
  };
  tokenizer->set_bos_id(special_id(bos_token, "bos"));
  tokenizer->set_eos_id(special_id(eos_token, "eos"));
  return tokenizer;
}

}  // namespace ssm
