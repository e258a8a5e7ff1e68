// ssm_random_checkpoint: writes a Hugging Face checkpoint folder of a randomly initialised model at a
// published shape, for measuring `ssm generate` / `ssm logits` on a real folder without downloads.
//
//   build/release/bin/ssm_random_checkpoint --shape mamba-130m --dtype bf16 --out /tmp/mamba-130m-bf16
#include <CLI/CLI.hpp>
#include <cstdio>

#include "bench/random_model.h"
#include "core/error.h"
#include "train/init.h"

int main(int argc, char** argv) {
  CLI::App app("Writes a randomly initialised checkpoint folder at a published shape");
  std::string shape = "mamba-130m", dtype = "f32", out;
  app.add_option("--shape", shape, "mamba-130m or mamba2-130m")->capture_default_str();
  app.add_option("--dtype", dtype, "Matrices stored as f32, bf16 or f16")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  app.add_option("--out", out, "Folder to write")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    ssm::LanguageModel model(ssm::bench::published_shape(shape));
    ssm::init_parameters(model, 1234);
    model.save(out, dtype == "f32" ? ssm::DType::F32 : dtype == "bf16" ? ssm::DType::BF16 : ssm::DType::F16);
  } catch (const ssm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
