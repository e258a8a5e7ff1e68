#include "nn/mixers/mlp/mlp_training.h"

#include "ops/ops_backward.h"

namespace ssm {

void MlpTraining::forward(const Tensor& x, Tensor& y, Workspace& ws, StepProfile* prof) {
  const MlpSettings& s = m_.s;
  x_ = x;
  up_ = ws.take(with_last(x.shape(), s.d_ff), x.dtype());
  hidden_ = ws.take(up_.shape(), up_.dtype());
  if (s.gated) gate_ = ws.take(up_.shape(), up_.dtype());
  {
    Timed t(prof, &StepProfile::matmul);
    m_.up_proj.forward(x, up_);
    if (s.gated) m_.gate_proj.forward(x, gate_);
  }
  {
    Timed t(prof, &StepProfile::other);
    if (s.gated) ops::gated_activation(s.activation, gate_, up_, s.gate_scale, hidden_);
    else ops::activation(s.activation, up_, hidden_);
  }
  Timed t(prof, &StepProfile::matmul);
  m_.down_proj.forward(hidden_, y);
}

void MlpTraining::backward(const Tensor& dy, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) {
  WorkspaceScope scope(ws);
  const MlpSettings& s = m_.s;
  Tensor dhidden = ws.take(up_.shape(), up_.dtype());
  {
    Timed t(prof, &StepProfile::matmul);
    ops::linear_backward(hidden_, m_.down_proj.weight, dy, &dhidden, &g.of(m_.down_proj.weight),
                         g.of_optional(m_.down_proj.bias));
  }
  Tensor dup = ws.take(up_.shape(), up_.dtype()), dgate = s.gated ? ws.take(up_.shape(), up_.dtype()) : Tensor();
  {
    Timed t(prof, &StepProfile::other);
    if (s.gated) ops::gated_activation_backward(s.activation, gate_, up_, s.gate_scale, dhidden, &dgate, &dup);
    else ops::activation_backward(s.activation, up_, dhidden, dup);
  }
  Timed t(prof, &StepProfile::matmul);
  ops::linear_backward(x_, m_.up_proj.weight, dup, &dx, &g.of(m_.up_proj.weight), g.of_optional(m_.up_proj.bias));
  if (s.gated)
    ops::linear_backward(x_, m_.gate_proj.weight, dgate, &dx, &g.of(m_.gate_proj.weight),
                         g.of_optional(m_.gate_proj.bias), /*accumulate_dx=*/true);
}

std::unique_ptr<MixerTraining> MlpMixer::training() const { return std::make_unique<MlpTraining>(*this); }

}  // namespace ssm
