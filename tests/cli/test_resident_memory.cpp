// Resident memory of `ssm generate`: a checkpoint's matrices are used as stored (16-bit ones are not
// widened, none is copied out of the file mapping), so the process holds about the checkpoint's
// bytes plus states and activations. Measured by the peak resident memory the command reports (its
// own VmHWM), less that of the same command on a tiny model (the binary and its libraries).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "cli/run_cli.h"
#include "core/npy.h"
#include "model/language_model.h"
#include "train/init.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

// The peak resident bytes `ssm generate ...` reports on stderr, or -1 when it failed.
double peak_resident_bytes(const std::string& arguments) {
  const CliResult r = run_ssm(arguments);
  const std::string key = "peak resident memory ";
  const size_t at = r.output.rfind(key);
  if (r.exit_code != 0 || at == std::string::npos) {
    ADD_FAILURE() << "ssm " << arguments << "\n" << r.output;
    return -1;
  }
  return std::stod(r.output.substr(at + key.size())) * 1048576.0;
}

struct Checkpoint {
  std::string dir;
  double bytes = 0;   // model.safetensors
  double states = 0;  // recurrent state of one sequence
};

Checkpoint write_checkpoint(const std::string& name, int64_t d_model, int64_t layers, int64_t vocab, DType dtype) {
  const Json config = {{"model_type", "mamba"}, {"hidden_size", d_model}, {"num_hidden_layers", layers},
                       {"vocab_size", vocab},   {"state_size", 16},       {"eos_token_id", 0}};
  LanguageModel model(ModelConfig::from_json(config, name));
  init_parameters(model, 7);
  Checkpoint c;
  c.dir = (fs::temp_directory_path() / ("ssm_rss_" + std::to_string(::getpid()) + "_" + name)).string();
  model.save(c.dir, dtype);
  c.bytes = double(fs::file_size(fs::path(c.dir) / "model.safetensors"));
  c.states = double(model.new_state(1).bytes());
  return c;
}

TEST(ResidentMemory, GenerateHoldsTheCheckpointBytesPlusStates) {
  // 23M parameters (the embedding 16M), against a tiny model of the same kind.
  const std::string prompt = (fs::temp_directory_path() / ("ssm_rss_" + std::to_string(::getpid()) + ".npy")).string();
  Tensor ids = Tensor::empty({1, 32}, DType::I32);
  for (int64_t t = 0; t < 32; ++t) ids.data<int32_t>()[t] = int32_t(t * 37 % 500);
  write_npy(prompt, ids);
  const auto generate = [&](const Checkpoint& c, const std::string& dtype) {
    return peak_resident_bytes("generate --model " + c.dir + " --prompt-ids " + prompt +
                               " --max-new-tokens 4 --temperature 0 --threads 1 --dtype " + dtype);
  };
  struct Case {
    DType stored;
    std::string flag;
    double kept_fraction;  // the bytes held once loaded, over the checkpoint's
  };
  for (const Case& k : {Case{DType::BF16, "auto", 1.0}, Case{DType::F16, "auto", 1.0}, Case{DType::F32, "auto", 1.0},
                        Case{DType::F32, "bf16", 0.5}, Case{DType::BF16, "f32", 2.0}}) {
    const std::string name = std::string(dtype_name(k.stored)) + "_" + k.flag;
    const Checkpoint tiny = write_checkpoint("tiny_" + name, 64, 1, 512, k.stored);
    const Checkpoint big = write_checkpoint("big_" + name, 512, 4, 32000, k.stored);
    const double base = generate(tiny, k.flag), used = generate(big, k.flag);
    ASSERT_GT(base, 0) << name;
    ASSERT_GT(used, 0) << name;
    const double allowed = 1.2 * k.kept_fraction * (big.bytes - tiny.bytes) + big.states;
    EXPECT_LE(used - base, allowed) << name << ": " << (used - base) / 1048576 << " MiB resident for a "
                                    << big.bytes / 1048576 << " MiB checkpoint";
    fs::remove_all(tiny.dir);
    fs::remove_all(big.dir);
  }
  fs::remove(prompt);
}

}  // namespace
}  // namespace ssm
