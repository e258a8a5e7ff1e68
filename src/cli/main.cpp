// ssm: the command-line entry point. Every error ends here as one line on stderr and exit code 1.
#include <cstdio>
#include <exception>
#include <map>
#include <new>

#include "cli/command.h"
#include "core/error.h"
#include "core/threads.h"

namespace ssm::cli {
namespace {
std::multimap<int, CommandSetup>& registry() {
  static std::multimap<int, CommandSetup> commands;
  return commands;
}
}  // namespace

CommandRegistrar::CommandRegistrar(int order, CommandSetup setup) { registry().emplace(order, std::move(setup)); }

void setup_commands(CLI::App& root) {
  for (auto& [order, setup] : registry()) setup(root);
}

void add_threads_option(CLI::App& command, int* threads) {
  command.add_option("--threads", *threads, "CPU threads (default: all cores)")->check(CLI::PositiveNumber);
}

void add_dtype_option(CLI::App& command, std::string* dtype) {
  command
      .add_option("--dtype", *dtype,
                  "How the matrices are kept: auto (as stored; BF16/F16 stay 16-bit), f32, bf16. Arithmetic is f32")
      ->check(CLI::IsMember({"auto", "f32", "bf16"}))
      ->capture_default_str();
}

}  // namespace ssm::cli

int main(int argc, char** argv) {
  CLI::App app{"ssm.cpp: train and run state-space and hybrid sequence models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ssm.cpp 0.1");
  ssm::cli::setup_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ssm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
