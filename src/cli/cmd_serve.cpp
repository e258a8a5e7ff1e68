// ssm serve: the model behind an OpenAI-compatible HTTP API (serve/server.h), until the process is stopped.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "core/file_util.h"
#include "serve/server.h"

namespace ssm::cli {
namespace {

struct ServeArgs {
  std::string model, tokenizer, dtype = "auto", name;
  serve::ServerOptions options;
  int64_t cache_mib = 256;
};

// Whether the folder's tokenizer_config.json has a chat template (which the server does not render yet).
bool has_chat_template(const std::filesystem::path& folder) {
  const auto config = folder / "tokenizer_config.json";
  if (!std::filesystem::exists(config)) return false;
  const auto json = nlohmann::json::parse(read_text_file(config.string()), nullptr, false);
  return json.is_object() && json.contains("chat_template");
}

void run_serve(ServeArgs& args) {
  const LanguageModel model = LanguageModel::load(args.model, {.weights = weight_dtype_from_name(args.dtype)});
  const auto tokenizer = model_tokenizer(args.tokenizer, args.model, model);
  std::filesystem::path folder = std::filesystem::path(args.model).lexically_normal();
  if (folder.filename().empty()) folder = folder.parent_path();  // "dir/": the name is dir
  args.options.model_name = args.name.empty() ? folder.filename().string() : args.name;
  args.options.scheduler.cache_bytes = args.cache_mib << 20;
  serve::Server server(model, *tokenizer, args.options);
  const int port = server.bind();
  std::fprintf(stderr, "serving '%s' on http://%s:%d (%lld slots)\n", args.options.model_name.c_str(),
               args.options.host.c_str(), port, (long long)args.options.scheduler.slots);
  if (has_chat_template(folder))
    std::fprintf(stderr,
                 "note: the model's chat template is not rendered yet; chat prompts use the plain role format\n");
  server.run();
}

const CommandRegistrar registrar(25, [](CLI::App& root) {
  auto args = std::make_shared<ServeArgs>();
  serve::ServerOptions& o = args->options;
  CLI::App* cmd = root.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  cmd->add_option("--model", args->model, "Checkpoint folder")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json or folder (default: the model's, else bytes)");
  cmd->add_option("--name", args->name, "Model id clients use (default: the folder's name)");
  cmd->add_option("--host", o.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o.port, "Port (0: any free one)")->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--api-key", o.api_key, "Require 'Authorization: Bearer KEY' (all endpoints but /health)");
  cmd->add_option("--slots", o.scheduler.slots, "Sequences decoding together")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--queue", o.scheduler.queue_limit, "Requests that may wait for a slot (then 429)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--context", o.limits.context, "Prompt + completion tokens per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-tokens", o.limits.default_max_tokens, "Chat completion tokens when a request sets none")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--cache-mib", args->cache_mib, "Prefix-cache budget in MiB (0: off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--cache-chunk", o.scheduler.cache_chunk, "Prefill chunk; snapshots at its multiples")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_dtype_option(*cmd, &args->dtype);
  add_threads_option(*cmd, &o.scheduler.threads);
  cmd->callback([args] { run_serve(*args); });
});

}  // namespace
}  // namespace ssm::cli
