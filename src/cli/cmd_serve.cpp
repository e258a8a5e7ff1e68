// ssm serve: the model behind an OpenAI-compatible HTTP API (serve/server.h), until the process is stopped.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>

#include "cli/command.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_util.h"
#include "serve/server.h"

namespace ssm::cli {
namespace {

struct ServeArgs {
  std::string model, tokenizer, dtype = "auto", name, chat_template, device = "cpu";
  serve::ServerOptions options;
  int64_t cache_mib = 256;
};

// The chat template: --chat-template FILE (refused when this renderer cannot run it), else that of the
// tokenizer's folder or the model's. One the renderer cannot run falls back to the plain role format
// with a warning: the server still serves, and says at start what its chat prompts look like.
std::shared_ptr<const serve::ChatTemplate> load_chat_template(const ServeArgs& args, const Tokenizer& tokenizer) {
  namespace fs = std::filesystem;
  fs::path folder = args.model;
  if (!args.tokenizer.empty() && fs::exists(args.tokenizer))
    folder = fs::is_directory(args.tokenizer) ? fs::path(args.tokenizer) : fs::path(args.tokenizer).parent_path();
  std::optional<std::string> source;
  if (!args.chat_template.empty()) source = read_text_file(args.chat_template);
  try {
    auto chat = serve::ChatTemplate::from_folder(folder.string(), tokenizer, source);
    if (chat) {
      std::fprintf(stderr, "chat prompts use the chat template of %s\n",
                   source ? args.chat_template.c_str() : folder.c_str());
      return std::make_shared<const serve::ChatTemplate>(std::move(*chat));
    }
    std::fprintf(stderr, "note: no chat template in %s; chat prompts use the plain role format\n", folder.c_str());
  } catch (const serve::jinja::Error& e) {
    SSM_CHECK(!source, "--chat-template {}: {}", args.chat_template, e.what());
    std::fprintf(stderr,
                 "warning: the chat template in %s uses what this server cannot render (%s); chat prompts "
                 "use the plain role format\n",
                 folder.c_str(), e.what());
  }
  return nullptr;
}

// Listens first, then loads the model: /health answers 503 {"status": "loading"} meanwhile, so that
// an orchestrator can tell a server that is loading from one that is not there.
void run_serve(ServeArgs& args) {
  const Device device = parse_device(args.device, "--device");
  require_device(device);  // before listening: a server without its device is one clear error
  std::filesystem::path folder = std::filesystem::path(args.model).lexically_normal();
  if (folder.filename().empty()) folder = folder.parent_path();  // "dir/": the name is dir
  args.options.model_name = args.name.empty() ? folder.filename().string() : args.name;
  args.options.scheduler.cache_bytes = args.cache_mib << 20;
  if (!args.options.slot_save_path.empty()) std::filesystem::create_directories(args.options.slot_save_path);
  // Declared before the server, which uses them until it is destroyed.
  std::optional<LanguageModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  serve::Server server(args.options);
  const int port = server.bind();
  std::fprintf(stderr, "listening on http://%s:%d, loading '%s'\n", args.options.host.c_str(), port,
               args.options.model_name.c_str());
  std::thread listener([&] { server.run(); });
  try {
    model.emplace(LanguageModel::load(args.model, {.weights = weight_dtype_from_name(args.dtype), .device = device}));
    tokenizer = model_tokenizer(args.tokenizer, args.model, *model);
    server.ready(*model, *tokenizer, load_chat_template(args, *tokenizer));
  } catch (...) {
    server.stop();
    listener.join();
    throw;
  }
  std::fprintf(stderr, "serving '%s' on http://%s:%d (%lld slots, %s)\n", args.options.model_name.c_str(),
               args.options.host.c_str(), port, (long long)args.options.scheduler.slots,
               std::string(device_name(device)).c_str());
  listener.join();
}

const CommandRegistrar registrar(25, [](CLI::App& root) {
  auto args = std::make_shared<ServeArgs>();
  serve::ServerOptions& o = args->options;
  CLI::App* cmd = root.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  cmd->add_option("--model", args->model, "Checkpoint folder")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json or folder (default: the model's, else bytes)");
  cmd->add_option("--name", args->name, "Model id clients use (default: the folder's name)");
  cmd->add_option("--chat-template", args->chat_template,
                  "Jinja chat template file (default: the tokenizer_config.json's, else a plain role format)");
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
  cmd->add_option("--cache-mib", args->cache_mib, "Prefix-cache budget in MiB (0: off; with --device cuda the states are in GPU memory)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--cache-chunk", o.scheduler.cache_chunk, "Prefill chunk; snapshots at its multiples")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--prefill-batch-tokens", o.scheduler.prefill_batch_tokens,
                  "Prompt tokens prefilled per iteration at most, several prompts in one forward where their "
                  "chunks have one length (at least one chunk)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--timeout", o.request_timeout_seconds,
                  "Seconds a generation request may take, queue included (then 504, or an error event; 0: no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--slot-save-path", o.slot_save_path,
                  "Folder of POST /slots/{id}?action=save|restore (created if missing; unset: off)");
  add_dtype_option(*cmd, &args->dtype);
  add_device_option(*cmd, &args->device);
  add_threads_option(*cmd, &o.scheduler.threads);
  cmd->callback([args] { run_serve(*args); });
});

}  // namespace
}  // namespace ssm::cli
