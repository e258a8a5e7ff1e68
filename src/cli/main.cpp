// ssm: the command-line entry point. Every error ends here as one line on stderr and exit code 1.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
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

void add_device_option(CLI::App& command, std::string* device) {
  command.add_option("--device", *device, "Where the model computes: cpu, or cuda (BF16 unless --dtype f32)")
      ->capture_default_str();
}

// libgomp reads how its idle threads wait when it loads, before main. Its default, spinning up to
// 300,000 times at every barrier, is a disaster on a machine whose other cores are busy: each of
// the ~150 parallel regions of a decode step then waits for a thread that burnt its time slice
// spinning (2-thread decode on the project's shared VM: 1.3-5.8 tok/s, against 26-39 with 1,000
// spins and 23 on one thread; docs/performance.md). Unless the user chose a policy, the process
// starts itself again with a short spin; if that fails it carries on as it is.
void use_short_omp_spins(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  setenv("GOMP_SPINCOUNT", "1000", 1);
  execv("/proc/self/exe", argv);
}

}  // namespace ssm::cli

int main(int argc, char** argv) {
  // Past a file size limit (ulimit -f) a write fails with EFBIG, reported like a full disk, instead of
  // SIGXFSZ killing the process with a core dump.
  std::signal(SIGXFSZ, SIG_IGN);
  ssm::cli::use_short_omp_spins(argv);
  CLI::App app{"ssm.cpp: train and run state-space and hybrid sequence models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ssm.cpp 0.1");
  ssm::cli::setup_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {  // a command's own exit code (after its own message)
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s (see --help)\n", e.what());
    return 1;
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
