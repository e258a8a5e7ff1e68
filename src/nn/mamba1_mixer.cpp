#include "nn/mamba1_mixer.h"

#include <cmath>

namespace ssm {

Mamba1Mixer::Mamba1Mixer(const ModelConfig& c)
    : d_model(c.d_model),
      d_inner(c.d_inner),
      d_state(c.d_state),
      d_conv(c.d_conv),
      dt_rank(c.dt_rank),
      has_conv_bias(c.conv_bias),
      in_proj(c.d_model, 2 * c.d_inner, c.proj_bias),
      x_proj(c.d_inner, c.dt_rank + 2 * c.d_state, false),
      dt_proj(c.dt_rank, c.d_inner, true),
      out_proj(c.d_inner, c.d_model, c.proj_bias) {}

void Mamba1Mixer::add_params(const std::string& prefix, ParamList& params) {
  params.push_back({prefix + ".A_log", {d_inner, d_state}, &A_log, ParamKind::Vector, false});
  params.push_back({prefix + ".D", {d_inner}, &D, ParamKind::Vector, false});
  params.push_back({prefix + ".conv1d.weight", {d_inner, 1, d_conv}, &conv_weight, ParamKind::Vector, true});
  if (has_conv_bias) params.push_back({prefix + ".conv1d.bias", {d_inner}, &conv_bias, ParamKind::Vector, false});
  in_proj.add_params(prefix + ".in_proj", params);
  x_proj.add_params(prefix + ".x_proj", params);
  dt_proj.add_params(prefix + ".dt_proj", params);
  out_proj.add_params(prefix + ".out_proj", params);
}

Tensor Mamba1Mixer::A() const {
  Tensor a = Tensor::empty(A_log.shape());
  ops::neg_exp(A_log, a);
  return a;
}

ops::SelectiveScanInputs Mamba1Mixer::scan_inputs(const Tensor& xz, const Tensor& u, const Tensor& x_dbl) const {
  const int64_t axis = xz.dim() - 1;
  Tensor delta = Tensor::empty(u.shape());
  ops::linear(x_dbl.slice(axis, 0, dt_rank), dt_proj.weight, Tensor(), delta);  // bias goes to the scan
  ops::SelectiveScanInputs scan;
  scan.u = u;
  scan.delta = delta;
  scan.delta_bias = dt_proj.bias;
  scan.A = A();
  scan.B = x_dbl.slice(axis, dt_rank, d_state);
  scan.C = x_dbl.slice(axis, dt_rank + d_state, d_state);
  scan.D = D;
  scan.z = xz.slice(axis, d_inner, d_inner);
  return scan;
}

LayerState Mamba1Mixer::new_state(int64_t batch) const {
  return {Tensor::zeros({batch, d_conv - 1, d_inner}), Tensor::zeros({batch, d_inner, d_state})};
}

void Mamba1Mixer::forward(const Tensor& x, LayerState* state, Tensor& y) const {
  const int64_t batch = x.size(0), length = x.size(1);
  Tensor xz = Tensor::empty({batch, length, 2 * d_inner});
  in_proj.forward(x, xz);
  Tensor u = Tensor::empty({batch, length, d_inner});
  ops::conv1d_causal(xz.slice(2, 0, d_inner), conv_weight.view({d_inner, d_conv}), conv_bias, true,
                     state ? &state->conv : nullptr, u);
  Tensor x_dbl = Tensor::empty({batch, length, dt_rank + 2 * d_state});
  x_proj.forward(u, x_dbl);
  Tensor scanned = Tensor::empty({batch, length, d_inner});
  ops::selective_scan(scan_inputs(xz, u, x_dbl), state ? &state->ssm : nullptr, scanned);
  out_proj.forward(scanned, y);
}

void Mamba1Mixer::step(const Tensor& x, LayerState& state, Tensor& y) const {
  const int64_t batch = x.size(0);
  Tensor xz = Tensor::empty({batch, 2 * d_inner});
  in_proj.forward(x, xz);
  Tensor u = Tensor::empty({batch, d_inner});
  ops::conv1d_causal_step(xz.slice(1, 0, d_inner), conv_weight.view({d_inner, d_conv}), conv_bias, true, state.conv,
                          u);
  Tensor x_dbl = Tensor::empty({batch, dt_rank + 2 * d_state});
  x_proj.forward(u, x_dbl);
  Tensor scanned = Tensor::empty({batch, d_inner});
  ops::selective_scan_step(scan_inputs(xz, u, x_dbl), state.ssm, scanned);
  out_proj.forward(scanned, y);
}

}  // namespace ssm
