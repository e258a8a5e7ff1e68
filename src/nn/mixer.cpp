// The Mixer interface's default behaviour (nn/mixer.h).
#include "nn/mixer.h"

#include "ops/ops.h"

namespace ssm {

void Mixer::step_in_residual(Tensor& h, const Tensor& norm_weight, float eps, MixerState* state, Workspace& ws) const {
  WorkspaceScope scope(ws);
  Tensor normed = ws.take(h.shape(), h.dtype()), out = ws.take(h.shape(), h.dtype());
  ops::rmsnorm(h, norm_weight, eps, normed);
  step(normed, state, out, ws);
  ops::add_inplace(h, out);
}

}  // namespace ssm
