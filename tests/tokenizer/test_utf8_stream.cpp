#include <gtest/gtest.h>

#include "tokenizer/utf8_stream.h"

namespace ssm {
namespace {

TEST(TokenizerUtf8Stream, HoldsSplitCharactersUntilComplete) {
  Utf8Stream stream;
  const std::string crab = "\xF0\x9F\xA6\x80";  // 🦀
  EXPECT_EQ(stream.feed("a\xF0"), "a");
  EXPECT_TRUE(stream.has_pending());
  EXPECT_EQ(stream.feed("\x9F"), "");
  EXPECT_EQ(stream.feed("\xA6"), "");
  EXPECT_EQ(stream.feed("\x80 b"), crab + " b");
  EXPECT_FALSE(stream.has_pending());
  EXPECT_EQ(stream.flush(), "");
}

TEST(TokenizerUtf8Stream, ByteByByteEqualsWhole) {
  const std::string text = "h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9";
  Utf8Stream stream;
  std::string out;
  for (char c : text) out += stream.feed(std::string(1, c));
  out += stream.flush();
  EXPECT_EQ(out, text);
}

TEST(TokenizerUtf8Stream, InvalidBytesBecomeReplacementCharacters) {
  const std::string fffd = "\xEF\xBF\xBD";
  Utf8Stream stream;
  EXPECT_EQ(stream.feed("a\xFF" "b"), "a" + fffd + "b");
  EXPECT_EQ(stream.feed("\xC3\x28"), fffd + "(");                 // a lead byte then no continuation
  EXPECT_EQ(stream.feed("\xE2\x82\x28"), fffd + "(");             // maximal subpart E2 82 is one U+FFFD
  EXPECT_EQ(stream.feed("\xED\xA0\x80"), fffd + fffd + fffd);     // surrogates are invalid
  EXPECT_EQ(stream.feed("x\xE6\x97"), "x");
  EXPECT_EQ(stream.flush(), fffd);                                // unfinished at the end
  EXPECT_EQ(stream.feed("\xE6"), "");
  EXPECT_EQ(stream.feed("z"), fffd + "z");                        // interrupted by ASCII
}

TEST(TokenizerUtf8Stream, DecodesStrictly) {
  EXPECT_TRUE(utf8_valid("plain \xC3\xA9 \xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(utf8_valid("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(utf8_valid("\xC0\xAF"));          // overlong
  EXPECT_FALSE(utf8_valid("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(utf8_valid("\xE6\x97"));          // truncated
  const Utf8Char c = utf8_next("\xE6\x97\xA5", 3);
  EXPECT_TRUE(c.valid);
  EXPECT_EQ(c.cp, 0x65E5u);
  EXPECT_EQ(c.len, 3);
}

}  // namespace
}  // namespace ssm
