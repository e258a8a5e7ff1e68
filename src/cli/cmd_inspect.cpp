// ssm inspect --model DIR: architecture, layer pattern, parameter count, memory needed.
#include <fmt/ranges.h>

#include <cstdio>
#include <set>
#include <string_view>

#include "cli/command.h"
#include "model/language_model.h"
#include "ops/cpu/gemm.h"

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

struct InspectArgs {
  std::string model, dtype = "auto";
};

void run_inspect(const InspectArgs& args) {
  const WeightDType dtype = weight_dtype_from_name(args.dtype);
  // Loaded as stored (read in place, nothing converted); the sizes under each --dtype follow from it.
  const LanguageModel model = LanguageModel::load(args.model);
  const ModelConfig& c = model.config();
  const int64_t params = model.parameter_count();
  const double state_bytes = model.state_bytes(0), state_4k = model.state_bytes(4096);
  std::printf("architecture   %s\n", c.describe().c_str());
  std::printf("layer plan     %s\n", c.layer_pattern().c_str());
  std::printf("head           %s\n", c.tie_embeddings() ? "tied to the embedding" : "separate lm_head");
  std::printf("parameters     %lld (%.1f M)\n", (long long)params, double(params) / 1e6);
  std::set<std::string_view> stored;
  for (const ParamRef& p : const_cast<LanguageModel&>(model).params())
    if (p.kind != ParamKind::Vector) stored.insert(dtype_name(p.tensor->dtype()));
  std::printf("weights        %s matrices; in memory: %s with --dtype auto, %s with f32, %s with bf16 (--dtype %s: %s)\n",
              fmt::format("{}", fmt::join(stored, "+")).c_str(),
              human_bytes(double(model.weight_bytes(WeightDType::Auto))).c_str(),
              human_bytes(double(model.weight_bytes(WeightDType::F32))).c_str(),
              human_bytes(double(model.weight_bytes(WeightDType::BF16))).c_str(), weight_dtype_name(dtype),
              human_bytes(double(model.weight_bytes(dtype))).c_str());
  std::printf("state          %s per sequence%s\n", human_bytes(state_bytes).c_str(),
              state_4k > state_bytes ? fmt::format(", {} at 4096 tokens of context", human_bytes(state_4k)).c_str() : "");
  std::printf("matmul         %s\n", ops::gemm::describe_choice().c_str());
  std::printf("eos ids        %s\n", c.eos_ids.empty() ? "none" : fmt::format("{}", fmt::join(c.eos_ids, ", ")).c_str());
}

const CommandRegistrar registrar(30, [](CLI::App& root) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = root.add_subcommand("inspect", "Describe a checkpoint folder");
  cmd->add_option("--model", args->model, "Checkpoint folder")->required();
  add_dtype_option(*cmd, &args->dtype);
  cmd->callback([args] { run_inspect(*args); });
});

}  // namespace
}  // namespace ssm::cli
