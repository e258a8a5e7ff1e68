// ssm bench: inference speed through the generator that `ssm generate` runs, of random models at
// published shapes or of a checkpoint folder, next to the machine's own ceilings (memory bandwidth
// for decode, sgemm rate for prefill); training speed; the server under load; and random models
// written as checkpoint folders, so that other programs can be timed on the same weights.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>

#include "bench/gpu_bench.h"
#include "bench/inference.h"
#include "bench/layer_bench.h"
#include "bench/machine.h"
#include "bench/random_model.h"
#include "cli/command.h"
#include "core/json.h"
#include "core/resource_usage.h"
#include "core/threads.h"
#include "serve/load_bench.h"
#include "tokenizer/tokenizer.h"
#include "train/bench.h"
#include "train/init.h"

namespace ssm::cli {
namespace {

struct BenchArgs {
  std::vector<std::string> shapes = {"mamba-130m", "mamba2-130m"};
  std::string model_dir;            // --model: time this checkpoint instead of the shapes
  std::vector<std::string> dtypes;  // weights kept in memory; default f32,bf16 (shapes) or as generate loads (--model)
  std::vector<int> threads = {1, 2};
  std::vector<int64_t> prefill_lengths = {512, 2048};
  int64_t decode_tokens = 64;
  std::vector<int64_t> gpu_decode_batches = {1, 16, 64};  // --decode-batches (--device cuda)
  uint64_t seed = 1234;
  std::vector<std::string> suites = {"inference", "training"};
  std::string train_config;  // a config.json to time in training instead of the default models
  int64_t train_steps = 3;
  bool train_recompute = false;  // --recompute: training steps that recompute cheap activations
  std::string write_shape, write_dtype = "f32", out;  // --write-model SHAPE --dtype D --out DIR
  std::string device = "cpu";
  std::string peer_times;  // --peer-times: scripts/gpu-peers.py's JSON (--device cuda)
  serve::LoadBenchOptions serve;  // --suite serve
  bench::LayerBenchOptions layers;  // --suite layers
};

// A model to time: a label for the table and how to make it (again for each thread count).
struct BenchModel {
  std::string label;
  std::function<LanguageModel()> make;
};

DType weight_dtype(const std::string& name, bool allow_f16, const char* flag) {
  if (name == "f32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  if (name == "f16" && allow_f16) return DType::F16;
  fail("{} takes {}, got '{}'", flag, allow_f16 ? "f32, bf16 or f16" : "f32 or bf16", name);
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& ch : out) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

// The models of the inference suite, with every flag checked before anything is timed.
std::vector<BenchModel> bench_models(const BenchArgs& args) {
  std::vector<BenchModel> models;
  if (!args.model_dir.empty()) {
    const std::string dir = args.model_dir;
    ModelConfig::load_folder(dir);  // a bad folder fails now, not after the ceilings are measured
    std::filesystem::path path(dir);
    if (!path.has_filename()) path = path.parent_path();  // "DIR/"
    const std::string label = path.filename().string();
    for (const auto& name : args.dtypes.empty() ? std::vector<std::string>{"auto"} : args.dtypes) {
      SSM_CHECK(name == "auto" || name == "f32" || name == "bf16",
                "--dtypes with --model takes auto, f32 or bf16 (as generate's --dtype), got '{}'", name);
      models.push_back({label, [dir, weights = weight_dtype_from_name(name)] {
                          return LanguageModel::load(dir, {.weights = weights});
                        }});
    }
    return models;
  }
  std::vector<DType> dtypes;
  for (const auto& name : args.dtypes) dtypes.push_back(weight_dtype(name, false, "--dtypes"));
  if (dtypes.empty()) dtypes = {DType::F32, DType::BF16};
  for (const auto& shape : args.shapes) {
    const ModelConfig config = bench::published_shape(shape);
    for (DType dtype : dtypes)
      models.push_back({shape, [config, dtype, seed = args.seed] { return bench::random_model(config, dtype, seed); }});
  }
  return models;
}

void run_inference_bench(const BenchArgs& args) {
  const std::vector<BenchModel> models = bench_models(args);
  std::printf("| model | weights | threads | prefill tok/s (T) | prefill GFLOP/s (%% sgemm) | prefill faults/token "
              "| decode tok/s | decode GB/s (%% read bw) | decode faults/token | resident MiB |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  std::fflush(stdout);
  std::ostringstream ceilings;
  for (int threads : args.threads) {
    set_num_threads(threads);
    const bench::MachineCeilings machine = bench::measure_machine();
    ceilings << fmt::format("{} thread(s): streaming read {:.1f} GB/s, memcpy {:.1f} GB/s (read + write), sgemm {:.0f} GFLOP/s\n",
                            threads, machine.read_gbs, machine.copy_gbs, machine.sgemm_gflops);
    for (const BenchModel& source : models) {
      const LanguageModel model = source.make();
      const bench::InferenceMeasure m =
          bench::measure_inference(model, args.prefill_lengths, args.decode_tokens, args.seed);
      std::string rates, flops, faults;
      for (size_t i = 0; i < m.prefill.size(); ++i) {
        const PhaseStats& p = m.prefill[i];
        const int64_t length = args.prefill_lengths[i];
        const double gflops = bench::prefill_matmul_flops(model, length) / p.seconds / 1e9;
        const char* sep = i ? ", " : "";
        rates += fmt::format("{}{:.0f} ({})", sep, p.tokens_per_second(), length);
        flops += fmt::format("{}{:.0f} ({:.0f}%)", sep, gflops, 100 * gflops / machine.sgemm_gflops);
        faults += fmt::format("{}{:.2f}", sep, double(p.page_faults) / double(p.tokens));
      }
      const double decode_gbs = bench::decode_bytes_per_token(model) * m.decode.tokens_per_second() / 1e9;
      std::printf("| %s | %s | %d | %s | %s | %s | %.1f | %.1f (%.0f%%) | %.2f | %.0f |\n", source.label.c_str(),
                  lower(dtype_name(model.head_weight().dtype())).c_str(), threads, rates.c_str(), flops.c_str(),
                  faults.c_str(), m.decode.tokens_per_second(), decode_gbs, 100 * decode_gbs / machine.read_gbs,
                  double(m.decode.page_faults) / double(m.decode.tokens), double(resident_bytes()) / 1048576.0);
      std::fflush(stdout);
    }
  }
  std::printf("\n%s", ceilings.str().c_str());
  std::printf("peak resident memory %.0f MiB (the bandwidth probe's buffers included)\n",
              double(peak_resident_bytes()) / 1048576.0);
}

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
      results.push_back(bench_training(config, name, big ? 2 : 8, big ? 512 : 256, args.train_steps, 1, Device::CPU,
                                       false, args.train_recompute));
    }
  }
  std::printf("\n%s", bench_table(results).c_str());
}

void write_model(const BenchArgs& args) {
  SSM_CHECK(!args.out.empty(), "--write-model needs --out DIR");
  SSM_CHECK(args.model_dir.empty(), "--write-model writes a random model: it takes no --model");
  const DType dtype = weight_dtype(args.write_dtype, true, "--dtype");
  bench::write_random_model(args.write_shape, dtype, args.seed, args.out);
  std::printf("wrote %s: random %s weights, %s, seed %llu\n", args.out.c_str(), args.write_shape.c_str(),
              std::string(dtype_name(dtype)).c_str(), (unsigned long long)args.seed);
}

// Stacks of attention, RAT, Mamba-2 and Mamba-3 layers side by side, at the first thread count.
void run_layer_bench(const BenchArgs& args) {
  set_num_threads(args.threads.front());
  std::printf("\n%d thread(s)\n%s", args.threads.front(), bench::layer_bench(args.layers).c_str());
}

// scan_table: whether the forward scan table goes first (not when --models names the shapes, nor when
// --suite scans printed it already).
void run_gpu(const BenchArgs& args, const CLI::App& cmd, const bench::ScanPeerTimes& peers, bool scan_table) {
  bench::GpuBenchOptions options;
  options.peers = peers;
  options.scan_kernels = scan_table;
  if (cmd.count("--models")) options.shapes = args.shapes;
  for (const auto& name : args.dtypes) {
    SSM_CHECK(name == "bf16" || name == "f32", "--dtypes on the GPU takes bf16 or f32, got '{}'", name);
    options.weights = name == "f32" ? DType::F32 : DType::BF16;
  }
  for (const auto& shape : options.shapes) bench::published_shape(shape);  // a bad name fails before anything runs
  options.decode_tokens = args.decode_tokens;
  options.decode_batches = args.gpu_decode_batches;
  options.seed = args.seed;
  bench::run_gpu_bench(options);
}

// Training steps on the GPU: the Mamba-2 shapes at the batches mamba_ssm + PyTorch were timed at on the
// H200 (../shared/BENCHMARKS.md: bf16 autocast, AdamW, random tokens), their figures beside ours; the
// Mamba-1 shapes (no peer figure) only with --models. scan_table: whether the forward + backward scan
// table goes first.
void run_gpu_training_bench(const BenchArgs& args, const CLI::App& cmd, const bench::ScanPeerTimes& scan_peers,
                            bool scan_table) {
  struct Shape {
    const char* name;
    int64_t batch, seq_len;
    double peer_tokens_per_second, peer_peak_gib;  // 0: no peer figure
  };
  const std::vector<Shape> all = {{"mamba2-130m", 8, 2048, 129.7e3, 21.6},
                                  {"mamba2-1.3b", 4, 2048, 24.6e3, 46.3},
                                  {"mamba-130m", 8, 2048, 0, 0},
                                  {"mamba-1.4b", 4, 2048, 0, 0},
                                  {"mamba3-130m", 8, 2048, 0, 0},
                                  {"mamba3-1.3b", 4, 2048, 0, 0},
                                  {"xlstm-350m", 8, 2048, 0, 0}};
  std::vector<Shape> shapes;
  const bool models_given = cmd.count("--models") > 0;
  for (const Shape& shape : all)
    if (models_given ? std::find(args.shapes.begin(), args.shapes.end(), shape.name) != args.shapes.end()
                     : shape.peer_tokens_per_second > 0)
      shapes.push_back(shape);
  for (const auto& name : models_given ? args.shapes : std::vector<std::string>{})
    SSM_CHECK(std::any_of(all.begin(), all.end(), [&](const Shape& s) { return name == s.name; }),
              "--suite training --device cuda times mamba2-130m, mamba2-1.3b (beside mamba_ssm + PyTorch), "
              "mamba-130m, mamba-1.4b, mamba3-130m, mamba3-1.3b and xlstm-350m, got '{}'",
              name);
  if (scan_table) bench::scan_kernel_table(args.seed, /*training=*/true, scan_peers);
  const double peak_tflops = bench::measure_bf16_tflops();
  std::printf("GPU ceiling: BF16 matrix product %.0f TFLOP/s\n\n", peak_tflops);
  std::vector<TrainBenchResult> results;
  std::string versus =
      "| model | batch x length | tokens/s | mamba_ssm + PyTorch | ratio | peak GiB | theirs | ratio | matmul "
      "TFLOP/s (% of the BF16 peak) |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  // Two warm-up steps: the first plans the workspace (and hands the pool's free memory back), the
  // second regrows the pool for the ops' own scratch; the timed steps are then what every later step is.
  constexpr int64_t kWarmupSteps = 2;
  for (const Shape& shape : shapes) {
    results.push_back(bench_training(bench::published_shape(shape.name), shape.name, shape.batch, shape.seq_len,
                                     args.train_steps, kWarmupSteps, Device::CUDA, /*mixed=*/true,
                                     args.train_recompute));
    const TrainBenchResult& r = results.back();
    const double gib = r.peak_device_bytes / double(1 << 30);
    const std::string model = args.train_recompute ? fmt::format("{} (--recompute)", shape.name) : shape.name;
    const bool peer = shape.peer_tokens_per_second > 0;
    const double matmul_tflops = r.matmul_flops_per_second() / 1e12;
    versus += fmt::format("| {} | {} x {} | {:.0f} | {} | {} | {:.1f} | {} | {} | {:.0f} ({:.0f}%) |\n", model,
                          shape.batch, shape.seq_len, r.tokens_per_second,
                          peer ? fmt::format("{:.0f}", shape.peer_tokens_per_second) : "-",
                          peer ? fmt::format("{:.2f}x", r.tokens_per_second / shape.peer_tokens_per_second) : "-", gib,
                          peer ? fmt::format("{:.1f}", shape.peer_peak_gib) : "-",
                          peer ? fmt::format("{:.2f}x", gib / shape.peer_peak_gib) : "-", matmul_tflops,
                          100 * matmul_tflops / peak_tflops);
    std::printf("%s", bench_table({r}).c_str());
    std::fflush(stdout);
  }
  std::printf("\nMixed precision (F32 master weights and moments, BF16 products and activations), as theirs; "
              "goal: >= 1.5x their tokens/s at <= 0.7x their memory\n%s", versus.c_str());
}

// The server under load (serve/load_bench.h) on `device`: --model DIR with its tokenizer; else each
// --models shape with random weights, or (neither given) the demo model's architecture, with byte
// tokens (the shapes' steps cost what their real checkpoints' do: the table measures the server
// around a step of that cost). On the CPU the model computes on the first --threads count; on the GPU
// its matrices are --dtypes' first (bf16 unless f32; --model: generate's --dtype, default auto).
void run_serve_bench(const BenchArgs& args, const CLI::App& cmd, Device device) {
  require_device(device);
  SSM_CHECK(args.dtypes.size() <= 1, "--suite serve times one weight type: give one --dtypes");
  const std::string dtype = args.dtypes.empty() ? "" : args.dtypes.front();
  struct Served {
    std::string label;
    std::function<LanguageModel()> make;
  };
  std::vector<Served> models;
  if (!args.model_dir.empty()) {
    const WeightDType weights = weight_dtype_from_name(dtype.empty() ? "auto" : dtype);
    models.push_back({args.model_dir, [&args, weights, device] {
                        return LanguageModel::load(args.model_dir, {.weights = weights, .device = device});
                      }});
  } else {
    const DType matrices = dtype.empty() ? (device == Device::CPU ? DType::F32 : DType::BF16)
                                         : weight_dtype(dtype, false, "--dtypes");
    const auto placed = [device, matrices](LanguageModel model) {
      if (device != Device::CPU) model.to_device(device, matrices);
      return model;
    };
    if (cmd.count("--models") == 0) {
      models.push_back({"the demo model (random weights)", [&args, placed] {
                          LanguageModel demo(demo_model_config());
                          init_parameters(demo, args.seed);
                          return placed(std::move(demo));
                        }});
    }
    for (const auto& shape : cmd.count("--models") ? args.shapes : std::vector<std::string>{}) {
      const ModelConfig config = bench::published_shape(shape);  // a bad name fails before anything runs
      models.push_back({shape + " (random weights)", [&args, placed, config, device, matrices] {
                          return placed(bench::random_model(config, device == Device::CPU ? matrices : DType::F32,
                                                            args.seed));
                        }});
    }
  }
  serve::LoadBenchOptions options = args.serve;
  options.threads = args.threads.front();
  options.seed = args.seed;
  for (const Served& served : models) {
    const LanguageModel model = served.make();
    const auto tokenizer = args.model_dir.empty() ? make_byte_tokenizer() : model_tokenizer("", args.model_dir, model);
    const std::string where = device == Device::CPU ? fmt::format("{} thread(s)", options.threads)
                                                    : fmt::format("the GPU, {} matrices",
                                                                  lower(dtype_name(model.head_weight().dtype())));
    std::printf("ssm serve under load: %s, %s, %.0f s per level, prompts of %lld random ids, %lld tokens each\n",
                served.label.c_str(), where.c_str(), options.seconds, (long long)options.prompt_tokens,
                (long long)options.max_tokens);
    std::fflush(stdout);
    std::printf("\n%s\n", serve::load_bench_table(serve::run_load_bench(model, *tokenizer, options)).c_str());
    std::fflush(stdout);
  }
}

void run_bench(const BenchArgs& args, const CLI::App& cmd) {
  if (!args.write_shape.empty()) return write_model(args);
  const Device device = parse_device(args.device, "--device");
  if (device == Device::CUDA) {
    const bool suite_given = cmd.count("--suite") > 0;
    for (const auto& suite : args.suites)
      SSM_CHECK(!suite_given || suite == "inference" || suite == "training" || suite == "serve" || suite == "scans",
                "--device cuda runs the inference, training, scans and serve suites, got '{}'", suite);
    const auto wants = [&](const char* suite) {
      return std::find(args.suites.begin(), args.suites.end(), suite) != args.suites.end();
    };
    SSM_CHECK(args.model_dir.empty() || (suite_given && args.suites == std::vector<std::string>{"serve"}),
              "--device cuda times the published shapes (--model DIR goes with --suite serve)");
    SSM_CHECK(args.model_dir.empty() || cmd.count("--models") == 0, "give --model DIR or --models SHAPES, not both");
    // The scan tables: both with --suite scans; else the inference suite's forward one and the training
    // suite's forward + backward one, unless --models names the shapes to time.
    const bool scans = suite_given && wants("scans"), models_given = cmd.count("--models") > 0;
    const bool inference = !suite_given || wants("inference"), training = suite_given && wants("training");
    SSM_CHECK(!models_given || inference || training || wants("serve"),
              "--suite scans times the scan kernels alone: --models goes with the inference, training and serve "
              "suites");
    SSM_CHECK(args.peer_times.empty() || scans || (!models_given && (inference || training)),
              "--peer-times gives the SSD's peer for the scan tables, which these suites do not print here "
              "(--suite scans prints them)");
    // Read before anything runs, so that a bad file fails at once.
    const bench::ScanPeerTimes peers =
        args.peer_times.empty() ? bench::ScanPeerTimes{} : bench::read_scan_peer_times(args.peer_times);
    if (scans) {
      require_device(Device::CUDA);
      for (bool with_backward : {false, true}) bench::scan_kernel_table(args.seed, with_backward, peers);
    }
    if (inference) run_gpu(args, cmd, peers, !scans && !models_given);
    if (training) run_gpu_training_bench(args, cmd, peers, !scans && !models_given);
    if (suite_given && wants("serve")) run_serve_bench(args, cmd, device);
    return;
  }
  SSM_CHECK(args.peer_times.empty(), "--peer-times goes with --device cuda");
  for (const char* flag : {"--out", "--dtype"})
    SSM_CHECK(cmd.count(flag) == 0, "{} goes with --write-model SHAPE (the inference suite takes --dtypes)", flag);
  SSM_CHECK(args.model_dir.empty() || cmd.count("--models") == 0, "give --model DIR or --models SHAPES, not both");
  for (const auto& suite : args.suites)
    SSM_CHECK(suite == "inference" || suite == "training" || suite == "layers" || suite == "serve",
              "--suite takes inference, training, layers and serve, got '{}'", suite);
  for (int threads : args.threads) SSM_CHECK(threads >= 1, "--threads must be >= 1, got {}", threads);
  for (int64_t length : args.prefill_lengths) SSM_CHECK(length >= 1, "--prefill lengths must be >= 1, got {}", length);
  SSM_CHECK(args.decode_tokens >= 1, "--decode-tokens must be >= 1, got {}", args.decode_tokens);
  SSM_CHECK(args.train_steps >= 1, "--train-steps must be >= 1, got {}", args.train_steps);
  const bool suite_given = cmd.count("--suite") > 0;
  const auto wants = [&](const char* suite) {
    if (!args.model_dir.empty() && !suite_given) return std::string_view(suite) == "inference";
    return std::find(args.suites.begin(), args.suites.end(), suite) != args.suites.end();
  };
  if (wants("inference")) run_inference_bench(args);
  if (wants("training")) run_training_bench(args);
  if (wants("layers")) run_layer_bench(args);
  if (wants("serve")) run_serve_bench(args, cmd, device);
}

const CommandRegistrar registrar(40, [](CLI::App& root) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = root.add_subcommand(
      "bench", "Time prefill and decode through the generator (random models at published shapes, or --model DIR), "
               "training steps, or write a random model as a checkpoint folder");
  cmd->add_option("--models", args->shapes,
                  "Published shapes to time: mamba-130m, mamba-1.4b, mamba2-130m, mamba2-1.3b, mamba3-130m, "
                  "mamba3-1.3b (with --device cuda: only these, without the scan-kernel table)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--model", args->model_dir, "Time this checkpoint folder instead (inference only unless --suite)");
  cmd->add_option("--dtypes", args->dtypes, "Matrices kept in memory: f32, bf16 (default both); with --model "
                                            "as generate's --dtype: auto (default), f32, bf16")->delimiter(',');
  cmd->add_option("--threads", args->threads, "Thread counts to run")->delimiter(',')->capture_default_str();
  cmd->add_option("--prefill", args->prefill_lengths, "Prompt lengths (random ids)")->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--decode-tokens", args->decode_tokens, "Greedy decode steps timed per prompt (EOS ignored)")
      ->capture_default_str();
  cmd->add_option("--decode-batches", args->gpu_decode_batches,
                  "With --device cuda: the decode batch sizes to time (mamba_ssm's figures exist for 1, 16 and 64)")
      ->delimiter(',')->check(CLI::Range(int64_t(1), int64_t(1024)))->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the random weights and prompt ids")->capture_default_str();
  cmd->add_option("--suite", args->suites,
                  "inference, training, layers (attention, RAT, Mamba-2 and Mamba-3 stacks), serve (the server under load), "
                  "scans (--device cuda: the scan kernels alone)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--device", args->device,
                  "cpu, or cuda: the published shapes on the GPU beside mamba_ssm, and the serve suite there "
                  "(with --device cuda, --suite scans times the scan kernels alone)")
      ->capture_default_str();
  cmd->add_option("--peer-times", args->peer_times,
                  "With --device cuda: mamba_ssm's SSD as scripts/gpu-peers.py timed it on this card (JSON), "
                  "beside which the scan tables put ours instead of the stored figures");
  cmd->add_option("--train-config", args->train_config, "Time training of this config.json instead");
  cmd->add_option("--train-steps", args->train_steps, "Timed training steps per measurement")->capture_default_str();
  cmd->add_flag("--recompute", args->train_recompute,
                "Training steps as `ssm train --recompute` runs them (fewer activations kept, cheap ones recomputed, "
                "the layers' BF16 matrices made per layer)");
  cmd->add_option("--write-model", args->write_shape, "Write a random model of this published shape to --out, "
                                                      "then stop");
  cmd->add_option("--dtype", args->write_dtype, "Tensor type of the written model: f32, bf16, f16")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Folder --write-model writes");
  serve::LoadBenchOptions& serve = args->serve;
  cmd->add_option("--serve-clients", serve.clients, "serve: concurrent streaming clients, one level each")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--serve-seconds", serve.seconds, "serve: seconds each level starts requests")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--serve-prompt", serve.prompt_tokens, "serve: prompt tokens per request (random ids)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--serve-max-tokens", serve.max_tokens, "serve: tokens generated per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--serve-prefill-batch-tokens", serve.prefill_batch_tokens,
                  "serve: the server's prompt tokens prefilled per iteration at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--layer-kinds", args->layers.kinds, "layers: the stacks to time")
      ->delimiter(',')
      ->check(CLI::IsMember({"attention", "rat", "mamba2", "mamba3", "mamba3-mimo", "mlstm", "slstm"}))
      ->capture_default_str();
  cmd->add_option("--serve-prefix", serve.prefix_tokens, "serve: the shared-prefix probe's prefix (0: none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->callback([args, cmd] { run_bench(*args, *cmd); });
});

}  // namespace
}  // namespace ssm::cli
