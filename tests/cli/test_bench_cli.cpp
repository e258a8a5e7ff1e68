// `ssm bench` as a user runs it: a checkpoint folder timed through the generator, a random model
// written as a folder that generate reads, the server under load, and bad flags refused with one
// clear error before anything is measured.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/run_cli.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "model/fixture_util.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

// The cells of the table row that starts with `| first |`, or none.
std::vector<std::string> row_cells(const std::string& output, const std::string& first) {
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("| " + first + " |", 0) != 0) continue;
    std::vector<std::string> cells;
    std::istringstream parts(line.substr(1));
    for (std::string cell; std::getline(parts, cell, '|');) cells.push_back(cell.substr(1, cell.size() - 2));
    return cells;
  }
  return {};
}

// `ssm bench FLAGS` ends with exit status 1 and one line, "error: ..." holding `fragment`.
void expect_one_clear_error(const std::string& flags, const std::string& fragment) {
  const CliResult r = run_ssm("bench " + flags);
  EXPECT_EQ(r.exit_code, 1) << flags << ": " << r.output;
  EXPECT_EQ(r.output.rfind("error: ", 0), 0u) << flags << ": " << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << flags << ": " << r.output;
  EXPECT_NE(r.output.find(fragment), std::string::npos) << flags << ": " << r.output;
}

TEST(CliBench, TimesACheckpointFolderThroughTheGenerator) {
  const CliResult r =
      run_ssm("bench --model " + fixture_dir("mamba_tiny") + "/ --threads 1 --prefill 8,13 --decode-tokens 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto cells = row_cells(r.output, "mamba_tiny");
  ASSERT_EQ(cells.size(), 10u) << r.output;
  EXPECT_EQ(cells[1], "f32");
  EXPECT_EQ(cells[2], "1");
  EXPECT_NE(cells[3].find("(8), "), std::string::npos) << cells[3];  // prefill tok/s at each length
  EXPECT_NE(cells[3].find("(13)"), std::string::npos) << cells[3];
  EXPECT_EQ(std::count(cells[5].begin(), cells[5].end(), ','), 1) << cells[5];  // faults/token per length
  EXPECT_GT(std::stod(cells[6]), 0);                                           // decode tok/s
  EXPECT_GE(std::stod(cells[8]), 0);                                           // decode faults/token
  EXPECT_NE(r.output.find("streaming read"), std::string::npos);
  EXPECT_NE(r.output.find("peak resident memory"), std::string::npos);
  EXPECT_EQ(r.output.find("optimizer"), std::string::npos) << "--model times inference only";
}

// The folder a user would hand to generate or export to GGUF; in 16 bits, every matrix value is one
// that BF16 and F16 both hold, so the BF16 folder and an F16 copy of it are the same model.
TEST(CliBench, WritesARandomModelThatGenerateRuns) {
  const fs::path dir = fs::temp_directory_path() / ("ssm_bench_write_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const CliResult w = run_ssm("bench --write-model mamba-130m --dtype bf16 --seed 5 --out " + dir.string());
  ASSERT_EQ(w.exit_code, 0) << w.output;
  EXPECT_EQ(read_json_file((dir / "config.json").string())["torch_dtype"], "bfloat16");
  {
    const SafetensorsFile file = SafetensorsFile::open((dir / "model.safetensors").string());
    EXPECT_EQ(file.get("backbone.layers.23.mixer.A_log").dtype(), DType::F32);  // vectors stay F32
    EXPECT_EQ(file.get("backbone.layers.23.mixer.in_proj.weight").dtype(), DType::BF16);
    EXPECT_EQ(file.get("backbone.embeddings.weight").dtype(), DType::BF16);
    for (const auto& name : file.names()) {
      const Tensor& t = file.get(name);
      if (t.dtype() == DType::F32) continue;
      ASSERT_EQ(t.dtype(), DType::BF16) << name;
      const uint16_t* bits = static_cast<const uint16_t*>(t.raw());
      int64_t off_grid = 0;
      for (int64_t i = 0; i < t.numel(); ++i) {
        const float value = bf16_to_f32(bits[i]);
        off_grid += f16_to_f32(f32_to_f16(value)) != value;
      }
      EXPECT_EQ(off_grid, 0) << name;
    }
  }
  const CliResult g = run_ssm("generate --model " + dir.string() + " --prompt-ids " + fixture_dir("mamba_tiny") +
                              "/greedy_prompt.npy --max-new-tokens 3 --temperature 0 --ignore-eos");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  EXPECT_NE(g.output.find("decode 2 tokens"), std::string::npos) << g.output;  // EOS ignored: all 3 tokens
  fs::remove_all(dir);
}

// The server under load, briefly: every request at each level completes (nothing lost), and the
// shared-prefix probe reports both times.
TEST(CliBench, ServeSuiteLosesNoRequest) {
  const CliResult r = run_ssm("bench --suite serve --threads 1 --serve-clients 1,3 --serve-seconds 0.3 "
                              "--serve-prompt 8 --serve-max-tokens 4 --serve-prefix 64");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* clients : {"1", "3"}) {
    const auto cells = row_cells(r.output, clients);
    ASSERT_EQ(cells.size(), 7u) << r.output;
    EXPECT_GT(std::stoll(cells[1]), 0) << r.output;  // requests
    EXPECT_EQ(cells[2], "0") << r.output;            // errors
    EXPECT_GT(std::stod(cells[3]), 0) << r.output;   // tokens/s
  }
  EXPECT_NE(r.output.find("shared 64-token prefix: time to first token"), std::string::npos) << r.output;
  // Under the table, the server's loop and the process's CPU time per token at each level.
  for (const char* clients : {"1", "3"})
    EXPECT_NE(r.output.find(std::string("server's loop at ") + clients + " clients: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" us a token"), std::string::npos) << r.output;
}

TEST(CliBench, BadFlagsAreOneClearError) {
  const std::string tiny = " --model " + fixture_dir("mamba_tiny");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--models mamba-7b --suite inference", "unknown model shape 'mamba-7b'"},
      {"--dtypes f16 --suite inference", "--dtypes takes f32 or bf16, got 'f16'"},
      {"--suite inference,serving", "--suite takes inference, training, layers and serve, got 'serving'"},
      {"--suite serve --serve-clients 4,0", "--serve-clients"},
      {"--suite serve --serve-seconds 0", "--serve-seconds"},
      {"--prefill 512,0" + tiny, "--prefill lengths must be >= 1, got 0"},
      {"--decode-tokens 0" + tiny, "--decode-tokens must be >= 1"},
      {"--threads 0" + tiny, "--threads must be >= 1"},
      {"--model /nonexistent/folder", "/nonexistent/folder"},
      {"--models mamba-130m" + tiny, "give --model DIR or --models SHAPES, not both"},
      {"--write-model mamba-130m", "--write-model needs --out DIR"},
      {"--write-model mamba-130m --dtype f8 --out /tmp/never", "--dtype takes f32, bf16 or f16, got 'f8'"},
      {"--write-model mamba-7b --out /tmp/never", "unknown model shape 'mamba-7b'"},
      {"--dtype bf16" + tiny, "--dtype goes with --write-model"},
      {"--out /tmp/never" + tiny, "--out goes with --write-model"},
      {"--device tpu", "--device: unknown device 'tpu' (cpu or cuda)"},
      {"--peer-times /tmp/never.json" + tiny, "--peer-times goes with --device cuda"},
      {"--device cuda --suite scans --models mamba2-130m", "--models goes with the inference, training and serve"},
      {"--bogus", "--bogus"},
  };
  for (const auto& [flags, fragment] : cases) expect_one_clear_error(flags, fragment);
  EXPECT_FALSE(fs::exists("/tmp/never"));
}

// scripts/gpu-peers.py's file is read before anything runs (and before the GPU is looked for): a
// missing or malformed one is one error naming it and what is wrong.
TEST(CliBench, BadPeerTimesAreOneClearError) {
  const fs::path dir = fs::temp_directory_path() / ("ssm_peer_times_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto file = [&](const std::string& name, const std::string& text) {
    const fs::path path = dir / name;
    std::ofstream(path) << text;
    return path.string();
  };
  const std::string lengths = R"("lengths": [4096, 16384, 65536, 102400], "source": "mamba_ssm")";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {(dir / "missing.json").string(), "missing.json"},
      {file("broken.json", "{\"lengths\": ["), "is not valid JSON"},
      {file("short.json", R"({"lengths": [4096, 16384], "ssd_forward_ms": [1, 2]})"),
       "\"lengths\" must be an array of 4 numbers"},
      {file("other.json", R"({"lengths": [4096, 8192, 65536, 102400], "source": "x"})"),
       "\"lengths\" must be 4096, 16384, 65536, 102400"},
      {file("negative.json", "{" + lengths + R"(, "ssd_forward_ms": [1, 2, -3, 4]})"),
       "\"ssd_forward_ms\" holds -3, not a positive number"},
      {file("no_backward.json", "{" + lengths + R"(, "ssd_forward_ms": [1, 2, 3, 4]})"),
       "\"ssd_forward_backward_ms\" must be an array of 4 numbers"},
      {file("bad_time.json", "{" + lengths +
                                 R"(, "ssd_forward_ms": [1, 2, 3, 4], "ssd_forward_backward_ms": [1, 2, 3, 4],)"
                                 R"( "measured_at": 5})"),
       "\"measured_at\" must be a string"},
  };
  for (const auto& [path, fragment] : cases)
    expect_one_clear_error("--device cuda --suite scans --peer-times " + path, fragment);
  // A peer file where no scan table is printed is an error too, not a flag silently ignored.
  expect_one_clear_error("--device cuda --models mamba2-130m --peer-times " + file("unused.json", "{}"),
                         "--peer-times gives the SSD's peer for the scan tables, which these suites do not print");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ssm
