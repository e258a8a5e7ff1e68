// `ssm generate` as a user runs it: ids in/ids out parity, text prompts through the byte tokenizer,
// sampling reproducibility, stop strings, batches and the edge cases of the prompt and the limit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "cli/run_cli.h"
#include "core/device.h"
#include "core/npy.h"
#include "model/fixture_util.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("ssm_gen_" + std::to_string(::getpid()) + "_" + name)).string();
}

// The text printed before the stderr summary line.
std::string continuation(const CliResult& r) { return r.output.substr(0, r.output.rfind("\nprefill ")); }

// Every fixture through the commands a user runs: `ssm generate`'s greedy ids and `ssm logits`' logits.
TEST(CliGenerate, GreedyIdsAndLogitsMatchTransformers) {
  for (const std::string name : {"mamba_tiny", "mamba2_tiny", "mamba2_groups", "bamba_tiny", "bamba_groups", "jamba_tiny",
                                 "falcon_h1_tiny", "falcon_h1_nonorm", "nemotron_h_tiny"}) {
    const std::string dir = fixture_dir(name), out = temp_path(name + ".npy");
    const CliResult r = run_ssm("generate --model " + dir + " --prompt-ids " + dir +
                                "/greedy_prompt.npy --max-new-tokens 24 --temperature 0 --ids-out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const Tensor got = read_npy(out), want = read_npy(dir + "/greedy_out.npy");
    ASSERT_EQ(got.shape(), want.shape()) << name;
    for (int64_t i = 0; i < want.numel(); ++i) EXPECT_EQ(got.data<int32_t>()[i], want.data<int32_t>()[i]) << name;
    fs::remove(out);

    const std::string logits = temp_path(name + "_logits.npy");
    const CliResult l = run_ssm("logits --model " + dir + " --ids " + dir + "/input_ids.npy --out " + logits);
    ASSERT_EQ(l.exit_code, 0) << l.output;
    const Tensor got_logits = read_npy(logits), want_logits = read_npy(dir + "/logits.npy");
    ASSERT_EQ(got_logits.shape(), want_logits.shape()) << name;
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < want_logits.numel(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(got_logits.data<float>()[i] - want_logits.data<float>()[i])));
      max_ref = std::max(max_ref, double(std::fabs(want_logits.data<float>()[i])));
    }
    EXPECT_LT(max_diff / max_ref, 1e-4) << name;
    fs::remove(logits);
  }
}

TEST(CliGenerate, TextPromptStreamsAndReportsSpeed) {
  const CliResult r = run_ssm("generate --model " + fixture_dir("mamba_tiny") +
                              " --prompt 'Call me Ishmael.' --max-new-tokens 12 --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("decode "), std::string::npos);
  EXPECT_NE(r.output.find(" tok/s"), std::string::npos);
}

TEST(CliGenerate, SeedMakesSamplingReproducible) {
  const std::string base = "generate --model " + fixture_dir("mamba2_tiny") +
                           " --prompt 'The sea' --max-new-tokens 20 --temperature 1.2 --top-k 0 --top-p 1 --min-p 0 ";
  const CliResult a = run_ssm(base + "--seed 7"), b = run_ssm(base + "--seed 7"), c = run_ssm(base + "--seed 8");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(continuation(a), continuation(b));
  EXPECT_NE(continuation(a), continuation(c));
}

TEST(CliGenerate, EmptyPromptStartsFromBos) {
  const std::string out = temp_path("bos.npy");
  const CliResult r = run_ssm("generate --model " + fixture_dir("mamba2_tiny") +
                              " --prompt '' --max-new-tokens 3 --temperature 0 --ids-out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Tensor ids = read_npy(out);
  EXPECT_EQ(ids.data<int32_t>()[0], 0);  // the fixture's bos_token_id
  fs::remove(out);
}

TEST(CliGenerate, ZeroTokenLimitGivesThePromptBack) {
  const std::string out = temp_path("zero.npy");
  const std::string dir = fixture_dir("mamba_tiny");
  const CliResult r = run_ssm("generate --model " + dir + " --prompt-ids " + dir +
                              "/greedy_prompt.npy --max-new-tokens 0 --temperature 0 --ids-out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_npy(out).shape(), read_npy(dir + "/greedy_prompt.npy").shape());
  fs::remove(out);
}

TEST(CliGenerate, PromptLongerThanAnyTrainingLength) {
  const std::string file = temp_path("long.txt");
  std::string text;
  while (text.size() < 5000) text += "It was the best of times, it was the worst of times. ";
  std::FILE* f = std::fopen(file.c_str(), "w");
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  const CliResult r = run_ssm("generate --model " + fixture_dir("mamba2_groups") + " --prompt-file " + file +
                              " --max-new-tokens 4 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("prefill 5"), std::string::npos) << r.output;  // all ~5000 bytes prefilled
  fs::remove(file);
}

TEST(CliGenerate, SeveralPromptsAreBatched) {
  const CliResult r = run_ssm("generate --model " + fixture_dir("mamba_tiny") +
                              " --prompt 'one' --prompt 'a longer second prompt' --max-new-tokens 5 --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--- 1 ---"), std::string::npos);
  EXPECT_NE(r.output.find("--- 2 ---"), std::string::npos);
}

TEST(CliGenerate, StopStringEndsTheSequence) {
  // Greedy output of a fixed model is fixed: take its first characters as a stop string.
  const std::string base = "generate --model " + fixture_dir("mamba_tiny") + " --prompt 'abc' --temperature 0 ";
  const CliResult free_run = run_ssm(base + "--max-new-tokens 30");
  ASSERT_EQ(free_run.exit_code, 0) << free_run.output;
  const std::string text = continuation(free_run);
  ASSERT_GE(text.size(), 6u);
  const std::string stop = text.substr(3, 2);
  std::string quoted;
  for (char ch : stop) quoted += fmt::format("\\{:03o}", uint8_t(ch));  // octal: POSIX sh printf has no \x
  const CliResult stopped = run_ssm(base + "--max-new-tokens 30 --stop \"$(printf '" + quoted + "')\"");
  ASSERT_EQ(stopped.exit_code, 0) << stopped.output;
  EXPECT_EQ(continuation(stopped), text.substr(0, text.find(stop)));
}

TEST(CliGenerate, BadSamplingFlagIsOneClearError) {
  const CliResult r = run_ssm("generate --model " + fixture_dir("mamba_tiny") + " --prompt x --top-p 1.5");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--top-p"), std::string::npos) << r.output;
}

// `--device cuda` on `generate`, `logits`, `bench`, `train` and `serve`: where no GPU is visible (or the build has no CUDA
// backend) one clear error and exit 1; where one is, the fixture's greedy ids in F32 as on the CPU.
TEST(CliGenerate, DeviceCudaRunsOrSaysWhyNot) {
  const std::string dir = fixture_dir("mamba2_tiny"), out = temp_path("cuda.npy");
  const std::vector<std::string> commands = {
      "generate --model " + dir + " --device cuda --dtype f32 --prompt-ids " + dir +
          "/greedy_prompt.npy --max-new-tokens 24 --temperature 0 --ids-out " + out,
      "logits --model " + dir + " --device cuda --ids " + dir + "/input_ids.npy --out " + out,
      "bench --device cuda --models mamba2-130m --decode-tokens 1",
      "bench --suite serve --device cuda --models mamba2-130m --serve-seconds 1",
      "serve --model " + dir + " --device cuda --port 0",
      "train --model-config " + dir + "/config.json --data " + std::string(SSM_TEST_DATA_DIR) +
          "/corpus/excerpt.txt --out " + temp_path("cuda-run") + " --steps 1 --device cuda",
  };
  for (const std::string& command : commands) {
    if (!cuda_available()) {
      const CliResult r = run_ssm(command);
      EXPECT_EQ(r.exit_code, 1) << command << ": " << r.output;
      EXPECT_EQ(r.output.rfind("error: --device cuda: ", 0), 0u) << command << ": " << r.output;
      EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << command << ": " << r.output;
      EXPECT_FALSE(fs::exists(out));
    } else if (command.rfind("generate", 0) == 0) {
      const CliResult r = run_ssm(command);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      const Tensor got = read_npy(out), want = read_npy(dir + "/greedy_out.npy");
      ASSERT_EQ(got.shape(), want.shape());
      for (int64_t i = 0; i < want.numel(); ++i) EXPECT_EQ(got.data<int32_t>()[i], want.data<int32_t>()[i]);
      fs::remove(out);
    }
  }
}

}  // namespace
}  // namespace ssm
