// Each `ssm <command>` lives in its own cli/cmd_<name>.cpp and registers itself here, so adding a
// command touches no other file.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>

namespace ssm {
class LanguageModel;
class Tokenizer;
}  // namespace ssm

namespace ssm::cli {

using CommandSetup = std::function<void(CLI::App& root)>;

// Called from a static object in each command file; main() runs every setup in order.
struct CommandRegistrar {
  CommandRegistrar(int order, CommandSetup setup);
};

void setup_commands(CLI::App& root);

// Adds --threads to a subcommand; the command passes the value to ssm::set_num_threads.
void add_threads_option(CLI::App& command, int* threads);

// Adds --dtype auto|f32|bf16 (how a loaded model keeps its matrices; LoadOptions::weights).
void add_dtype_option(CLI::App& command, std::string* dtype);
// --device cpu|cuda: where the model computes (cuda: BF16 unless --dtype f32).
void add_device_option(CLI::App& command, std::string* device);

// The tokenizer a model runs with: `tokenizer` when given (a tokenizer.json or a folder), else the
// model folder's tokenizer.json, else bytes (when the vocabulary has room for them).
std::unique_ptr<Tokenizer> model_tokenizer(const std::string& tokenizer, const std::string& folder,
                                           const LanguageModel& model);

}  // namespace ssm::cli
