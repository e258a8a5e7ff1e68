#include "train/bench.h"

#include <chrono>

#include "core/random.h"
#include "core/threads.h"
#include "train/init.h"
#include "train/mixed_precision.h"
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
                                int64_t steps, int64_t warmup, Device device, bool mixed, bool recompute) {
  LanguageModel model(config);
  init_parameters(model, 1);
  if (device != Device::CPU) model.to_device(device, DType::F32);
  std::unique_ptr<LanguageModel> bf16_copy;
  if (mixed) bf16_copy = std::make_unique<LanguageModel>(bf16_working_copy(model, recompute));
  LanguageModel& working = mixed ? *bf16_copy : model;
  ModelGrads grads(working);
  AdamW opt(optimizer_params(model, working, grads), {});
  TrainingPass pass(working, {.recompute = recompute});
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
  r.device = device;
  r.mixed = mixed;
  r.recompute = recompute;
  // The backward's two products (inputs' and weights' gradients) for each of the forward's; recomputed
  // forwards (--recompute) are not counted, as a model's FLOPs are.
  const double macs_per_token = model.matmul_macs_per_token() + double(config.vocab_size) * double(config.d_model);
  r.matmul_flops = 3 * 2 * macs_per_token * double(batch * seq_len);
  const std::vector<Tensor*> g = grads.tensors();
  // One step; with a profile, the forward + backward split by kind and the optimizer's time.
  auto step = [&](StepProfile* prof) {
    grads.zero();
    pass.forward_backward(ids, targets, grads, 1.0f, prof);
    const auto t1 = Clock::now();
    opt.step(1e-4, clip_factor(grad_norm(g), 1.0));
    if (prof) {
      synchronize(device);
      r.optimizer_seconds = since(t1);
    }
  };
  for (int64_t s = 0; s < warmup; ++s) step(nullptr);
  synchronize(device);
  reset_device_peak_bytes();
  const auto t0 = Clock::now();
  for (int64_t s = 0; s < steps; ++s) step(nullptr);
  synchronize(device);
  r.step_seconds = since(t0) / double(steps);
  r.peak_device_bytes = double(device_peak_bytes());
  r.peak_used_bytes = double(device_peak_used_bytes());
  r.profile.device = device;
  step(&r.profile);
  r.tokens_per_second = double(batch * seq_len) / r.step_seconds;
  return r;
}

std::string bench_table(const std::vector<TrainBenchResult>& results) {
  std::string out =
      "| model | where | batch x length | tokens/s | step (ms) | matmul | mixing | conv | norms/other | optimizer | "
      "matmul TFLOP/s |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& r : results) {
    // Shares of the profiled step (its pieces wait for their kernels, so they add up to it).
    const double s = r.profile.total() + r.optimizer_seconds;
    auto pct = [&](double v) { return fmt::format("{:.0f}%", 100.0 * v / s); };
    const std::string where =
        r.device == Device::CPU ? fmt::format("{} threads", r.threads)
                                : fmt::format("GPU {}, peak {:.1f} GiB ({:.1f} in use)", r.mixed ? "bf16" : "f32",
                                              r.peak_device_bytes / double(1 << 30), r.peak_used_bytes / double(1 << 30));
    const std::string model = r.recompute ? r.name + " (--recompute)" : r.name;
    out += fmt::format("| {} | {} | {} x {} | {:.0f} | {:.1f} | {} | {} | {} | {} | {} | {:.3g} |\n", model, where,
                       r.batch, r.seq_len, r.tokens_per_second, 1000 * r.step_seconds, pct(r.profile.matmul),
                       pct(r.profile.mixing), pct(r.profile.conv), pct(r.profile.other), pct(r.optimizer_seconds),
                       r.matmul_flops_per_second() / 1e12);
  }
  return out;
}

}  // namespace ssm
