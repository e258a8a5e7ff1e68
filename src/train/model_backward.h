// Training forward and explicit backward of a LanguageModel (as in llm.c: one forward that saves
// what the backward needs, one backward per layer, no autograd graph).
//
//   h_0 = s_e · embed(ids);  h_{i+1} = h_i + Σ_j o_j · mixer_j(a_j · rmsnorm(h_i));
//   loss = CE(s_l · rmsnorm_f(h_L) · headᵀ, targets)
//
// Each mixer's training face (Mixer::training) saves its activations in the pass's workspace and
// computes its backward. The head and the loss are fused (ops::cross_entropy), so [tokens, vocab]
// logits are never materialised.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/workspace.h"
#include "model/language_model.h"
#include "nn/training.h"

namespace ssm {

// One gradient tensor (F32, zero-initialised) per model parameter, in params() order. A tied head
// shares the embedding's gradient.
class ModelGrads final : public Gradients {
 public:
  explicit ModelGrads(LanguageModel& model);
  Tensor& of(const Tensor& param) override;  // the gradient of a parameter tensor of the model (by identity)
  const ParamList& params() const { return params_; }
  std::vector<Tensor*> tensors();  // every gradient, params() order
  void zero();

 private:
  ParamList params_;
  std::vector<Tensor> grads_;
  std::map<const Tensor*, size_t> index_;
};

struct TrainPassOptions {
  int64_t vocab_chunk = 8192;  // cross-entropy vocabulary chunk
  // Keep fewer activations for the backward and recompute the cheap ones there (each branch's
  // normalised input; a mixer's own, e.g. Mamba-2's conv and gated-norm outputs): the same values from
  // the same ops, so the same gradients, for less memory and a little more time.
  bool recompute = false;
};

// A model whose branch parameters are made on demand (LanguageModel::make_branch_params) has each
// branch's made before its forward and again before its backward.
class TrainingPass {
 public:
  TrainingPass(LanguageModel& model, const TrainPassOptions& options = {});
  // ids, targets: I32 [B, T] (targets < 0 are ignored). Returns the mean loss over counted targets
  // and adds grad_scale × its gradient into `grads`.
  double forward_backward(const Tensor& ids, const Tensor& targets, ModelGrads& grads, float grad_scale = 1.0f,
                          StepProfile* profile = nullptr);
  // The loss alone through the inference forward (no saved activations); `counted` gets the number of
  // targets that count.
  double loss(const Tensor& ids, const Tensor& targets, int64_t* counted = nullptr);

  const Workspace& workspace() const { return ws_; }

 private:
  LanguageModel& model_;
  TrainPassOptions options_;
  Workspace ws_;  // activations: planned by the first step at a shape, reused by every later one
};

}  // namespace ssm
