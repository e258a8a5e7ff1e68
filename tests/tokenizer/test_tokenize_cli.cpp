// `ssm tokenize` and `ssm detokenize`, run as a user would.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>

#include "core/file_util.h"
#include "core/npy.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer_test_util.h"

namespace ssm {
namespace {

struct RunResult {
  int status = -1;
  std::string out, err;
};

RunResult run_ssm(const std::string& args, const test::TempDir& dir) {
  const std::string err_path = dir.file("stderr.txt");
  const std::string command = std::string("'") + SSM_BINARY + "' " + args + " 2> '" + err_path + "'";
  RunResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = read_text_file(err_path);
  return result;
}

class TokenizerCli : public ::testing::Test {
 protected:
  void SetUp() override {
    Json json = test::make_bpe_json({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}});
    test::add_token(json, 300, "<|endoftext|>", true);
    tokenizer_path_ = dir_.file("tokenizer.json");
    test::write_file(tokenizer_path_, json.dump());
    tokenizer_ = std::make_unique<BpeTokenizer>(json, "cli");
  }
  test::TempDir dir_{"tokenize-cli"};
  std::string tokenizer_path_;
  std::unique_ptr<BpeTokenizer> tokenizer_;
};

std::string joined(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out.push_back(' ');
    out += std::to_string(ids[i]);
  }
  return out;
}

TEST_F(TokenizerCli, TokenizePrintsIdsAndWritesNpy) {
  const std::vector<int32_t> expected = tokenizer_->encode("hello world<|endoftext|>");
  const RunResult r = run_ssm("tokenize --tokenizer '" + tokenizer_path_ +
                                  "' --text 'hello world<|endoftext|>' --ids-out '" + dir_.file("ids.npy") + "'",
                              dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, joined(expected) + "\n");
  const Tensor ids = read_npy(dir_.file("ids.npy"));
  ASSERT_EQ(ids.dtype(), DType::I32);
  ASSERT_EQ(ids.numel(), int64_t(expected.size()));
  EXPECT_EQ(std::vector<int32_t>(ids.data<int32_t>(), ids.data<int32_t>() + ids.numel()), expected);

  // --text-file, and a folder as --tokenizer.
  test::write_file(dir_.file("text.txt"), "hello\n\xFF");
  const RunResult f = run_ssm("tokenize --tokenizer '" + dir_.str() + "' --text-file '" + dir_.file("text.txt") + "'", dir_);
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(f.out, joined(tokenizer_->encode("hello\n\xFF")) + "\n");
}

TEST_F(TokenizerCli, DetokenizeFromIdsAndNpy) {
  const std::string text = "hello  world\n\t<|endoftext|>";
  const std::vector<int32_t> ids = tokenizer_->encode(text);
  RunResult r = run_ssm("detokenize --tokenizer '" + tokenizer_path_ + "' --ids '" + joined(ids) + "'", dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, text);  // byte for byte: no newline added when stdout is not a terminal

  Tensor tensor = Tensor::empty({1, int64_t(ids.size())}, DType::I64);
  for (size_t i = 0; i < ids.size(); ++i) tensor.data<int64_t>()[i] = ids[i];
  write_npy(dir_.file("in.npy"), tensor);
  r = run_ssm("detokenize --tokenizer '" + tokenizer_path_ + "' --ids-in '" + dir_.file("in.npy") + "'", dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, text);

  r = run_ssm("detokenize --tokenizer '" + tokenizer_path_ + "' --ids '[104, 101]'", dir_);
  EXPECT_EQ(r.out, "he");
}

TEST_F(TokenizerCli, ByteTokenizerRoundTrip) {
  RunResult r = run_ssm("tokenize --tokenizer byte --text 'Hi<|endoftext|>'", dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "72 105 256\n");
  r = run_ssm("detokenize --tokenizer byte --ids '72 105 256'", dir_);
  EXPECT_EQ(r.out, "Hi<|endoftext|>");
}

TEST_F(TokenizerCli, ErrorsAreOneLineAndExitOne) {
  RunResult r = run_ssm("tokenize --tokenizer '" + dir_.file("nope.json") + "' --text hi", dir_);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("nope.json"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;

  r = run_ssm("tokenize --tokenizer '" + tokenizer_path_ + "'", dir_);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--text"), std::string::npos) << r.err;

  r = run_ssm("detokenize --tokenizer '" + tokenizer_path_ + "' --ids '1 x 3'", dir_);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("'x'"), std::string::npos) << r.err;

  r = run_ssm("detokenize --tokenizer '" + tokenizer_path_ + "' --ids '99999'", dir_);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("99999"), std::string::npos) << r.err;

  Json json = test::make_bpe_json({});
  json["model"]["type"] = "Unigram";
  test::write_file(dir_.file("unigram.json"), json.dump());
  r = run_ssm("tokenize --tokenizer '" + dir_.file("unigram.json") + "' --text hi", dir_);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("Unigram"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace ssm
