// ssm generate: a prompt in, its continuation out. Text prompts (--prompt, --prompt-file) are
// tokenized with the model's tokenizer.json (bytes when it has none) and the continuation is
// streamed to stdout as it is produced; id prompts (--prompt-ids) give ids back (--ids-out).
#include <fmt/ranges.h>

#include <cstdio>
#include <filesystem>

#include "cli/command.h"
#include "core/file_util.h"
#include "core/npy.h"
#include "core/resource_usage.h"
#include "core/threads.h"
#include "infer/generator.h"
#include "infer/stop_strings.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8_stream.h"

namespace ssm::cli {

Tensor read_token_ids(const std::string& path);  // cmd_ids.cpp

std::unique_ptr<Tokenizer> model_tokenizer(const std::string& tokenizer, const std::string& folder,
                                           const LanguageModel& model) {
  if (!tokenizer.empty()) return load_tokenizer(tokenizer);
  if (std::filesystem::exists(std::filesystem::path(folder) / "tokenizer.json")) return load_tokenizer(folder);
  SSM_CHECK(model.config().vocab_size >= 257,
            "model folder '{}' has no tokenizer.json and its vocabulary ({}) is too small for bytes: give --tokenizer",
            folder, model.config().vocab_size);
  return make_byte_tokenizer();
}

namespace {

struct GenerateArgs {
  std::string model, tokenizer, prompt_ids, ids_out, dtype = "auto", device = "cpu";
  std::vector<std::string> prompts, prompt_files, stops;
  GenerateOptions options;
  bool ignore_eos = false;
  int threads = 0;
};

void print_summary(const GenerationResult& result, const LanguageModel& model) {
  std::fprintf(stderr, "\nprefill %lld tokens in %.3f s (%.1f tok/s), decode %lld tokens in %.3f s (%.1f tok/s)\n",
               (long long)result.prefill.tokens, result.prefill.seconds, result.prefill.tokens_per_second(),
               (long long)result.decode.tokens, result.decode.seconds, result.decode.tokens_per_second());
  if (result.replayed_steps > 0)
    std::fprintf(stderr, "%lld of the decode steps replayed as one CUDA graph each\n", (long long)result.replayed_steps);
  std::fprintf(stderr, "weights %.1f MiB, peak resident memory %.1f MiB\n", double(model.weight_bytes()) / 1048576.0,
               double(peak_resident_bytes()) / 1048576.0);
}

void write_ids(const std::string& path, const GenerationResult& result, int32_t pad) {
  // Sequences that stopped early are padded (with the first EOS id, or 0) to one rectangle.
  size_t width = 0;
  for (const auto& s : result.sequences) width = std::max(width, s.size());
  Tensor out = Tensor::empty({int64_t(result.sequences.size()), int64_t(width)}, DType::I32);
  for (size_t b = 0; b < result.sequences.size(); ++b) {
    const auto& s = result.sequences[b];
    for (size_t t = 0; t < width; ++t) out.data<int32_t>()[b * width + t] = t < s.size() ? s[t] : pad;
  }
  write_npy(path, out);
}

void run_from_ids(GenerateArgs& args, const LanguageModel& model) {
  const Tensor ids = read_token_ids(args.prompt_ids);
  SSM_CHECK(ids.dim() == 2 && ids.size(0) >= 1, "'{}': prompt ids must be [batch, length], got {}", args.prompt_ids,
            shape_str(ids.shape()));
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t b = 0; b < ids.size(0); ++b) {
    const int32_t* row = ids.data<int32_t>() + b * ids.size(1);
    prompts.emplace_back(row, row + ids.size(1));
  }
  const GenerationResult result = Generator(model).generate(prompts, args.options);
  print_summary(result, model);
  const int32_t pad = args.options.eos_ids.empty() ? 0 : int32_t(args.options.eos_ids[0]);
  if (!args.ids_out.empty()) write_ids(args.ids_out, result, pad);
  else
    for (const auto& s : result.sequences) std::printf("%s\n", fmt::format("{}", fmt::join(s, " ")).c_str());
}

void run_from_text(GenerateArgs& args, const LanguageModel& model) {
  const auto tokenizer = model_tokenizer(args.tokenizer, args.model, model);
  std::vector<std::string> texts = args.prompts;
  for (const auto& file : args.prompt_files) texts.push_back(read_text_file(file));
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& text : texts) {
    std::vector<int32_t> ids = tokenizer->encode(text);
    for (int32_t id : ids)
      SSM_CHECK(id < model.config().vocab_size, "the tokenizer gives id {} but the model's vocabulary has {} ids", id,
                model.config().vocab_size);
    if (ids.empty()) {  // an empty prompt starts from BOS
      int64_t bos = model.config().bos_id;
      if (bos < 0 && tokenizer->bos_id()) bos = *tokenizer->bos_id();
      SSM_CHECK(bos >= 0, "empty prompt and the model has no BOS token to start from");
      ids.push_back(int32_t(bos));
    }
    prompts.push_back(std::move(ids));
  }

  // One prompt streams as it goes; several are printed whole at the end, in order.
  const bool stream = prompts.size() == 1;
  std::vector<Utf8Stream> utf8(prompts.size());
  std::vector<StopStringFilter> filters(prompts.size(), StopStringFilter(args.stops));
  std::vector<std::string> outputs(prompts.size());
  const auto emit = [&](size_t b, const std::string& text) {
    if (stream) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    } else {
      outputs[b] += text;
    }
  };
  const auto& eos = args.options.eos_ids;
  const TokenCallback on_token = [&](size_t b, int32_t token) {
    if (std::find(eos.begin(), eos.end(), token) != eos.end() || tokenizer->is_special(token)) return true;
    emit(b, filters[b].push(utf8[b].feed(tokenizer->token_bytes(token))));
    return !filters[b].stopped();
  };
  args.options.sample_vocab = tokenizer->vocab_size();
  const GenerationResult result = Generator(model).generate(prompts, args.options, on_token);
  for (size_t b = 0; b < prompts.size(); ++b) {
    emit(b, filters[b].push(utf8[b].flush()));
    emit(b, filters[b].finish());
  }
  if (!stream) {
    for (size_t b = 0; b < prompts.size(); ++b) std::printf("--- %zu ---\n%s\n", b + 1, outputs[b].c_str());
  }
  std::fflush(stdout);
  print_summary(result, model);
  if (!args.ids_out.empty()) write_ids(args.ids_out, result, eos.empty() ? 0 : int32_t(eos[0]));
}

void run_generate(GenerateArgs& args) {
  set_num_threads(args.threads);
  const int sources = int(!args.prompt_ids.empty()) + int(!args.prompts.empty() || !args.prompt_files.empty());
  SSM_CHECK(sources == 1, "give either --prompt-ids or --prompt/--prompt-file");
  const LanguageModel model = LanguageModel::load(
      args.model, {.weights = weight_dtype_from_name(args.dtype), .device = parse_device(args.device, "--device")});
  if (!args.ignore_eos) args.options.eos_ids = model.config().eos_ids;
  if (!args.prompt_ids.empty()) run_from_ids(args, model);
  else run_from_text(args, model);
}

const CommandRegistrar registrar(20, [](CLI::App& root) {
  auto args = std::make_shared<GenerateArgs>();
  SamplingOptions& sampling = args->options.sampling;
  CLI::App* cmd = root.add_subcommand("generate", "Generate a continuation of a prompt");
  cmd->add_option("--model", args->model, "Checkpoint folder")->required();
  cmd->add_option("--prompt", args->prompts, "Prompt text (repeat for a batch)");
  cmd->add_option("--prompt-file", args->prompt_files, "File whose whole text is a prompt (repeatable)");
  cmd->add_option("--prompt-ids", args->prompt_ids, "int32/int64 .npy of prompt ids [B, T]");
  cmd->add_option("--ids-out", args->ids_out, "Write prompt + continuation ids here (.npy int32 [B, T'])");
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json or folder (default: the model's, else bytes)");
  cmd->add_option("--max-new-tokens", args->options.max_new_tokens, "Tokens to generate at most")
      ->capture_default_str();
  cmd->add_option("--temperature", sampling.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", sampling.top_k, "Keep the k most likely tokens (0 = all)")->capture_default_str();
  cmd->add_option("--top-p", sampling.top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--min-p", sampling.min_p, "Drop tokens below min-p × the top probability")->capture_default_str();
  cmd->add_option("--repetition-penalty", sampling.repetition_penalty, "1 = off")->capture_default_str();
  cmd->add_option("--seed", sampling.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop", args->stops, "Stop a sequence when this text appears (repeatable)");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Generate past the EOS token (timing a fixed number of tokens)");
  add_dtype_option(*cmd, &args->dtype);
  add_device_option(*cmd, &args->device);
  add_threads_option(*cmd, &args->threads);
  cmd->callback([args] { run_generate(*args); });
});

}  // namespace
}  // namespace ssm::cli
