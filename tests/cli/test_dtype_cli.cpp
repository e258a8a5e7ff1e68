// --dtype on the commands that load a model: inspect reports the weights' size under each choice,
// logits and generate accept each, and anything else is refused with one clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "cli/run_cli.h"
#include "core/npy.h"
#include "model/fixture_util.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

TEST(CliDtype, InspectReportsEachChoice) {
  const std::string dir = fixture_dir("mamba_tiny");
  for (const std::string dtype : {"auto", "f32", "bf16"}) {
    const CliResult r = run_ssm("inspect --model " + dir + " --dtype " + dtype);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("with --dtype auto"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("(--dtype " + dtype + ": "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("matmul"), std::string::npos) << r.output;
  }
}

TEST(CliDtype, LogitsInBf16StayCloseToF32) {
  const std::string dir = fixture_dir("mamba_tiny");
  const std::string base = (fs::temp_directory_path() / ("ssm_dtype_" + std::to_string(::getpid()))).string();
  Tensor outputs[2];
  const char* dtypes[2] = {"f32", "bf16"};
  for (int i = 0; i < 2; ++i) {
    const std::string out = base + "_" + dtypes[i] + ".npy";
    const CliResult r =
        run_ssm("logits --model " + dir + " --ids " + dir + "/input_ids.npy --out " + out + " --dtype " + dtypes[i]);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    outputs[i] = read_npy(out);
    fs::remove(out);
  }
  ASSERT_EQ(outputs[0].shape(), outputs[1].shape());
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < outputs[0].numel(); ++i) {
    diff = std::max(diff, double(std::fabs(outputs[0].data<float>()[i] - outputs[1].data<float>()[i])));
    scale = std::max(scale, double(std::fabs(outputs[0].data<float>()[i])));
  }
  EXPECT_GT(diff, 0.0);           // the weights were rounded
  EXPECT_LT(diff / scale, 0.05);  // bf16 keeps 8 significant bits
}

TEST(CliDtype, RejectsUnknownDtype) {
  const CliResult r = run_ssm("generate --model " + fixture_dir("mamba_tiny") + " --prompt hi --dtype f8");
  EXPECT_GT(r.exit_code, 0) << r.output;  // a bad flag, as CLI11 reports it
  EXPECT_NE(r.output.find("--dtype"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ssm
