// Token files, corpus splits, batch sampling and their errors; `ssm data prepare`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "cli/run_cli.h"
#include "core/file_util.h"
#include "core/npy.h"
#include "train/data.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

class TrainData : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ssm_data_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

const std::string kExcerpt = std::string(SSM_TEST_DATA_DIR) + "/corpus/excerpt.txt";

TEST_F(TrainData, TokenFileRoundTrip) {
  for (int32_t top : {300, 70000}) {
    TokenFile f;
    f.ids = {0, 5, top, 1, 2};
    f.vocab_size = top + 1;
    f.text_bytes = 12;
    write_token_file(path("a.tok"), f);
    EXPECT_EQ(fs::file_size(path("a.tok")), 64u + 5u * (top > 65535 ? 4u : 2u));
    EXPECT_TRUE(is_token_file(path("a.tok")));
    const TokenFile g = read_token_file(path("a.tok"));
    EXPECT_EQ(g.ids, f.ids);
    EXPECT_EQ(g.vocab_size, f.vocab_size);
    EXPECT_EQ(g.text_bytes, 12);
  }
  Tensor ids = Tensor::empty({2, 3}, DType::I32);
  for (int i = 0; i < 6; ++i) ids.data<int32_t>()[i] = i * 7;
  write_npy(path("ids.npy"), ids);
  EXPECT_EQ(read_token_file(path("ids.npy")).ids, (std::vector<int32_t>{0, 7, 14, 21, 28, 35}));
}

TEST_F(TrainData, BadFilesGiveClearErrors) {
  auto expect_error = [](const std::function<void()>& f, const std::string& fragment) {
    try {
      f();
      ADD_FAILURE() << "no error, expected one naming '" << fragment << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  write_text_file(path("bad.tok"), "SSMTOKEX" + std::string(100, '\0'));
  expect_error([&] { read_token_file(path("bad.tok")); }, "not a token file");
  TokenFile f;
  f.ids = {1, 2, 3, 4};
  write_token_file(path("t.tok"), f);
  std::string bytes = read_text_file(path("t.tok"));
  write_text_file(path("trunc.tok"), bytes.substr(0, bytes.size() - 1));
  expect_error([&] { read_token_file(path("trunc.tok")); }, "promises 4 ids");
  std::string huge_vocab = bytes;
  std::memset(huge_vocab.data() + 24, 0xff, 8);  // vocab_size 2^64 - 1, -1 as int64
  write_text_file(path("vocab.tok"), huge_vocab);
  expect_error([&] { read_token_file(path("vocab.tok")); }, "out of range");
  write_text_file(path("short.tok"), bytes.substr(0, 20));
  expect_error([&] { read_token_file(path("short.tok")); }, "truncated");
  f.ids.clear();
  write_token_file(path("empty.tok"), f);
  expect_error([&] { read_token_file(path("empty.tok")); }, "no tokens");
  expect_error([&] { read_token_file(path("missing.tok")); }, "does not exist");
  write_text_file(path("empty.txt"), "");
  const auto bytes_tok = make_byte_tokenizer();
  expect_error([&] { load_training_data(path("empty.txt"), *bytes_tok, 0.1); }, "is empty");
  fs::create_directories(path("nofiles"));
  expect_error([&] { load_training_data(path("nofiles"), *bytes_tok, 0.1); }, "no .txt files");
  write_text_file(path("bin.dat"), std::string("ab\0cd", 5));
  expect_error([&] { load_training_data(path("bin.dat"), *bytes_tok, 0.1); }, "NUL");
  std::vector<int32_t> few{1, 2, 3};
  expect_error([&] { BatchSampler(&few, 3, 1, "few.tok"); }, "sequence length 3 is longer than the training data");
}

TEST_F(TrainData, CorpusSplitAtLineBoundary) {
  const auto tok = make_byte_tokenizer();
  const std::string text = read_text_file(kExcerpt);
  const DataSplits d = tokenize_corpus(text, *tok, 0.1, kExcerpt);
  EXPECT_EQ(d.train.text_bytes + d.val.text_bytes, int64_t(text.size()));
  EXPECT_EQ(int64_t(d.train.ids.size()), d.train.text_bytes);  // bytes: one id each
  EXPECT_NEAR(double(d.val.text_bytes) / double(text.size()), 0.1, 0.01);
  EXPECT_EQ(d.train.ids.back(), int32_t('\n'));
  // write + load by prefix gives the same splits.
  write_splits(path("corpus"), d);
  const DataSplits e = load_training_data(path("corpus"), *tok, 0.5);
  EXPECT_EQ(e.train.ids, d.train.ids);
  EXPECT_EQ(e.val.ids, d.val.ids);
  EXPECT_EQ(e.val.text_bytes, d.val.text_bytes);
  // A single token file without its .val.: the tail is split off.
  write_token_file(path("only.tok"), d.train);
  const DataSplits s = load_training_data(path("only.tok"), *tok, 0.25);
  EXPECT_EQ(s.train.ids.size() + s.val.ids.size(), d.train.ids.size());
  EXPECT_NEAR(double(s.val.ids.size()) / double(d.train.ids.size()), 0.25, 0.001);
  // A folder of .txt files.
  fs::create_directories(path("texts/sub"));
  write_text_file(path("texts/b.txt"), "second\n");
  write_text_file(path("texts/a.txt"), "first\n");
  write_text_file(path("texts/sub/c.txt"), "third\n");
  write_text_file(path("texts/skip.md"), "not me\n");
  EXPECT_EQ(read_corpus(path("texts")), "first\n\n\nsecond\n\n\nthird\n");
}

TEST_F(TrainData, SamplerIsAPureFunctionOfSeedAndStep) {
  std::vector<int32_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
  BatchSampler s(&ids, 16, 42, "ids");
  Tensor in1 = Tensor::empty({4, 16}, DType::I32), tg1 = Tensor::empty({4, 16}, DType::I32);
  Tensor in2 = Tensor::empty({4, 16}, DType::I32), tg2 = Tensor::empty({4, 16}, DType::I32);
  s.sample(7, 0, in1, tg1);
  BatchSampler(&ids, 16, 42, "ids").sample(7, 0, in2, tg2);
  EXPECT_EQ(0, std::memcmp(in1.data<int32_t>(), in2.data<int32_t>(), 64 * 4));
  for (int b = 0; b < 4; ++b)
    for (int t = 0; t < 16; ++t) {
      EXPECT_EQ(tg1.data<int32_t>()[b * 16 + t], in1.data<int32_t>()[b * 16 + t] + 1);
      if (t) {
        EXPECT_EQ(in1.data<int32_t>()[b * 16 + t], in1.data<int32_t>()[b * 16 + t - 1] + 1);
      }
      EXPECT_LE(tg1.data<int32_t>()[b * 16 + t], 999);
    }
  s.sample(8, 0, in2, tg2);
  EXPECT_NE(0, std::memcmp(in1.data<int32_t>(), in2.data<int32_t>(), 64 * 4));
  s.sample(7, 1, in2, tg2);
  EXPECT_NE(0, std::memcmp(in1.data<int32_t>(), in2.data<int32_t>(), 64 * 4));
  // Windows exactly as long as the data: the only start is 0.
  std::vector<int32_t> small{5, 6, 7};
  Tensor a = Tensor::empty({2, 2}, DType::I32), t = Tensor::empty({2, 2}, DType::I32);
  BatchSampler(&small, 2, 1, "small").sample(0, 0, a, t);
  EXPECT_EQ(a.data<int32_t>()[2], 5);
  EXPECT_EQ(t.data<int32_t>()[3], 7);
}

TEST_F(TrainData, EvalWindowsAndEntropy) {
  const auto w = eval_windows(10, 4, 100);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[2].start, 8);
  EXPECT_EQ(w[2].length, 1);
  EXPECT_EQ(eval_windows(10, 4, 2).size(), 2u);
  EXPECT_NEAR(unigram_entropy_bits({1, 2, 3, 4}), 2.0, 1e-12);
  EXPECT_NEAR(unigram_entropy_bits({1, 1, 1}), 0.0, 1e-12);
}

TEST_F(TrainData, PrepareCommand) {
  const CliResult r = run_ssm("data prepare --input " + kExcerpt + " --out " + path("ex/moby") + " --val-fraction 0.2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const TokenFile train = read_token_file(path("ex/moby.train.tok")), val = read_token_file(path("ex/moby.val.tok"));
  EXPECT_EQ(train.text_bytes + val.text_bytes, int64_t(fs::file_size(kExcerpt)));
  EXPECT_EQ(train.vocab_size, 257);
  const CliResult bad = run_ssm("data prepare --input " + path("nothing.txt") + " --out " + path("x"));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("does not exist"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace ssm
