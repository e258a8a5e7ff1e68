// ssm inspect --model DIR: architecture, layer pattern, parameter count, memory needed.
#include <fmt/ranges.h>

#include <cstdio>

#include "cli/command.h"
#include "model/language_model.h"

namespace ssm::cli {
namespace {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", bytes, units[unit]);
}

void run_inspect(const std::string& folder) {
  const LanguageModel model = LanguageModel::load(folder);
  const ModelConfig& c = model.config();
  const int64_t params = model.parameter_count();
  const double state_bytes = model.state_bytes(0), state_4k = model.state_bytes(4096);
  std::printf("architecture   %s\n", c.describe().c_str());
  std::printf("layer plan     %s\n", c.layer_pattern().c_str());
  std::printf("head           %s\n", c.tie_embeddings() ? "tied to the embedding" : "separate lm_head");
  std::printf("parameters     %lld (%.1f M)\n", (long long)params, double(params) / 1e6);
  std::printf("memory         weights %s in f32, %s in bf16; state per sequence %s%s\n",
              human_bytes(double(params) * 4).c_str(), human_bytes(double(params) * 2).c_str(),
              human_bytes(state_bytes).c_str(),
              state_4k > state_bytes ? fmt::format(", {} at 4096 tokens of context", human_bytes(state_4k)).c_str() : "");
  std::printf("eos ids        %s\n", c.eos_ids.empty() ? "none" : fmt::format("{}", fmt::join(c.eos_ids, ", ")).c_str());
}

const CommandRegistrar registrar(30, [](CLI::App& root) {
  auto folder = std::make_shared<std::string>();
  CLI::App* cmd = root.add_subcommand("inspect", "Describe a checkpoint folder");
  cmd->add_option("--model", *folder, "Checkpoint folder")->required();
  cmd->callback([folder] { run_inspect(*folder); });
});

}  // namespace
}  // namespace ssm::cli
