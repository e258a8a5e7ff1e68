// The MLP's training face on rows of any leading shape: what the MLP mixer and each MoE expert save
// and how they go back.
#pragma once
#include "nn/mixers/mlp/mlp.h"

namespace ssm {

class MlpTraining final : public MixerTraining {
 public:
  explicit MlpTraining(const MlpMixer& mixer) : m_(mixer) {}
  void forward(const Tensor& x, Tensor& y, Workspace& ws, StepProfile* prof) override;
  void backward(const Tensor& dy, Tensor& dx, Gradients& grads, Workspace& ws, StepProfile* prof) override;

 private:
  const MlpMixer& m_;
  Tensor x_, gate_, up_, hidden_;  // projections' outputs (before the activation) and its output
};

}  // namespace ssm
