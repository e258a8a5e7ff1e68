// Mixed precision with the layers' BF16 matrices made per layer (bf16_working_copy's
// per_layer_matrices) against a kept working copy, on the CPU (ssm_tests) or the GPU (ssm_gpu_tests):
// both round the same master weights to BF16 the same way (ops::convert, AdamW's shadow copies), so
// the losses, every gradient, the master weights after AdamW steps, the validation loss and the
// inference logits are the same bits, while the layers' matrices share two buffers (branch i's in
// buffer i % 2, the next branch's made on a side stream while one runs) and AdamW writes no copy of
// them. Between the steps a validation pass, after a make() that names a next branch which does not
// come, checks that a branch made over a conversion still queued into its buffer waits for it.
#pragma once
#include <gtest/gtest.h>

#include <cstring>
#include <vector>
#include <string>

#include "core/random.h"
#include "model/language_model.h"
#include "train/init.h"
#include "train/mixed_precision.h"
#include "train/model_backward.h"
#include "train/optimizer.h"

namespace ssm::testing {

inline bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to_device(Device::CPU), hb = b.to_device(Device::CPU);
  return ha.shape() == hb.shape() && ha.dtype() == hb.dtype() && std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) == 0;
}

inline void expect_layer_copies_are_exact(const ModelConfig& config, Device device, bool recompute, int64_t batch,
                                          int64_t length) {
  SCOPED_TRACE(::testing::Message() << config.model_type << " on the " << device_name(device)
                                    << (recompute ? ", recompute" : ", everything kept"));
  LanguageModel kept_master(config), made_master(config);
  init_parameters(kept_master, 11);
  init_parameters(made_master, 11);
  kept_master.to_device(device, DType::F32);
  made_master.to_device(device, DType::F32);
  LanguageModel kept = bf16_working_copy(kept_master);
  LanguageModel made = bf16_working_copy(made_master, /*per_layer_matrices=*/true);
  ModelGrads kept_grads(kept), made_grads(made);
  AdamW kept_adamw(optimizer_params(kept_master, kept, kept_grads), {});
  AdamW made_adamw(optimizer_params(made_master, made, made_grads), {});

  // What is made per layer: every branch matrix, in two buffers (the first matrix of branch i at the
  // start of buffer i % 2), with no AdamW copy; every other BF16 tensor is kept and refreshed by AdamW.
  const BranchParamMaker* maker = made.param_maker();
  ASSERT_NE(maker, nullptr);
  const size_t n = made.branches().size();
  ASSERT_GE(n, 3u) << "the check needs two branches in one buffer";
  std::vector<const void*> branch_starts;
  for (const Branch& branch : made.branches()) {
    ParamList params;
    for (const MixerSlot& slot : branch.mixers) slot.mixer->add_params("", params);
    branch_starts.push_back(nullptr);
    for (const ParamRef& p : params) {
      EXPECT_EQ(maker->makes(*p.tensor), p.kind == ParamKind::Matrix) << p.name;
      if (p.kind == ParamKind::Matrix && !branch_starts.back()) branch_starts.back() = p.tensor->raw();
    }
  }
  EXPECT_NE(branch_starts[0], branch_starts[1]) << "neighbouring branches' matrices share a buffer";
  for (size_t i = 2; i < n; ++i)
    EXPECT_EQ(branch_starts[i], branch_starts[i % 2]) << "branch " << i << "'s matrices are not in buffer " << i % 2;
  for (const OptimizerParam& p : made_adamw.params()) {
    const ParamRef* ref = nullptr;
    for (const ParamRef& r : made_grads.params())
      if (r.name == p.name) ref = &r;
    ASSERT_NE(ref, nullptr);
    const bool bf16_kept = ref->tensor->dtype() == DType::BF16 && !maker->makes(*ref->tensor);
    EXPECT_EQ(p.shadow != nullptr, bf16_kept) << p.name;
  }

  Rng rng(12);
  Tensor ids = Tensor::empty({batch, length}, DType::I32), targets = Tensor::empty({batch, length}, DType::I32);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(config.vocab_size)));
    targets.data<int32_t>()[i] = i % 7 == 3 ? -1 : int32_t(rng.below(uint64_t(config.vocab_size)));
  }
  TrainingPass kept_pass(kept, {.recompute = recompute}), made_pass(made, {.recompute = recompute});
  for (int step = 0; step < 3; ++step) {
    kept_grads.zero();
    made_grads.zero();
    const double kept_loss = kept_pass.forward_backward(ids, targets, kept_grads, 0.75f);
    const double made_loss = made_pass.forward_backward(ids, targets, made_grads, 0.75f);
    EXPECT_EQ(std::memcmp(&kept_loss, &made_loss, sizeof(double)), 0)
        << "step " << step << ": loss " << kept_loss << " kept, " << made_loss << " made per layer";
    for (size_t k = 0; k < kept_grads.params().size(); ++k)
      EXPECT_TRUE(same_bits(kept_grads.of(*kept_grads.params()[k].tensor), made_grads.of(*made_grads.params()[k].tensor)))
          << kept_grads.params()[k].name << "'s gradient differs (step " << step << ")";
    kept_adamw.step(1e-2, 0.5f);
    made_adamw.step(1e-2, 0.5f);
    const ParamList a = kept_master.params(), b = made_master.params();
    for (size_t k = 0; k < a.size(); ++k)
      EXPECT_TRUE(same_bits(*a[k].tensor, *b[k].tensor)) << a[k].name << " differs after AdamW step " << step;
    // Branch 1 made, branch 2 named next (queued into buffer 0) but not made: the validation pass
    // then makes branch 0 into buffer 0, after that conversion, and branch 2 again in its turn.
    made.make_branch_params(1, 2);
    const double kept_val = kept_pass.loss(ids, targets, nullptr);
    const double made_val = made_pass.loss(ids, targets, nullptr);
    EXPECT_EQ(std::memcmp(&kept_val, &made_val, sizeof(double)), 0)
        << "validation after step " << step << ": " << kept_val << " kept, " << made_val << " made per layer";
  }
  // The forwards outside the training pass (validation, generation) make the layers' matrices too.
  int64_t kept_counted = 0, made_counted = 0;
  const double kept_val = kept_pass.loss(ids, targets, &kept_counted);
  const double made_val = made_pass.loss(ids, targets, &made_counted);
  EXPECT_EQ(std::memcmp(&kept_val, &made_val, sizeof(double)), 0) << kept_val << " vs " << made_val;
  EXPECT_EQ(kept_counted, made_counted);
  EXPECT_TRUE(same_bits(kept.forward(ids, nullptr, true), made.forward(ids, nullptr, true))) << "logits";
}

}  // namespace ssm::testing
