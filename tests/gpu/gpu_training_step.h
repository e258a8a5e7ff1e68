// One training step (TrainingPass::forward_backward) of a small model on the GPU against the same
// model on the CPU, in F32: the loss and every parameter's gradient. For the training faces of the
// mixers whose backward ops run on the GPU.
#pragma once
#include <string>

#include "core/json.h"
#include "gpu/gpu_test_util.h"
#include "model/language_model.h"
#include "train/init.h"
#include "train/model_backward.h"

namespace ssm::gpu_test {

// The step of `gpu` (on the GPU in F32) against `cpu` (on the CPU), the same weights in both.
inline void expect_step_matches_cpu(LanguageModel& cpu, LanguageModel& gpu, int64_t batch, int64_t length,
                                    double grad_tolerance) {
  const int64_t vocab = cpu.config().vocab_size;
  Rng rng(12);
  Tensor ids = Tensor::empty({batch, length}, DType::I32), targets = Tensor::empty({batch, length}, DType::I32);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));
    targets.data<int32_t>()[i] = i % 7 == 3 ? -1 : int32_t(rng.below(uint64_t(vocab)));
  }
  ModelGrads cpu_grads(cpu), gpu_grads(gpu);
  TrainingPass cpu_pass(cpu), gpu_pass(gpu);
  const double cpu_loss = cpu_pass.forward_backward(ids, targets, cpu_grads, 1.0f);
  const double gpu_loss = gpu_pass.forward_backward(ids, targets, gpu_grads, 1.0f);
  EXPECT_NEAR(gpu_loss, cpu_loss, 1e-4 * cpu_loss) << "loss";
  ASSERT_EQ(cpu_grads.params().size(), gpu_grads.params().size());
  for (size_t i = 0; i < cpu_grads.params().size(); ++i) {
    const ParamRef& c = cpu_grads.params()[i];
    const ParamRef& g = gpu_grads.params()[i];
    ASSERT_EQ(c.name, g.name);
    EXPECT_LT(relative_error(to_cpu(gpu_grads.of(*g.tensor)), cpu_grads.of(*c.tensor)), grad_tolerance) << c.name;
  }
}

// The plan's initial weights.
inline void expect_training_step_matches_cpu(const Json& config_json, int64_t batch, int64_t length,
                                             double grad_tolerance) {
  const ModelConfig config = ModelConfig::from_json(config_json, "test config");
  LanguageModel cpu(config), gpu(config);
  init_parameters(cpu, 11);
  init_parameters(gpu, 11);
  gpu.to_device(Device::CUDA, DType::F32);
  expect_step_matches_cpu(cpu, gpu, batch, length, grad_tolerance);
}

}  // namespace ssm::gpu_test
