#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace ssm {
namespace {

TEST(TokenizerByte, BytesAreIdsAndSpecialsFollow) {
  const auto tok = make_byte_tokenizer();
  EXPECT_EQ(tok->kind(), "byte");
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->bos_id(), 256);
  EXPECT_EQ(tok->eos_id(), 256);
  EXPECT_EQ(tok->encode("Ab\xFF"), (std::vector<int32_t>{65, 98, 255}));
  EXPECT_EQ(tok->encode("a<|endoftext|>b"), (std::vector<int32_t>{97, 256, 98}));
  EXPECT_EQ(tok->encode_ordinary("<|endoftext|>").size(), 13u);
  EXPECT_EQ(tok->decode(std::vector<int32_t>{104, 105, 256}), "hi<|endoftext|>");
  EXPECT_TRUE(tok->is_special(256));
  EXPECT_FALSE(tok->is_special(255));
  EXPECT_EQ(tok->token_id("<|endoftext|>"), 256);
  EXPECT_THROW(tok->token_bytes(257), Error);
  EXPECT_THROW(tok->token_bytes(-1), Error);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(char(b));
  EXPECT_EQ(tok->decode(tok->encode(all)), all);
}

TEST(TokenizerByte, CustomSpecialsLeftmostLongest) {
  const auto tok = make_byte_tokenizer({"<pad>", "<s>", "</s>", "<s>x"}, "<s>", "</s>");
  EXPECT_EQ(tok->vocab_size(), 260);
  EXPECT_EQ(tok->bos_id(), 257);
  EXPECT_EQ(tok->eos_id(), 258);
  EXPECT_EQ(tok->encode("<s>xy</s>"), (std::vector<int32_t>{259, 121, 258}));
  EXPECT_THROW(make_byte_tokenizer({"<s>"}, "<bos>", ""), Error);
  const auto none = make_byte_tokenizer({}, "", "");
  EXPECT_EQ(none->vocab_size(), 256);
  EXPECT_FALSE(none->eos_id().has_value());
}

}  // namespace
}  // namespace ssm
