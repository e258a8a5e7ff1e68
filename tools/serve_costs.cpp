// ssm_serve_costs: what one turn of the server's loop is made of, for a published shape (or the demo
// model's) with random weights: a decode step of B rows, a batched prefill forward of k prompts of 32
// tokens, one sequence's chunks of 16 and 256 tokens (a prefix-cache hit's suffix and a miss's chunk;
// the 16 also replayed from its recording as the server runs it on the GPU, infer/prefill_graphs.h),
// and the state copies around them (a sequence's state into another's, a fresh state, a new decode
// batch growing as 64 sequences join). Beside each decode step, the bytes of state it reads and writes
// per second and one plain pass over as many bytes (the floor the state's traffic sets). The best of a
// few runs each; on the GPU also the time the host takes to queue the work (when it is most of the
// total, launching kernels is the bound). It measures; it decides nothing (docs/performance.md,
// Server, explains the figures).
//
//   build/release/bin/ssm_serve_costs [--model mamba2-130m|demo] [--threads 16] [--dtype f32|bf16] [--device cuda]
//                                     [--step-rows 1,64 --step-runs 5 --steps-only]   (only decode steps: for perf)
//                                     [--prefill 8x2048]                  (only that prefill: for ncu or nsys)
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/random_model.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/threads.h"
#include "core/workspace.h"
#include "infer/batch_state.h"
#include "infer/prefill_graphs.h"
#include "model/language_model.h"
#include "ops/ops.h"
#include "train/bench.h"

using namespace ssm;

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

Device device = Device::CPU;  // the model's

// The best of `runs` runs of work, finished (the GPU synchronised): ms in all, and ms until work() returned.
struct Timing {
  double total = 1e30, queued = 1e30;
};
Timing best_of(int runs, const std::function<void()>& work) {
  Timing best;
  for (int run = 0; run < runs; ++run) {
    const Clock::time_point start = Clock::now();
    work();
    const double queued = ms_since(start);
    synchronize(device);
    best.total = std::min(best.total, ms_since(start));
    best.queued = std::min(best.queued, queued);
  }
  return best;
}

std::string three_places(double ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f", ms);
  return text;
}

// A table row: ms, ms per row (rows > 0), and on the GPU the ms the host took to queue the work.
void row(const std::string& work, const Timing& t, int64_t rows) {
  std::printf("| %s | %.2f | %s | %s |\n", work.c_str(), t.total,
              rows > 0 ? three_places(t.total / double(rows)).c_str() : "",
              device == Device::CPU ? "" : three_places(t.queued).c_str());
  std::fflush(stdout);
}

struct Options {
  std::string shape = "mamba2-130m", dtype = "f32", device_name = "cpu";
  int threads = 0;
  std::vector<int64_t> step_rows = {1, 8, 16, 32, 64, 128};
  int step_runs = 5;
  bool steps_only = false;
  std::string prefill_only;  // "RxT": time only that prefill
};

// Everything the tool prints, for the options given.
void measure(const Options& o) {
  const std::string &shape = o.shape, &dtype = o.dtype, &device_name = o.device_name, &prefill_only = o.prefill_only;
  const int threads = o.threads, step_runs = o.step_runs;
  const std::vector<int64_t>& step_rows = o.step_rows;
  long long prefill_rows = 0, prefill_length = 0;  // of --prefill
  char end = 0;
  const bool prefill_parsed =
      std::sscanf(prefill_only.c_str(), "%lldx%lld%c", &prefill_rows, &prefill_length, &end) == 2;
  SSM_CHECK(prefill_only.empty() || (prefill_parsed && prefill_rows > 0 && prefill_length > 0),
            "--prefill takes ROWSxTOKENS (such as 8x2048), not '{}'", prefill_only);
  set_num_threads(threads);
  device = device_name == "cuda" ? Device::CUDA : Device::CPU;
  const DType matrices = dtype == "bf16" || device == Device::CUDA ? DType::BF16 : DType::F32;
  LanguageModel model = bench::random_model(shape == "demo" ? demo_model_config() : bench::published_shape(shape),
                                            DType::F32, 1);
  model.to_device(device, matrices);
  Workspace ws(device);
  std::printf("%s on the %s, %s matrices, %d thread(s); state of one sequence %.1f MB\n\n", shape.c_str(),
              device_name.c_str(), std::string(dtype_name(matrices)).c_str(), num_threads(),
              double(model.new_state(1).bytes()) / 1e6);
  const auto prefill = [&](int64_t rows, int64_t length, int runs) {
    ModelState state = model.new_state(rows);
    const Tensor ids = Tensor::zeros({rows, length}, DType::I32);
    row("prefill [" + std::to_string(rows) + ", " + std::to_string(length) + "]", best_of(runs, [&] {
          const WorkspaceScope scope(ws);
          model.forward(ids, &state, false, ws);
        }),
        rows);
  };
  if (!prefill_only.empty()) {
    std::printf("| work | ms | ms per row | ms to queue it |\n| --- | --- | --- | --- |\n");
    prefill(prefill_rows, prefill_length, step_runs);
    return;
  }
  // A step reads and writes every row's state once; beside it, one pass that reads and writes as
  // many bytes (ops::scale in place, on the same threads or GPU): what the state's traffic alone costs.
  std::printf("| decode step, rows | ms | ms per row | ms to queue it | state read + written, GB/s | one pass over "
              "as many bytes, ms |\n| --- | --- | --- | --- | --- | --- |\n");
  for (int64_t rows : step_rows) {
    ModelState state = model.new_state(rows);
    const Tensor ids = Tensor::zeros({rows}, DType::I32);
    const Timing step = best_of(step_runs, [&] {
      const WorkspaceScope scope(ws);
      model.step(ids, state, ws);
    });
    constexpr int64_t kPassWidth = 4096;
    Tensor same_bytes =
        Tensor::zeros({state.bytes() / int64_t(sizeof(float)) / kPassWidth, kPassWidth}, DType::F32, device);
    const Timing pass = best_of(step_runs, [&] { ops::scale(same_bytes, 1.0f, same_bytes); });
    std::printf("| %lld | %.2f | %.3f | %s | %.1f | %.2f |\n", (long long)rows, step.total, step.total / double(rows),
                device == Device::CPU ? "" : three_places(step.queued).c_str(),
                2.0 * double(state.bytes()) / (step.total * 1e6), pass.total);
    std::fflush(stdout);
  }
  if (o.steps_only) return;
  std::printf("\n| work | ms | ms per row | ms to queue it |\n| --- | --- | --- | --- |\n");
  for (int64_t rows : {1, 4, 16}) prefill(rows, 32, 3);
  prefill(1, 16, 5);   // a prefix-cache hit's suffix
  {  // the same, as the server runs it: on the GPU replayed from its recording (the first two record it)
    PrefillGraphs graphs(model);
    ModelState state = model.new_state(1);
    const Tensor ids = Tensor::zeros({1, 16}, DType::I32);
    const auto chunk = [&] {
      const WorkspaceScope scope(ws);
      graphs.forward(ids, state, ws);
    };
    chunk();
    chunk();
    const Timing replayed = best_of(5, chunk);
    row(graphs.replayed() == 5 ? "prefill [1, 16] replayed (state copied in and out)" : "prefill [1, 16] (op by op)",
        replayed, 1);
  }
  prefill(1, 256, 3);  // a chunk of a long prompt
  const ModelState one = model.new_state(1);
  ModelState rows = model.new_state(16);
  int64_t next_row = 0;
  row("copy of a sequence's state", best_of(10, [&] { one.copy_sequence(0, rows, next_row++ % 16); }), 0);
  row("a fresh state of one sequence", best_of(10, [&] { (void)model.new_state(1); }), 0);
  row("a state left unset for a copy (snapshots, hits)", best_of(10, [&] { (void)model.unset_state(one, 1); }), 0);
  // A new server's decode batch growing (twofold) while 64 sequences join, once.
  BatchState batch(model);
  const Timing joins = best_of(1, [&] {
    for (int i = 0; i < 64; ++i) batch.append(one);
  });
  row("64 joins into a new decode batch", joins, 64);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("ssm_serve_costs: the parts of a turn of the server's loop");
  Options o;
  app.add_option("--model", o.shape, "Published shape, or demo: the demo model's (random weights)")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_option("--dtype", o.dtype, "Matrices: f32 (ssm bench's CPU default) or bf16 (the GPU's)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--device", o.device_name, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--step-rows", o.step_rows, "Rows of the decode steps timed")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--step-runs", o.step_runs, "Runs timed per decode step or --prefill (the best is shown)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--steps-only", o.steps_only, "Time only the decode steps (for perf record)");
  app.add_option("--prefill", o.prefill_only, "Time only a prefill of ROWSxTOKENS, such as 8x2048 (for profilers)");
  CLI11_PARSE(app, argc, argv);
  try {
    measure(o);
  } catch (const std::exception& e) {  // one line naming what was wrong (an unknown shape, no GPU, ...)
    std::fprintf(stderr, "ssm_serve_costs: %s\n", e.what());
    return 1;
  }
  return 0;
}
