// The trainer end to end: a tiny byte model learns the committed excerpt; a resumed run continues
// the uninterrupted curve bit for bit (also with --recompute); checkpoints load in `ssm generate` /
// `ssm logits`; bad input gives clear errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "cli/run_cli.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "core/threads.h"
#include "model/language_model.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/trainer.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

const std::string kExcerpt = std::string(SSM_TEST_DATA_DIR) + "/corpus/excerpt.txt";

class TrainTrainer : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ssm_trainer_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string config(const Json& j, const std::string& name = "config.json") const {
    write_text_file(path(name), j.dump());
    return path(name);
  }
  TrainOptions options(const std::string& cfg, const std::string& out, int64_t steps) const {
    TrainOptions o;
    o.model_config = cfg;
    o.data = kExcerpt;
    o.out_dir = path(out);
    o.steps = steps;
    o.seed = 3;
    o.batch_size = 4;
    o.seq_len = 32;
    o.lr = 3e-3;
    o.warmup = 2;
    o.decay_steps = 8;
    o.eval_every = 3;
    o.eval_tokens = 512;
    o.progress = 0;
    o.quiet = true;
    return o;
  }
  fs::path dir_;
};

const Json kTinyMamba = {{"model_type", "mamba"}, {"hidden_size", 32}, {"num_hidden_layers", 2}, {"vocab_size", 256},
                         {"state_size", 8},       {"expand", 2},       {"conv_kernel", 4}};
const Json kTinyMamba2 = {{"model_type", "mamba2"}, {"hidden_size", 32}, {"num_hidden_layers", 2},
                          {"vocab_size", 257},      {"state_size", 8},   {"expand", 2},
                          {"head_dim", 16},         {"conv_kernel", 4},  {"chunk_size", 16}};

std::vector<std::string> lines(const std::string& file) {
  std::vector<std::string> out;
  std::istringstream in(read_text_file(file));
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

TEST_F(TrainTrainer, TinyByteModelLearnsWellBelowUnigramEntropy) {
  const std::string cfg = config({{"model_type", "mamba"},
                                  {"hidden_size", 64},
                                  {"num_hidden_layers", 2},
                                  {"vocab_size", 256},
                                  {"state_size", 16},
                                  {"expand", 2},
                                  {"conv_kernel", 4}});
  TrainOptions o = options(cfg, "run", 300);
  o.batch_size = 8;
  o.seq_len = 64;
  o.lr = 4e-3;
  o.warmup = 20;
  o.decay_steps = 300;
  o.eval_every = 100;
  o.eval_tokens = 8192;
  o.metrics = path("m.jsonl");
  const TrainResult r = train(o);
  const auto tok = make_byte_tokenizer();
  const DataSplits data = load_training_data(kExcerpt, *tok, 0.05);
  const double unigram_nats = unigram_entropy_bits(data.train.ids) * std::log(2.0);
  EXPECT_EQ(r.steps_done, 300);
  EXPECT_LT(r.val_loss, 0.7 * unigram_nats) << "unigram entropy " << unigram_nats << " nats";
  EXPECT_NEAR(r.val_bpb, r.val_loss / std::log(2.0), 1e-9);  // bytes: one token per byte
  const auto m = lines(o.metrics);
  ASSERT_EQ(m.size(), 300u);
  const Json last = Json::parse(m.back());
  EXPECT_EQ(last["step"], 300);
  EXPECT_TRUE(last.contains("loss") && last.contains("val_loss") && last.contains("val_bpb"));
  EXPECT_FALSE(Json::parse(m[5]).contains("val_loss"));
  // The curve and the final model are in the output folder; the checkpoint loads in the CLI.
  EXPECT_EQ(read_text_file(path("run/loss.png")).substr(1, 3), "PNG");
  EXPECT_TRUE(fs::exists(path("run/checkpoint-00000300/optimizer.safetensors")));
  EXPECT_FALSE(fs::exists(path("run/checkpoint-00000100")));  // only the newest two are kept
  const CliResult g = run_ssm("generate --model " + path("run") +
                              " --prompt 'Call me' --max-new-tokens 24 "
                              "--temperature 0 --threads 1");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  EXPECT_GT(g.output.size(), 24u) << g.output;
}

TEST_F(TrainTrainer, ResumeContinuesTheSameCurveBitForBit) {
  for (const Json& cfg_json : {kTinyMamba, kTinyMamba2}) {
    SCOPED_TRACE(cfg_json["model_type"].get<std::string>());
    const std::string cfg = config(cfg_json);
    TrainOptions whole = options(cfg, "whole", 9);
    whole.metrics = path("whole.jsonl");
    train(whole);
    TrainOptions part = options(cfg, "part", 5);  // checkpoints at 3 and 5
    part.metrics = path("part.jsonl");
    train(part);
    // A crash after the checkpoint: a step the resumed run must drop and redo.
    write_text_file(part.metrics, read_text_file(part.metrics) + "{\"step\":6,\"loss\":1.0}\n{\"ste");
    TrainOptions rest = options(cfg, "part", 9);
    rest.metrics = part.metrics;
    rest.resume = true;
    rest.recompute = true;  // remade activations are the same bits: the curve continues all the same
    const TrainResult r = train(rest);
    EXPECT_EQ(r.steps_done, 4);
    // Identical lines, except that the first part's last step (5) was also evaluated.
    const auto la = lines(whole.metrics), lb = lines(part.metrics);
    ASSERT_EQ(la.size(), lb.size());
    for (size_t i = 0; i < la.size(); ++i) {
      if (i == 4) {
        Json extra = Json::parse(lb[i]);
        EXPECT_TRUE(extra.contains("val_loss"));
        extra.erase("val_loss");
        extra.erase("val_bpb");
        EXPECT_EQ(Json::parse(la[i]), extra);
      } else {
        EXPECT_EQ(la[i], lb[i]) << "step " << i + 1;
      }
    }
    const SafetensorsFile a = SafetensorsFile::open(path("whole/model.safetensors"));
    const SafetensorsFile b = SafetensorsFile::open(path("part/model.safetensors"));
    for (const auto& name : a.names())
      EXPECT_EQ(0, std::memcmp(a.get(name).raw(), b.get(name).raw(), a.get(name).nbytes())) << name;
    fs::remove_all(path("whole"));
    fs::remove_all(path("part"));
  }
}

TEST_F(TrainTrainer, CheckpointIsAHuggingFaceFolder) {
  const std::string cfg = config(kTinyMamba2);
  TrainOptions o = options(cfg, "run", 3);
  const TrainResult r = train(o);
  ASSERT_TRUE(fs::exists(r.checkpoint));
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                        "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(fs::path(r.checkpoint) / f)) << f;
  EXPECT_EQ(latest_checkpoint(path("run")), r.checkpoint);
  // No temporary folders left behind.
  for (const auto& e : fs::directory_iterator(path("run")))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
  // The byte tokenizer.json round-trips bytes, including invalid UTF-8.
  const auto tok = load_tokenizer(r.checkpoint);
  const std::string text = "Call me Ishmael.\n\xff\xfe caf\xc3\xa9";
  const auto ids = tok->encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], int32_t(static_cast<unsigned char>(text[i])));
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_EQ(tok->token_id("<|endoftext|>"), 256);
  // ssm logits loads the checkpoint.
  Tensor idt = Tensor::empty({1, 4}, DType::I32);
  for (int i = 0; i < 4; ++i) idt.data<int32_t>()[i] = 65 + i;
  write_npy(path("ids.npy"), idt);
  const CliResult l =
      run_ssm("logits --model " + r.checkpoint + " --ids " + path("ids.npy") + " --out " + path("logits.npy"));
  EXPECT_EQ(l.exit_code, 0) << l.output;
}

// The shipped byte-level configs of every plan train, save, and generate through both decode paths
// (the recurrent state and the KV / chunk caches): greedy continuations equal the full forward's argmax.
TEST_F(TrainTrainer, ShippedConfigsTrainAndGenerate) {
  for (const std::string name : {"demo-byte", "attention-bytes", "hybrid-bytes", "rat-bytes", "rat-swa-bytes", "xlstm-bytes",
                                 "xlstm-7-1-bytes", "mamba3-bytes", "mamba3-mimo-bytes"}) {
    SCOPED_TRACE(name);
    TrainOptions o = options(std::string(SSM_SOURCE_DIR) + "/configs/" + name + ".json", "run_" + name, 3);
    o.batch_size = 2;
    o.seq_len = 40;
    const TrainResult r = train(o);
    ASSERT_TRUE(std::isfinite(r.final_loss));
    const std::string ids = path(name + "_ids.npy");
    const CliResult g = run_ssm("generate --model " + r.checkpoint + " --prompt 'It is a truth' --max-new-tokens 12 "
                                "--temperature 0 --threads 1 --ids-out " + ids);
    ASSERT_EQ(g.exit_code, 0) << g.output;
    const Tensor sequence = read_npy(ids);
    ASSERT_EQ(sequence.size(1), 13 + 12);
    const Tensor logits = LanguageModel::load(r.checkpoint).forward(sequence.slice(1, 0, 24).contiguous(), nullptr, true);
    for (int64_t t = 12; t < 24; ++t) {
      const float* row = logits.data<float>() + t * logits.size(2);
      const int64_t argmax = std::max_element(row, row + logits.size(2)) - row;
      EXPECT_EQ(sequence.data<int32_t>()[t + 1], argmax) << "position " << t + 1;
    }
  }
}

// The xLSTM[7:1] byte config (seven mLSTM blocks, one sLSTM block) learns: within a few steps its
// training loss falls well below the uniform ln 256 = 5.55 nats it starts near.
TEST_F(TrainTrainer, XlstmSevenToOneConfigLossFalls) {
  TrainOptions o = options(std::string(SSM_SOURCE_DIR) + "/configs/xlstm-7-1-bytes.json", "run", 24);
  o.warmup = 4;
  o.decay_steps = 24;
  o.metrics = path("m.jsonl");
  const TrainResult r = train(o);
  EXPECT_EQ(r.steps_done, 24);
  const auto m = lines(o.metrics);
  ASSERT_EQ(m.size(), 24u);
  const auto mean_loss = [&](size_t from, size_t to) {
    double sum = 0;
    for (size_t i = from; i < to; ++i) sum += Json::parse(m[i])["loss"].get<double>();
    return sum / double(to - from);
  };
  const double first = mean_loss(0, 3), last = mean_loss(21, 24);
  EXPECT_GT(first, 5.0);
  EXPECT_LT(last, first - 1.5) << "first steps " << first << ", last steps " << last;
}

// A Mamba-3 plan learns, SISO and MIMO (rank 2): the training loss after 40 steps is well below the
// first step's, and the validation loss below the uniform 8 bits per byte.
TEST_F(TrainTrainer, Mamba3PlanLowersTheLoss) {
  const Json siso = {{"d_state", 16}, {"headdim", 16}, {"ngroups", 2}};
  Json mimo = siso;
  mimo.update({{"is_mimo", true}, {"mimo_rank", 2}, {"chunk_size", 16}});
  for (const Json& mamba3 : {siso, mimo}) {
    SCOPED_TRACE(mamba3.dump());
    const std::string run = mamba3.contains("is_mimo") ? "mimo" : "siso";  // fresh folders: no resuming
    const std::string cfg = config({{"model_type", "ssm"},
                                    {"vocab_size", 256},
                                    {"hidden_size", 32},
                                    {"initializer_range", 0.08},
                                    {"layers", {"mamba3", "mamba3"}},
                                    {"mamba3", mamba3}});
    TrainOptions first = options(cfg, "first_" + run, 1);
    const double first_loss = train(first).final_loss;
    TrainOptions o = options(cfg, run, 40);
    o.decay_steps = 40;
    o.eval_every = 40;
    const TrainResult r = train(o);
    EXPECT_EQ(r.steps_done, 40);
    EXPECT_LT(r.final_loss, 0.75 * first_loss) << "first step " << first_loss;
    EXPECT_LT(r.val_loss, std::log(256.0));
  }
}

TEST_F(TrainTrainer, BadInputGivesClearErrors) {
  const std::string cfg = config(kTinyMamba);
  auto expect_error = [&](const std::string& args, const std::string& fragment) {
    const CliResult r = run_ssm("train --model-config " + cfg + " --steps 2 --seed 1 --metrics " + path("m.jsonl") +
                                " --progress 0 " + args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(fragment), std::string::npos) << args << "\n" << r.output;
    EXPECT_EQ(r.output.find("terminate"), std::string::npos) << r.output;
  };
  write_text_file(path("bad.tok"), "SSMTOKEN" + std::string(3, '\1'));
  expect_error("--data " + path("bad.tok") + " --out " + path("o1"), "truncated token file header");
  write_text_file(path("garbage.bin"), std::string("\x01\x02\x00\x03", 4));
  expect_error("--data " + path("garbage.bin") + " --out " + path("o1"), "neither a token file");
  write_text_file(path("empty.txt"), "");
  expect_error("--data " + path("empty.txt") + " --out " + path("o1"), "is empty");
  write_text_file(path("short.txt"), "just a few words\n");
  expect_error("--data " + path("short.txt") + " --out " + path("o1") + " --seq-len 64",
               "sequence length 64 is longer than the training data");
  expect_error("--data " + kExcerpt + " --out " + kExcerpt + "/sub", "cannot create output folder");
  expect_error("--data " + path("missing.txt") + " --out " + path("o1"), "does not exist");
  TokenFile big;
  big.ids = {1, 2, 300, 4, 5, 6, 7, 8};
  write_token_file(path("big.tok"), big);
  expect_error("--data " + path("big.tok") + " --out " + path("o1") + " --seq-len 2",
               "outside the model's vocabulary (256)");
  expect_error("--data " + kExcerpt + " --out " + path("o1") + " --dtype f16", "--dtype takes auto, f32 or bf16");
  expect_error("--data " + kExcerpt + " --out " + path("o1") + " --dtype bf16", "the CPU trains in F32");
  write_text_file(path("badcfg.json"), "{\"model_type\": \"mamba\", \"hidden_size\": 0}");
  const CliResult r = run_ssm("train --model-config " + path("badcfg.json") + " --data " + kExcerpt + " --out " +
                              path("o2") + " --steps 1 --progress 0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
}

}  // namespace
}  // namespace ssm
