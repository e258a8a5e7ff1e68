// NFC against a sample of Unicode's own NormalizationTest.txt (tests/fixtures/tokenizer/nfc_cases.txt,
// made by scripts/gen-unicode-nfc.py) and a few hand-picked cases.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tokenizer/unicode_nfc.h"
#include "tokenizer/utf8_stream.h"

namespace ssm {
namespace {

std::string from_hex_code_points(const std::string& field) {
  std::istringstream in(field);
  std::string out, word;
  while (in >> word) utf8_append(out, uint32_t(std::stoul(word, nullptr, 16)));
  return out;
}

TEST(TokenizerNfc, MatchesNormalizationTestSample) {
  std::ifstream in(std::string(SSM_TEST_DATA_DIR) + "/tokenizer/nfc_cases.txt");
  ASSERT_TRUE(in.good()) << "missing tests/fixtures/tokenizer/nfc_cases.txt";
  std::string line;
  int cases = 0, failures = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t semi = line.find(';');
    ASSERT_NE(semi, std::string::npos) << line;
    const std::string source = from_hex_code_points(line.substr(0, semi));
    const std::string expected = from_hex_code_points(line.substr(semi + 1));
    ++cases;
    if (nfc_normalize(source) != expected && ++failures <= 10) ADD_FAILURE() << "NFC(" << line.substr(0, semi) << ")";
    // NFC is idempotent, and the expected form passes through untouched.
    if (nfc_normalize(expected) != expected && ++failures <= 10) ADD_FAILURE() << "NFC not stable on " << line;
  }
  EXPECT_GT(cases, 3000);
  EXPECT_EQ(failures, 0);
}

TEST(TokenizerNfc, FastPathLeavesNfcTextAlone) {
  std::string out = "untouched";
  EXPECT_FALSE(nfc_normalize_if_needed("plain ASCII, Latin-1 caf\xC3\xA9, CJK \xE6\x97\xA5\xE6\x9C\xAC", &out));
  EXPECT_EQ(out, "untouched");
  EXPECT_TRUE(nfc_normalize_if_needed("cafe\xCC\x81", &out));
  EXPECT_EQ(out, "caf\xC3\xA9");
}

TEST(TokenizerNfc, ComposesReordersAndHandlesHangul) {
  EXPECT_EQ(nfc_normalize("A\xCC\x8A"), "\xC3\x85");                      // A + ring -> Å
  EXPECT_EQ(nfc_normalize("\xE2\x84\xAB"), "\xC3\x85");                   // ANGSTROM SIGN -> Å (singleton)
  EXPECT_EQ(nfc_normalize("q\xCC\x87\xCC\xA3"), "q\xCC\xA3\xCC\x87");     // dot below (220) before dot above (230)
  EXPECT_EQ(nfc_normalize("e\xCC\xA3\xCC\x82"), "\xE1\xBB\x87");          // e + dot below + circumflex -> ệ
  EXPECT_EQ(nfc_normalize("\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");   // Hangul L + V -> 가
  EXPECT_EQ(nfc_normalize("\xEA\xB0\x80\xE1\x86\xA8"), "\xEA\xB0\x81");   // LV + T -> 각
  EXPECT_EQ(nfc_normalize("\xCC\x81" "a"), "\xCC\x81" "a");                // a leading mark stays
}

TEST(TokenizerNfc, InvalidBytesPassThroughAndBlock) {
  EXPECT_EQ(nfc_normalize("\xFF"), "\xFF");
  EXPECT_EQ(nfc_normalize("e\xFF\xCC\x81"), "e\xFF\xCC\x81");  // the invalid byte blocks e + acute
  EXPECT_EQ(nfc_normalize("\xC3" "e\xCC\x81"), "\xC3\xC3\xA9");
  EXPECT_EQ(nfc_normalize("e\xCC\x81\xE6\x97"), "\xC3\xA9\xE6\x97");
}

}  // namespace
}  // namespace ssm
