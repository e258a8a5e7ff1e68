#include "train/bench.h"

#include <chrono>

#include "core/random.h"
#include "core/threads.h"
#include "train/init.h"
#include "train/optimizer.h"

namespace ssm {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

ModelConfig demo_model_config() {
  return ModelConfig::from_json(Json{{"model_type", "mamba2"},
                                     {"hidden_size", 128},
                                     {"num_hidden_layers", 4},
                                     {"vocab_size", 256},
                                     {"state_size", 32},
                                     {"expand", 2},
                                     {"head_dim", 32},
                                     {"n_groups", 1},
                                     {"conv_kernel", 4},
                                     {"chunk_size", 64}},
                                "demo model");
}

TrainBenchResult bench_training(const ModelConfig& config, const std::string& name, int64_t batch, int64_t seq_len,
                                int64_t steps, int64_t warmup) {
  LanguageModel model(config);
  init_parameters(model, 1);
  ModelGrads grads(model);
  std::vector<OptimizerParam> params;
  for (const ParamRef& p : grads.params()) params.push_back({p.name, p.tensor, &grads.of(*p.tensor), p.weight_decay});
  AdamW opt(params, {});
  TrainingPass pass(model);
  Tensor ids = Tensor::empty({batch, seq_len}, DType::I32), targets = Tensor::empty({batch, seq_len}, DType::I32);
  Rng rng(3);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(config.vocab_size)));
    targets.data<int32_t>()[i] = int32_t(rng.below(uint64_t(config.vocab_size)));
  }
  TrainBenchResult r;
  r.name = name;
  r.threads = num_threads();
  r.batch = batch;
  r.seq_len = seq_len;
  const std::vector<Tensor*> g = grads.tensors();
  double total = 0;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    const bool timed = s >= warmup;
    StepProfile prof;
    const auto t0 = Clock::now();
    grads.zero();
    pass.forward_backward(ids, targets, grads, 1.0f, timed ? &prof : nullptr);
    const auto t1 = Clock::now();
    clip_grad_norm(g, 1.0);
    opt.step(1e-4);
    if (!timed) continue;
    total += since(t0);
    r.optimizer_seconds += since(t1);
    r.profile.matmul += prof.matmul;
    r.profile.mixing += prof.mixing;
    r.profile.conv += prof.conv;
    r.profile.other += prof.other;
  }
  const double n = double(steps);
  r.step_seconds = total / n;
  r.optimizer_seconds /= n;
  r.profile.matmul /= n;
  r.profile.mixing /= n;
  r.profile.conv /= n;
  r.profile.other /= n;
  r.tokens_per_second = double(batch * seq_len) / r.step_seconds;
  return r;
}

std::string bench_table(const std::vector<TrainBenchResult>& results) {
  std::string out =
      "| model | threads | batch x length | tokens/s | step (ms) | matmul | mixing | conv | norms/other | optimizer |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& r : results) {
    const double s = r.step_seconds;
    auto pct = [&](double v) { return fmt::format("{:.0f}%", 100.0 * v / s); };
    out += fmt::format("| {} | {} | {} x {} | {:.0f} | {:.1f} | {} | {} | {} | {} | {} |\n", r.name, r.threads, r.batch,
                       r.seq_len, r.tokens_per_second, 1000 * s, pct(r.profile.matmul), pct(r.profile.mixing),
                       pct(r.profile.conv), pct(r.profile.other), pct(r.optimizer_seconds));
  }
  return out;
}

}  // namespace ssm
