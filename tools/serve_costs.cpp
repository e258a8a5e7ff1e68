// ssm_serve_costs: what one turn of the server's loop is made of, for a published shape with random
// weights on the CPU: a decode step of B rows, a batched prefill forward of k prompts of 32 tokens, and
// the state copies around them (a sequence's state into another's, a fresh state, a new decode batch
// growing as 64 sequences join). The best of a few
// runs each. It measures; it decides nothing (docs/performance.md, Server, explains the figures).
//
//   build/release/bin/ssm_serve_costs [--model mamba2-130m] [--threads 16] [--dtype f32|bf16]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

#include "bench/random_model.h"
#include "core/threads.h"
#include "core/workspace.h"
#include "infer/batch_state.h"
#include "model/language_model.h"

using namespace ssm;

namespace {

double best_ms(int runs, const std::function<void()>& work) {
  double best = 1e30;
  for (int run = 0; run < runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    work();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("ssm_serve_costs: the parts of a turn of the server's loop");
  std::string shape = "mamba2-130m", dtype = "f32";
  int threads = 0;
  app.add_option("--model", shape, "Published shape (random weights)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_option("--dtype", dtype, "Matrices: f32 (ssm bench's CPU default) or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  const LanguageModel model =
      bench::random_model(bench::published_shape(shape), dtype == "bf16" ? DType::BF16 : DType::F32, 1);
  Workspace ws(Device::CPU);
  std::printf("%s, %s matrices, %d thread(s); state of one sequence %.1f MB\n\n", shape.c_str(), dtype.c_str(),
              num_threads(), double(model.new_state(1).bytes()) / 1e6);
  std::printf("| work | ms | ms per row |\n| --- | --- | --- |\n");
  for (int64_t rows : {1, 8, 16, 32, 64, 128}) {
    ModelState state = model.new_state(rows);
    const Tensor ids = Tensor::zeros({rows}, DType::I32);
    const double ms = best_ms(5, [&] {
      const WorkspaceScope scope(ws);
      model.step(ids, state, ws);
    });
    std::printf("| decode step, %lld rows | %.2f | %.3f |\n", (long long)rows, ms, ms / double(rows));
  }
  for (int64_t rows : {1, 4, 16}) {
    ModelState state = model.new_state(rows);
    const Tensor ids = Tensor::zeros({rows, 32}, DType::I32);
    const double ms = best_ms(3, [&] {
      const WorkspaceScope scope(ws);
      model.forward(ids, &state, false, ws);
    });
    std::printf("| prefill [%lld, 32] | %.2f | %.3f |\n", (long long)rows, ms, ms / double(rows));
  }
  const ModelState one = model.new_state(1);
  ModelState rows = model.new_state(16);
  int64_t row = 0;
  std::printf("| copy of a sequence's state | %.2f | |\n",
              best_ms(10, [&] { one.copy_sequence(0, rows, row++ % 16); }));
  std::printf("| a fresh state of one sequence | %.2f | |\n", best_ms(10, [&] { (void)model.new_state(1); }));
  // A new server's decode batch growing (twofold) while 64 sequences join, once.
  BatchState batch(model);
  const double joins_ms = best_ms(1, [&] {
    for (int i = 0; i < 64; ++i) batch.append(one);
  });
  std::printf("| 64 joins into a new decode batch | %.2f | %.3f |\n", joins_ms, joins_ms / 64);
}
