// Parameter initialisers shared by the mixers (training from scratch), reproducible from an Rng.
#pragma once
#include <cmath>

#include "core/random.h"
#include "core/tensor.h"

namespace ssm::init {

void uniform(Tensor& t, Rng& rng, double bound);  // U(±bound)
void normal(Tensor& t, Rng& rng, double std);     // N(0, std)
void constant(Tensor& t, float value);
// PyTorch's nn.Linear / nn.Conv1d default (kaiming_uniform(a=√5)): U(±1/sqrt(fan_in)).
inline void fan_in_uniform(Tensor& t, Rng& rng, int64_t fan_in, double extra_scale = 1.0) {
  uniform(t, rng, extra_scale / std::sqrt(double(fan_in)));
}
// softplus⁻¹(dt) with dt = exp(U(log dt_min, log dt_max)) floored at dt_floor (mamba_ssm's dt bias).
void dt_bias(Tensor& t, Rng& rng, double dt_min, double dt_max, double dt_floor);

}  // namespace ssm::init
