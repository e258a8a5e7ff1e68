// ssm logits --model DIR --ids IN.npy --out OUT.npy: float32 [B, T, V] logits of every position.
#include "cli/command.h"
#include "core/npy.h"
#include "core/threads.h"
#include "model/language_model.h"

namespace ssm::cli {

Tensor read_token_ids(const std::string& path);  // cmd_ids.cpp

namespace {
struct LogitsArgs {
  std::string model, ids, out, dtype = "auto", device = "cpu";
  int threads = 0;
};

void run_logits(const LogitsArgs& args) {
  set_num_threads(args.threads);
  const Tensor ids = read_token_ids(args.ids);
  SSM_CHECK(ids.dim() == 2, "'{}': ids must be [batch, length], got {}", args.ids, shape_str(ids.shape()));
  const LanguageModel model = LanguageModel::load(
      args.model, {.weights = weight_dtype_from_name(args.dtype), .device = parse_device(args.device, "--device")});
  write_npy(args.out, model.forward(ids, nullptr, true).to_device(Device::CPU));
}

const CommandRegistrar registrar(10, [](CLI::App& root) {
  auto args = std::make_shared<LogitsArgs>();
  CLI::App* cmd = root.add_subcommand("logits", "Write the logits of every position for token ids");
  cmd->add_option("--model", args->model, "Checkpoint folder (config.json + model.safetensors)")->required();
  cmd->add_option("--ids", args->ids, "int32/int64 .npy of token ids [B, T]")->required();
  cmd->add_option("--out", args->out, "Output .npy, float32 [B, T, V]")->required();
  add_dtype_option(*cmd, &args->dtype);
  add_device_option(*cmd, &args->device);
  add_threads_option(*cmd, &args->threads);
  cmd->callback([args] { run_logits(*args); });
});
}  // namespace

}  // namespace ssm::cli
