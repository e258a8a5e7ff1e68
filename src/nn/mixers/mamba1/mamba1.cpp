#include "nn/mixers/mamba1/mamba1.h"

#include <cmath>

#include "nn/init_util.h"
#include "nn/mixers/conv_ssm_state.h"

namespace ssm {

std::string Mamba1Settings::describe() const {
  return fmt::format("mamba1: d_inner {}, d_state {}, dt_rank {}, conv {}{}", d_inner, d_state, dt_rank, d_conv,
                     dt_bc_norms ? ", dt/B/C norms" : "");
}

void Mamba1Settings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && d_inner > 0 && d_state > 0 && d_conv >= 1 && dt_rank > 0,
            "{}: bad Mamba-1 sizes (d_model {}, d_inner {}, d_state {}, d_conv {}, dt_rank {})", source, d_model,
            d_inner, d_state, d_conv, dt_rank);
}

const std::set<std::string>& Mamba1Settings::config_keys() {
  static const std::set<std::string> keys = {
      "state_size", "expand", "intermediate_size", "conv_kernel", "time_step_rank", "use_bias", "use_conv_bias",
      "hidden_act", "time_step_min", "time_step_max", "time_step_floor"};
  return keys;
}

Mamba1Settings Mamba1Settings::from_config(const ConfigReader& r, int64_t d_model) {
  const std::string act = r.string("hidden_act", "silu");
  SSM_CHECK(act == "silu" || act == "swish", "{}: hidden_act '{}' is not supported (silu only)", r.source(), act);
  Mamba1Settings s;
  s.d_model = d_model;
  s.d_state = r.positive("state_size", 16);
  s.d_conv = r.positive("conv_kernel", 4);
  s.d_inner = r.positive("intermediate_size", r.positive("expand", 2) * d_model);
  s.dt_rank = r.is_string("time_step_rank") && r.string("time_step_rank", "") == "auto"
                  ? (d_model + 15) / 16
                  : r.positive("time_step_rank", (d_model + 15) / 16);
  s.proj_bias = r.boolean("use_bias", false);
  s.conv_bias = r.boolean("use_conv_bias", true);
  s.dt_init_min = r.number("time_step_min", 0.001);
  s.dt_init_max = r.number("time_step_max", 0.1);
  s.dt_init_floor = r.number("time_step_floor", 1e-4);
  s.validate(r.source());
  return s;
}

std::unique_ptr<Mixer> Mamba1Settings::build() const { return std::make_unique<Mamba1Mixer>(*this); }

Mamba1Mixer::Mamba1Mixer(const Mamba1Settings& settings)
    : s(settings),
      in_proj(s.d_model, 2 * s.d_inner, s.proj_bias),
      x_proj(s.d_inner, s.dt_rank + 2 * s.d_state, false),
      dt_proj(s.dt_rank, s.d_inner, true),
      out_proj(s.d_inner, s.d_model, s.proj_bias) {}

void Mamba1Mixer::add_params(const std::string& prefix, ParamList& params) {
  params.push_back({prefix + ".A_log", {s.d_inner, s.d_state}, &A_log, ParamKind::Vector, false});
  params.push_back({prefix + ".D", {s.d_inner}, &D, ParamKind::Vector, false});
  params.push_back({prefix + ".conv1d.weight", {s.d_inner, 1, s.d_conv}, &conv_weight, ParamKind::Vector, true});
  if (s.conv_bias) params.push_back({prefix + ".conv1d.bias", {s.d_inner}, &conv_bias, ParamKind::Vector, false});
  in_proj.add_params(prefix + ".in_proj", params);
  x_proj.add_params(prefix + ".x_proj", params);
  dt_proj.add_params(prefix + ".dt_proj", params);
  out_proj.add_params(prefix + ".out_proj", params);
  if (s.dt_bc_norms) {
    params.push_back({prefix + ".dt_layernorm.weight", {s.dt_rank}, &dt_norm, ParamKind::Vector, false});
    params.push_back({prefix + ".b_layernorm.weight", {s.d_state}, &b_norm, ParamKind::Vector, false});
    params.push_back({prefix + ".c_layernorm.weight", {s.d_state}, &c_norm, ParamKind::Vector, false});
  }
}

// mamba_ssm: S4D-real A, D = 1, dt bias from the dt range, projections PyTorch's default, out_proj
// rescaled, dt_proj.weight U(±dt_rank^-0.5).
void Mamba1Mixer::init_parameters(Rng& rng, const InitOptions& o) {
  float* a = A_log.data<float>();
  for (int64_t i = 0; i < A_log.numel(); ++i) a[i] = float(std::log(double(i % s.d_state + 1)));
  init::constant(D, 1.0f);
  init::fan_in_uniform(conv_weight, rng, s.d_conv);
  if (conv_bias.defined()) init::fan_in_uniform(conv_bias, rng, s.d_conv);
  init::fan_in_uniform(in_proj.weight, rng, s.d_model);
  init::fan_in_uniform(x_proj.weight, rng, s.d_inner);
  init::uniform(dt_proj.weight, rng, 1.0 / std::sqrt(double(s.dt_rank)));
  init::dt_bias(dt_proj.bias, rng, s.dt_init_min, s.dt_init_max, s.dt_init_floor);
  const double rescale = o.rescale_prenorm_residual ? 1.0 / std::sqrt(double(o.residual_branches)) : 1.0;
  init::fan_in_uniform(out_proj.weight, rng, s.d_inner, rescale);
  for (Tensor* bias : {&in_proj.bias, &out_proj.bias})
    if (bias->defined()) init::constant(*bias, 0.0f);
  for (Tensor* norm : {&dt_norm, &b_norm, &c_norm})
    if (norm->defined()) init::constant(*norm, 1.0f);
}

double Mamba1Mixer::matmul_macs_per_token() const {
  return double(s.d_model) * 2 * s.d_inner + double(s.d_inner) * (s.dt_rank + 2 * s.d_state) +
         double(s.dt_rank) * s.d_inner + double(s.d_inner) * s.d_model;
}

Tensor Mamba1Mixer::A(Workspace& ws) const {
  Tensor a = ws.take(A_log.shape());
  ops::neg_exp(A_log, a);
  return a;
}

void Mamba1Mixer::normalise_dt_bc(Tensor& x_dbl) const {
  if (!s.dt_bc_norms) return;
  const int64_t axis = x_dbl.dim() - 1, R = s.dt_rank, N = s.d_state;
  const float eps = float(s.norm_eps);
  Tensor dt = x_dbl.slice(axis, 0, R), b = x_dbl.slice(axis, R, N), c = x_dbl.slice(axis, R + N, N);
  ops::rmsnorm(dt, dt_norm, eps, dt);
  ops::rmsnorm(b, b_norm, eps, b);
  ops::rmsnorm(c, c_norm, eps, c);
}

ops::SelectiveScanInputs Mamba1Mixer::scan_inputs(const Tensor& xz, const Tensor& u, const Tensor& x_dbl,
                                                  Tensor& delta, const Tensor& A) const {
  ops::linear(x_dbl.slice(x_dbl.dim() - 1, 0, s.dt_rank), dt_proj.weight, Tensor(), delta);  // bias goes to the scan
  ops::SelectiveScanInputs scan = scan_inputs(xz, u, x_dbl, A);
  scan.delta = delta;
  return scan;
}

ops::SelectiveScanInputs Mamba1Mixer::scan_inputs(const Tensor& xz, const Tensor& u, const Tensor& x_dbl,
                                                  const Tensor& A) const {
  const int64_t axis = xz.dim() - 1;
  ops::SelectiveScanInputs scan;
  scan.u = u;
  scan.delta_bias = dt_proj.bias;
  scan.A = A;
  scan.B = x_dbl.slice(axis, s.dt_rank, s.d_state);
  scan.C = x_dbl.slice(axis, s.dt_rank + s.d_state, s.d_state);
  scan.D = D;
  scan.z = xz.slice(axis, s.d_inner, s.d_inner);
  return scan;
}

std::unique_ptr<MixerState> Mamba1Mixer::new_state(int64_t batch) const {
  return std::make_unique<ConvSsmState>(Shape{batch, s.d_conv - 1, s.d_inner}, Shape{batch, s.d_inner, s.d_state},
                                        decode_A(A_log));
}

void Mamba1Mixer::forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  ConvSsmState* st = state ? &state_as<ConvSsmState>(state, "mamba1") : nullptr;
  const int64_t batch = x.size(0), length = x.size(1), Di = s.d_inner;
  Tensor xz = ws.take({batch, length, 2 * Di}, x.dtype());
  in_proj.forward(x, xz);
  Tensor u = ws.take({batch, length, Di}, x.dtype());
  ops::conv1d_causal(xz.slice(2, 0, Di), conv_taps(), conv_bias, true, st ? &st->conv : nullptr, u);
  Tensor x_dbl = ws.take({batch, length, x_proj.out}, x.dtype());
  x_proj.forward(u, x_dbl);
  normalise_dt_bc(x_dbl);
  Tensor delta = ws.take({batch, length, Di}, x.dtype());
  Tensor scanned = ws.take({batch, length, Di}, x.dtype());
  // With a state, its A (made from A_log with the same op when the state was): one kernel fewer a layer.
  ops::selective_scan(scan_inputs(xz, u, x_dbl, delta, st ? st->A : A(ws)), st ? &st->ssm : nullptr, scanned);
  out_proj.forward(scanned, y);
}

void Mamba1Mixer::step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  step_from(x, Tensor(), 0.0f, state, y, false, ws);
}

void Mamba1Mixer::step_in_residual(Tensor& h, const Tensor& norm_weight, float eps, MixerState* state,
                                   Workspace& ws) const {
  step_from(h, norm_weight, eps, state, h, true, ws);
}

void Mamba1Mixer::step_from(const Tensor& x, const Tensor& prenorm, float eps, MixerState* state, Tensor& y,
                            bool accumulate, Workspace& ws) const {
  WorkspaceScope scope(ws);
  ConvSsmState& st = state_as<ConvSsmState>(state, "mamba1");
  const int64_t batch = x.size(0), Di = s.d_inner;
  Tensor xz = ws.take({batch, 2 * Di}, x.dtype());
  ops::LinearConvStep in;
  in.norm_weight = prenorm;
  in.norm_eps = eps;
  in.weight = in_proj.weight;
  in.bias = in_proj.bias;
  in.conv_offset = 0;
  in.conv_weight = conv_taps();
  in.conv_bias = conv_bias;
  ops::linear_conv_step(x, in, st.conv, xz);
  const Tensor u = xz.slice(1, 0, Di);  // the conv's output, in place of in_proj's x half
  Tensor x_dbl = ws.take({batch, x_proj.out}, x.dtype());
  x_proj.forward(u, x_dbl);
  normalise_dt_bc(x_dbl);
  Tensor scanned = ws.take({batch, Di}, x.dtype());
  ops::dt_proj_selective_scan_step(x_dbl.slice(1, 0, s.dt_rank), dt_proj.weight, scan_inputs(xz, u, x_dbl, st.A),
                                   st.ssm, scanned);
  ops::linear(scanned, out_proj.weight, out_proj.bias, y, accumulate);
}

}  // namespace ssm
