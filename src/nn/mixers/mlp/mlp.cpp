#include "nn/mixers/mlp/mlp.h"

#include <cmath>

#include "nn/init_util.h"

namespace ssm {

const std::set<std::string>& MlpSettings::config_keys() {
  static const std::set<std::string> keys = {"intermediate_size", "hidden_act", "gated", "mlp_bias"};
  return keys;
}

MlpSettings MlpSettings::from_config(const ConfigReader& r, int64_t d_model) {
  MlpSettings s;
  s.d_model = d_model;
  s.d_ff = r.positive("intermediate_size");
  s.activation = ops::activation_from_name(r.string("hidden_act", "silu"));
  s.gated = r.boolean("gated", true);
  s.bias = r.boolean("mlp_bias", false);
  s.validate(r.source());
  return s;
}

std::string MlpSettings::describe() const {
  return fmt::format("mlp: {} {} of width {}", gated ? "gated" : "plain", ops::activation_name(activation), d_ff);
}

void MlpSettings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && d_ff > 0, "{}: bad MLP sizes (d_model {}, intermediate {})", source, d_model, d_ff);
}

std::unique_ptr<Mixer> MlpSettings::build() const { return std::make_unique<MlpMixer>(*this); }

MlpMixer::MlpMixer(const MlpSettings& settings)
    : s(settings),
      gate_proj(s.d_model, s.d_ff, s.bias),
      up_proj(s.d_model, s.d_ff, s.bias),
      down_proj(s.d_ff, s.d_model, s.bias) {}

void MlpMixer::add_params(const std::string& prefix, ParamList& params) {
  if (s.gated) gate_proj.add_params(prefix + "." + s.gate_name, params);
  up_proj.add_params(prefix + "." + s.up_name, params);
  down_proj.add_params(prefix + "." + s.down_name, params);
}

void MlpMixer::init_parameters(Rng& rng, const InitOptions& o) {
  if (s.gated) init::normal(gate_proj.weight, rng, o.initializer_range);
  init::normal(up_proj.weight, rng, o.initializer_range);
  const double rescale = o.rescale_prenorm_residual ? 1.0 / std::sqrt(double(o.residual_branches)) : 1.0;
  init::normal(down_proj.weight, rng, o.initializer_range * rescale);
  for (Linear* proj : {&gate_proj, &up_proj, &down_proj})
    if (proj->bias.defined()) init::constant(proj->bias, 0.0f);
}

double MlpMixer::matmul_macs_per_token() const { return double(s.d_model) * double(s.d_ff) * (s.gated ? 3 : 2); }

void MlpMixer::apply(const Tensor& x, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  Tensor up = ws.take(with_last(x.shape(), s.d_ff), x.dtype());
  up_proj.forward(x, up);
  if (s.gated) {
    Tensor gate = ws.take(up.shape(), up.dtype());
    gate_proj.forward(x, gate);
    ops::gated_activation(s.activation, gate, up, s.gate_scale, up);
  } else {
    ops::activation(s.activation, up, up);
  }
  down_proj.forward(up, y);
}

void MlpMixer::forward(const Tensor& x, MixerState*, Tensor& y, Workspace& ws) const { apply(x, y, ws); }
void MlpMixer::step(const Tensor& x, MixerState*, Tensor& y, Workspace& ws) const { apply(x, y, ws); }

}  // namespace ssm
