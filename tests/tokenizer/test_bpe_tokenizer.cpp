// Byte-level BPE from hand-made tokenizer.json files: merges by rank, added/special tokens, the byte
// decoder, invalid UTF-8, NFC, the pre-tokenizer forms, and the refusals.
#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace ssm {
namespace {

using test::add_token;
using test::byte_level;
using test::make_bpe_json;
using test::TempDir;

std::vector<int32_t> ids_of(const Tokenizer& tok, std::initializer_list<const char*> tokens) {
  std::vector<int32_t> out;
  for (const char* t : tokens) {
    const auto id = tok.token_id(t);
    EXPECT_TRUE(id.has_value()) << "no token '" << t << "'";
    out.push_back(id.value_or(-1));
  }
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerBpe, MergesApplyByRankNotByPosition) {
  // "abc": with (b,c) ranked first, the word becomes a|bc and then abc; with (a,b) first it stays ab|c.
  BpeTokenizer bc_first(make_bpe_json({{"b", "c"}, {"a", "b"}, {"a", "bc"}}), "bc_first");
  EXPECT_EQ(bc_first.encode("abc"), ids_of(bc_first, {"abc"}));
  BpeTokenizer ab_first(make_bpe_json({{"a", "b"}, {"b", "c"}, {"a", "bc"}}), "ab_first");
  EXPECT_EQ(ab_first.encode("abc"), ids_of(ab_first, {"ab", "c"}));
  EXPECT_EQ(ab_first.num_merges(), 3u);
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirst) {
  BpeTokenizer tok(make_bpe_json({{"a", "a"}}), "aa");
  EXPECT_EQ(tok.encode("aaa"), ids_of(tok, {"aa", "a"}));
  EXPECT_EQ(tok.encode("aaaa"), ids_of(tok, {"aa", "aa"}));
  BpeTokenizer tok2(make_bpe_json({{"a", "a"}, {"aa", "aa"}}), "aaaa");
  EXPECT_EQ(tok2.encode("aaaaa"), ids_of(tok2, {"aaaa", "a"}));
}

TEST(TokenizerBpe, MergesAsArraysEqualMergesAsStrings) {
  Json json = make_bpe_json({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}});
  BpeTokenizer strings(json, "strings");
  for (Json& merge : json["model"]["merges"]) {
    const std::string text = merge.get<std::string>();
    const size_t space = text.find(' ');
    merge = Json::array({text.substr(0, space), text.substr(space + 1)});
  }
  BpeTokenizer arrays(json, "arrays");
  EXPECT_EQ(strings.encode("hello hell"), arrays.encode("hello hell"));
  EXPECT_EQ(arrays.encode("hello"), ids_of(arrays, {"hello"}));
}

TEST(TokenizerBpe, SplitsWithTheGpt2PatternBeforeMerging) {
  // The merge (o, space) never applies: "o" and " w" are different pre-tokens.
  BpeTokenizer tok(make_bpe_json({{"o", " "}, {" ", "w"}, {"'", "s"}}), "gpt2-split");
  EXPECT_EQ(tok.encode("o w"), ids_of(tok, {"o", " w"}));
  EXPECT_EQ(tok.encode("it's"), ids_of(tok, {"i", "t", "'s"}));
  // Runs of spaces: all but the last space form one piece, so the last one joins the next word.
  EXPECT_EQ(tok.encode("a   w"), ids_of(tok, {"a", " ", " ", " w"}));
}

TEST(TokenizerBpe, LongPiecesMergeLikeShortOnes) {
  // Pieces over 256 bytes take the heap path; the result must continue the short-path pattern.
  BpeTokenizer tok(make_bpe_json({{"a", "b"}, {"ab", "ab"}}), "long");
  std::string short_word, long_word;
  for (int i = 0; i < 128; ++i) short_word += "ab";
  for (int i = 0; i < 129; ++i) long_word += "ab";
  const auto abab = tok.token_id("abab").value();
  const auto ab = tok.token_id("ab").value();
  EXPECT_EQ(tok.encode(short_word), std::vector<int32_t>(64, abab));
  std::vector<int32_t> expected(64, abab);
  expected.push_back(ab);
  EXPECT_EQ(tok.encode(long_word), expected);
  std::string aaa(1001, 'a');
  BpeTokenizer aa(make_bpe_json({{"a", "a"}, {"aa", "aa"}}), "aa");
  std::vector<int32_t> expected_a(250, aa.token_id("aaaa").value());
  expected_a.push_back(aa.token_id("a").value());
  EXPECT_EQ(aa.encode(aaa), expected_a);
}

TEST(TokenizerBpe, AddedAndSpecialTokensMatchBeforeSplitting) {
  Json json = make_bpe_json({{"h", "i"}, {" ", "t"}});
  add_token(json, 400, "<|end|>", true);
  add_token(json, 401, "<|end|>x", true);   // leftmost-longest wins
  add_token(json, 402, "t h", false);       // spans what the regex would split; not special
  BpeTokenizer tok(json, "added");
  EXPECT_EQ(tok.vocab_size(), 403);
  const int32_t hi = tok.token_id("hi").value();
  EXPECT_EQ(tok.encode("hi<|end|>hi"), (std::vector<int32_t>{hi, 400, hi}));
  EXPECT_EQ(tok.encode("<|end|>xhi"), (std::vector<int32_t>{401, hi}));
  EXPECT_EQ(tok.encode("hit hi"), (std::vector<int32_t>{hi, 402, tok.token_id("i").value()}));
  EXPECT_TRUE(tok.is_special(400));
  EXPECT_FALSE(tok.is_special(402));
  EXPECT_FALSE(tok.is_special(hi));
  // encode_ordinary: special tokens are text, other added tokens still apply.
  const auto ordinary = tok.encode_ordinary("<|end|>");
  EXPECT_EQ(ordinary.size(), 7u);
  EXPECT_EQ(tok.decode(ordinary), "<|end|>");
  EXPECT_EQ(tok.encode_ordinary("t h"), (std::vector<int32_t>{402}));
  EXPECT_EQ(tok.decode(tok.encode("a<|end|>b<|end|>xt h")), "a<|end|>b<|end|>xt h");
  EXPECT_EQ(tok.token_bytes(400), "<|end|>");
}

TEST(TokenizerBpe, AddedTokenOptionsStripAndSingleWord) {
  Json json = make_bpe_json({});
  json["added_tokens"].push_back({{"id", 300}, {"content", "<mask>"}, {"single_word", false}, {"lstrip", true},
                                  {"rstrip", true}, {"normalized", false}, {"special", true}});
  json["added_tokens"].push_back({{"id", 301}, {"content", "cat"}, {"single_word", true}, {"lstrip", false},
                                  {"rstrip", false}, {"normalized", false}, {"special", false}});
  BpeTokenizer tok(json, "options");
  const int32_t a = tok.token_id("a").value(), b = tok.token_id("b").value();
  EXPECT_EQ(tok.encode("a  <mask>  b"), (std::vector<int32_t>{a, 300, b}));
  EXPECT_EQ(tok.encode("cat"), (std::vector<int32_t>{301}));
  EXPECT_EQ(tok.encode("a cat b").size(), 5u);  // a, " ", cat, " ", b... as a word of its own
  EXPECT_EQ(tok.encode("concat").size(), 6u);   // inside a word: plain bytes
}

TEST(TokenizerBpe, ByteDecoderMapsEveryByteBack) {
  BpeTokenizer tok(make_bpe_json({{"\xC3", "\xA9"}, {" ", "\xC3\xA9"}}), "bytes");
  // Vocabulary tokens are spelled in GPT-2's printable byte alphabet: 'Ġ' is the space byte.
  EXPECT_EQ(tok.token_bytes(tok.token_id(byte_level(" ")).value()), " ");
  EXPECT_EQ(tok.token_bytes(tok.token_id(byte_level("\xC3\xA9")).value()), "\xC3\xA9");
  EXPECT_EQ(tok.encode(" \xC3\xA9"), ids_of(tok, {" \xC3\xA9"}));
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(char(b));
  EXPECT_EQ(tok.decode(tok.encode(all)), all);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(tok.token_bytes(b), std::string(1, char(b)));
  // A partial character decodes to its bytes (callers use Utf8Stream to print).
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0xC3}), "\xC3");
}

TEST(TokenizerBpe, InvalidUtf8BytesArePiecesOfTheirOwnAndRoundTrip) {
  // The merge (0xFF, 'a') never applies: an invalid byte matches no regex branch, so it is its own piece.
  BpeTokenizer tok(make_bpe_json({{"\xFF", "a"}, {"a", "b"}, {"\xFF", "\xFE"}}), "invalid");
  const int32_t ff = tok.token_id("\xFF").value(), ab = tok.token_id("ab").value();
  EXPECT_EQ(tok.encode("\xFF" "ab"), (std::vector<int32_t>{ff, ab}));
  // A run of invalid bytes is one piece (and merges inside it).
  EXPECT_EQ(tok.encode("\xFF\xFE"), ids_of(tok, {"\xFF\xFE"}));
  for (const std::string& text : {std::string("\xC3\x28 abc \xFF\xFE!"), std::string("\xED\xA0\x80 surrogate"),
                                 std::string("trunc\xE6\x97"), std::string("\xC0\xAF overlong"), std::string("\x80"),
                                 std::string("caf\xC3 \xA9x"), std::string("a\0b", 3)}) {
    EXPECT_EQ(tok.decode(tok.encode(text)), text);
  }
}

TEST(TokenizerBpe, NfcNormalizerComposesBeforeEncoding) {
  Json json = make_bpe_json({{"\xC3", "\xA9"}, {"caf", "\xC3\xA9"}, {"c", "a"}, {"ca", "f"}});
  BpeTokenizer plain(json, "plain");
  json["normalizer"] = {{"type", "NFC"}};
  BpeTokenizer nfc(json, "nfc");
  const std::string composed = "caf\xC3\xA9", decomposed = "cafe\xCC\x81";
  EXPECT_EQ(nfc.encode(decomposed), nfc.encode(composed));
  EXPECT_EQ(nfc.encode(composed), ids_of(nfc, {"caf\xC3\xA9"}));
  EXPECT_NE(plain.encode(decomposed), plain.encode(composed));
  EXPECT_EQ(plain.decode(plain.encode(decomposed)), decomposed);
  EXPECT_EQ(nfc.decode(nfc.encode(decomposed)), composed);
  // A Sequence holding NFC is accepted, and so is normalizer: null.
  json["normalizer"] = {{"type", "Sequence"}, {"normalizers", Json::array({{{"type", "NFC"}}})}};
  BpeTokenizer sequence(json, "sequence");
  EXPECT_EQ(sequence.encode(decomposed), nfc.encode(composed));
}

TEST(TokenizerBpe, NormalizedAddedTokensMatchAfterNfc) {
  Json json = make_bpe_json({});
  json["normalizer"] = {{"type", "NFC"}};
  add_token(json, 300, "\xC3\xA9t\xC3\xA9", false, /*normalized=*/true);  // "été"
  add_token(json, 301, "  ", false, /*normalized=*/true);                 // NeoX-style runs of spaces
  BpeTokenizer tok(json, "normalized-added");
  EXPECT_EQ(tok.encode("e\xCC\x81te\xCC\x81"), (std::vector<int32_t>{300}));
  const int32_t a = tok.token_id("a").value(), b = tok.token_id("b").value();
  EXPECT_EQ(tok.encode("a  b"), (std::vector<int32_t>{a, 301, b}));
  EXPECT_EQ(tok.decode(tok.encode("a  b")), "a  b");
}

TEST(TokenizerBpe, SplitRegexThenByteLevelWithoutRegex) {
  Json json = make_bpe_json({{"1", "2"}, {"12", "3"}, {"3", "4"}, {"4", "5"}});
  json["pre_tokenizer"] = {{"type", "Sequence"},
                           {"pretokenizers",
                            Json::array({{{"type", "Split"},
                                          {"pattern", {{"Regex", "\\p{N}{1,3}| ?\\p{L}+|\\s+"}}},
                                          {"behavior", "Isolated"},
                                          {"invert", false}},
                                         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  BpeTokenizer tok(json, "split");
  EXPECT_EQ(tok.encode("12345"), ids_of(tok, {"123", "45"}));
  ASSERT_EQ(tok.patterns().size(), 1u);
  EXPECT_EQ(tok.decode(tok.encode("abc 12345!?")), "abc 12345!?");
}

TEST(TokenizerBpe, AddPrefixSpace) {
  Json json = make_bpe_json({{" ", "h"}, {" h", "i"}});
  json["pre_tokenizer"]["add_prefix_space"] = true;
  BpeTokenizer tok(json, "prefix");
  EXPECT_EQ(tok.encode("hi"), ids_of(tok, {" hi"}));
  EXPECT_EQ(tok.encode(" hi"), ids_of(tok, {" hi"}));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  Json json = make_bpe_json({{"a", "b"}}, {"abc"});
  BpeTokenizer merged(json, "merges");
  EXPECT_EQ(merged.encode("abc"), ids_of(merged, {"ab", "c"}));
  json["model"]["ignore_merges"] = true;
  BpeTokenizer ignoring(json, "ignore");
  EXPECT_EQ(ignoring.encode("abc"), ids_of(ignoring, {"abc"}));
}

TEST(TokenizerBpe, RefusesUnsupportedTypesNamingThem) {
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    Json json = make_bpe_json({});
    json["model"]["type"] = type;
    const std::string message = error_of([&] { BpeTokenizer tok(json, "model.json"); });
    EXPECT_NE(message.find(type), std::string::npos) << message;
    EXPECT_NE(message.find("model.json"), std::string::npos) << message;
  }
  {
    Json json = make_bpe_json({});
    json["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
    const std::string message = error_of([&] { BpeTokenizer tok(json, "t.json"); });
    EXPECT_NE(message.find("Metaspace"), std::string::npos) << message;
  }
  {
    Json json = make_bpe_json({});
    json["normalizer"] = {{"type", "NFKC"}};
    const std::string message = error_of([&] { BpeTokenizer tok(json, "t.json"); });
    EXPECT_NE(message.find("NFKC"), std::string::npos) << message;
  }
  {
    Json json = make_bpe_json({});
    json["decoder"] = {{"type", "WordPiece"}};
    const std::string message = error_of([&] { BpeTokenizer tok(json, "t.json"); });
    EXPECT_NE(message.find("WordPiece"), std::string::npos) << message;
  }
  {
    Json json = make_bpe_json({});
    json["model"]["merges"].push_back("x zz");  // "zz" is not in the vocabulary
    const std::string message = error_of([&] { BpeTokenizer tok(json, "t.json"); });
    EXPECT_NE(message.find("zz"), std::string::npos) << message;
  }
}

TEST(TokenizerBpe, LoadRefusesCorruptJsonNamingTheFile) {
  TempDir dir("tok-corrupt");
  const std::string path = dir.file("tokenizer.json");
  test::write_file(path, "{\"model\": {\"type\": \"BPE\", ");
  std::string message = error_of([&] { load_tokenizer(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  message = error_of([&] { load_tokenizer(dir.str()); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  test::write_file(path, "[1, 2, 3]");
  message = error_of([&] { load_tokenizer(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
}

TEST(TokenizerBpe, LoadFindsTheFileInAFolderWithBosEos) {
  TempDir dir("tok-folder");
  Json json = make_bpe_json({{"h", "i"}});
  add_token(json, 300, "<s>", true);
  add_token(json, 301, "</s>", true);
  add_token(json, 302, "<|endoftext|>", true);
  test::write_file(dir.file("tokenizer.json"), json.dump());
  {
    const auto tok = load_tokenizer(dir.str());
    EXPECT_EQ(tok->kind(), "bpe");
    EXPECT_EQ(tok->bos_id(), 302);  // no tokenizer_config.json: <|endoftext|>
    EXPECT_EQ(tok->eos_id(), 302);
  }
  test::write_file(dir.file("tokenizer_config.json"),
                   R"({"bos_token": "<s>", "eos_token": {"content": "</s>", "special": true}})");
  const auto tok = load_tokenizer(dir.file("tokenizer.json"));
  EXPECT_EQ(tok->bos_id(), 300);
  EXPECT_EQ(tok->eos_id(), 301);
  EXPECT_EQ(tok->encode("hi</s>"), (std::vector<int32_t>{tok->token_id("hi").value(), 301}));

  TempDir empty("tok-empty");
  const std::string message = error_of([&] { load_tokenizer(empty.str()); });
  EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(error_of([&] { load_tokenizer(empty.file("missing.json")); }).find("missing.json"), std::string::npos);
  EXPECT_EQ(load_tokenizer("byte")->kind(), "byte");
}

TEST(TokenizerBpe, BadIdsAreErrors) {
  Json json = make_bpe_json({});
  add_token(json, 400, "<x>", true);  // ids 256..399 are unused
  BpeTokenizer tok(json, "ids");
  EXPECT_EQ(tok.vocab_size(), 401);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), Error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{401}), Error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{300}), Error);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{400}), "<x>");
  EXPECT_THROW(tok.set_eos_id(401), Error);
}

// One id near INT32_MAX sized the per-id tables at 2^31 entries (tens of GB: bad_alloc or the OOM killer
// instead of an error); fuzz_tokenizer_json found that an id of 2.5e77 (a float) reached get<int64_t>(),
// undefined behaviour.
TEST(TokenizerBpe, AHugeOrFractionalIdIsAnError) {
  for (const Json& id : {Json(2147483000), Json(2.5e77), Json(3.5), Json(-1)}) {
    Json vocab_id = make_bpe_json({});
    vocab_id["model"]["vocab"]["zz"] = id;
    Json added_id = make_bpe_json({});
    added_id["added_tokens"].push_back({{"id", id}, {"content", "<x>"}, {"special", true}});
    for (const Json& json : {vocab_id, added_id}) {
      try {
        BpeTokenizer tok(json, "huge");
        FAIL() << "id " << id.dump() << " accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("has a bad id"), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace ssm
