// ssm bench: inference speed of randomly initialised models at published shapes, next to the
// machine's own ceilings (memory bandwidth for decode, sgemm rate for prefill).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "bench/machine.h"
#include "bench/random_model.h"
#include "cli/command.h"
#include "core/json.h"
#include "core/threads.h"
#include "train/bench.h"

namespace ssm::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchArgs {
  std::vector<std::string> models = {"mamba-130m", "mamba2-130m"};
  std::vector<int> threads = {1, 2};
  std::vector<std::string> dtypes = {"f32", "bf16"};
  std::vector<int64_t> prefill_lengths = {512, 2048};
  int64_t decode_tokens = 64;
  std::vector<std::string> suites = {"inference", "training"};
  std::string train_config;  // a config.json to time in training instead of the default models
  int64_t train_steps = 3;
};

double seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

Tensor token_ids(int64_t length, int64_t vocab) {
  Tensor ids = Tensor::empty({1, length}, DType::I32);
  for (int64_t t = 0; t < length; ++t) ids.data<int32_t>()[t] = int32_t((t * 7919 + 13) % vocab);
  return ids;
}

// FLOPs of the matrix products in a prefill of `length` tokens (head on the last token only).
double prefill_matmul_flops(const LanguageModel& model, int64_t length) {
  const ModelConfig& c = model.config();
  return 2.0 * (model.matmul_macs_per_token() * double(length) + double(c.vocab_size) * c.d_model);
}

int64_t state_bytes(const LanguageModel& model) { return model.new_state(1).bytes(); }

// Training steps (forward, backward, clipping, AdamW) of the demo model and the mamba2-130m shape.
void run_training_bench(const BenchArgs& args) {
  std::vector<std::pair<std::string, ModelConfig>> models;
  if (!args.train_config.empty()) {
    models.emplace_back(args.train_config, ModelConfig::from_json(read_json_file(args.train_config), args.train_config));
  } else {
    models.emplace_back("demo (mamba2 4x128, bytes)", demo_model_config());
    models.emplace_back("mamba2-130m shape", bench::published_shape("mamba2-130m"));
  }
  std::vector<TrainBenchResult> results;
  for (const auto& [name, config] : models) {
    const bool big = config.d_model >= 512;
    for (int threads : args.threads) {
      set_num_threads(threads);
      results.push_back(bench_training(config, name, big ? 2 : 8, big ? 512 : 256, args.train_steps));
    }
  }
  std::printf("\n%s", bench_table(results).c_str());
}

void run_inference_bench(const BenchArgs& args) {
  std::printf("| model | weights | threads | prefill tok/s (T) | prefill GFLOP/s (%% sgemm) | decode tok/s | decode GB/s (%% read bw) |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  std::ostringstream ceilings;
  double weights_max = 0;
  for (int threads : args.threads) {
    set_num_threads(threads);
    const bench::MachineCeilings machine = bench::measure_machine();
    ceilings << fmt::format("{} thread(s): streaming read {:.1f} GB/s, memcpy {:.1f} GB/s (read + write), sgemm {:.0f} GFLOP/s\n",
                            threads, machine.read_gbs, machine.copy_gbs, machine.sgemm_gflops);
    for (const auto& name : args.models) {
      const ModelConfig config = bench::published_shape(name);
      for (const auto& dtype_name : args.dtypes) {
        SSM_CHECK(dtype_name == "f32" || dtype_name == "bf16", "--dtypes takes f32 and bf16, got '{}'", dtype_name);
        const DType dtype = dtype_name == "f32" ? DType::F32 : DType::BF16;
        const LanguageModel model = bench::random_model(config, dtype, 1234);
        weights_max = std::max(weights_max, double(model.weight_bytes()));

        std::string prefill_cells, flops_cells;
        for (int64_t length : args.prefill_lengths) {
          const Tensor ids = token_ids(length, config.vocab_size);
          model.forward(token_ids(16, config.vocab_size), nullptr, false);  // warm-up
          const auto start = Clock::now();
          model.forward(ids, nullptr, false);
          const double s = seconds(start);
          const double gflops = prefill_matmul_flops(model, length) / s / 1e9;
          prefill_cells += fmt::format("{}{:.0f} ({})", prefill_cells.empty() ? "" : ", ", double(length) / s, length);
          flops_cells += fmt::format("{}{:.0f} ({:.0f}%)", flops_cells.empty() ? "" : ", ", gflops,
                                     100 * gflops / machine.sgemm_gflops);
        }

        ModelState state = model.new_state(1);
        model.forward(token_ids(16, config.vocab_size), &state, false);
        Tensor step_id = Tensor::zeros({1}, DType::I32);
        model.step(step_id, state);  // warm-up
        const auto start = Clock::now();
        for (int64_t i = 0; i < args.decode_tokens; ++i) {
          step_id.data<int32_t>()[0] = int32_t((i * 31 + 7) % config.vocab_size);
          model.step(step_id, state);
        }
        const double per_token = seconds(start) / double(args.decode_tokens);
        // A decode step reads every weight once and reads + writes the recurrent state.
        const double bytes = double(model.weight_bytes()) + 2.0 * double(state_bytes(model));
        const double gbs = bytes / per_token / 1e9;
        std::printf("| %s | %s | %d | %s | %s | %.1f | %.1f (%.0f%%) |\n", name.c_str(), dtype_name.c_str(), threads,
                    prefill_cells.c_str(), flops_cells.c_str(), 1.0 / per_token, gbs, 100 * gbs / machine.read_gbs);
        std::fflush(stdout);
      }
    }
  }
  std::printf("\n%s", ceilings.str().c_str());
  std::printf("peak resident memory %.0f MiB; largest model's weights %.0f MiB\n",
              bench::peak_resident_bytes() / 1048576.0, weights_max / 1048576.0);
}

void run_bench(const BenchArgs& args) {
  for (const auto& suite : args.suites)
    SSM_CHECK(suite == "inference" || suite == "training", "--suite takes inference and training, got '{}'", suite);
  const auto wants = [&](const char* suite) {
    return std::find(args.suites.begin(), args.suites.end(), suite) != args.suites.end();
  };
  if (wants("inference")) run_inference_bench(args);
  if (wants("training")) run_training_bench(args);
}

const CommandRegistrar registrar(40, [](CLI::App& root) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = root.add_subcommand("bench", "Benchmark prefill and decode on random models at published shapes");
  cmd->add_option("--models", args->models, "Shapes: mamba-130m, mamba2-130m")->delimiter(',')->capture_default_str();
  cmd->add_option("--threads", args->threads, "Thread counts to run")->delimiter(',')->capture_default_str();
  cmd->add_option("--dtypes", args->dtypes, "Weight types: f32, bf16")->delimiter(',')->capture_default_str();
  cmd->add_option("--prefill", args->prefill_lengths, "Prefill lengths")->delimiter(',')->capture_default_str();
  cmd->add_option("--decode-tokens", args->decode_tokens, "Tokens timed in decode")->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--suite", args->suites, "inference, training")->delimiter(',')->capture_default_str();
  cmd->add_option("--train-config", args->train_config, "Time training of this config.json instead");
  cmd->add_option("--train-steps", args->train_steps, "Timed training steps per measurement")->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([args] { run_bench(*args); });
});

}  // namespace
}  // namespace ssm::cli
