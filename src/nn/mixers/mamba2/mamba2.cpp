#include "nn/mixers/mamba2/mamba2.h"

#include <algorithm>
#include <cmath>

#include "nn/init_util.h"
#include "nn/mixers/conv_ssm_state.h"

namespace ssm {

namespace {
// The chunked algorithm gives the same result for any chunk length; on the CPU 64 measured ~1.35x
// faster than 256 at the mamba2-130m shape (docs/performance.md).
constexpr int64_t kCpuChunk = 64;
}  // namespace

std::string Mamba2Settings::describe() const {
  return fmt::format("mamba2: {} heads × {}, d_state {}, {} group(s), chunk {}, conv {}{}", n_heads, head_dim,
                     d_state, n_groups, chunk_size, d_conv, gated_norm ? "" : ", no gated norm");
}

void Mamba2Settings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && d_inner > 0 && d_state > 0 && d_conv >= 1 && chunk_size > 0,
            "{}: bad Mamba-2 sizes (d_model {}, d_inner {}, d_state {}, d_conv {}, chunk {})", source, d_model,
            d_inner, d_state, d_conv, chunk_size);
  SSM_CHECK(n_heads > 0 && n_heads * head_dim == d_inner, "{}: Mamba-2 heads ({}) × head_dim ({}) must equal d_inner ({})",
            source, n_heads, head_dim, d_inner);
  SSM_CHECK(n_groups > 0 && n_heads % n_groups == 0, "{}: Mamba-2 heads ({}) must be a multiple of n_groups ({})",
            source, n_heads, n_groups);
  SSM_CHECK(dt_limit_min <= dt_limit_max, "{}: time_step_limit min {} > max {}", source, dt_limit_min, dt_limit_max);
  SSM_CHECK(in_proj_part_scales.empty() || in_proj_part_scales.size() == 5,
            "{}: Mamba-2 in_proj multipliers must be 5 (z, x, B, C, dt), got {}", source, in_proj_part_scales.size());
}

const std::set<std::string>& Mamba2Settings::config_keys() {
  static const std::set<std::string> keys = {
      "state_size", "expand", "head_dim", "num_heads", "n_groups", "chunk_size", "conv_kernel", "use_bias",
      "use_conv_bias", "hidden_act", "time_step_limit", "time_step_min", "time_step_max", "time_step_floor",
      "time_step_rank", "norm_before_gate", "rms_norm", "layer_norm_epsilon"};
  return keys;
}

Mamba2Settings Mamba2Settings::from_config(const ConfigReader& r, int64_t d_model) {
  const std::string act = r.string("hidden_act", "silu");
  SSM_CHECK(act == "silu" || act == "swish", "{}: hidden_act '{}' is not supported (silu only)", r.source(), act);
  SSM_CHECK(r.boolean("rms_norm", true), "{}: rms_norm false (no gated norm) is not supported", r.source());
  Mamba2Settings s;
  s.d_model = d_model;
  s.d_state = r.positive("state_size", 128);
  s.d_conv = r.positive("conv_kernel", 4);
  s.head_dim = r.positive("head_dim", 64);
  const int64_t expanded = r.positive("expand", 2) * d_model;
  s.n_heads = r.positive("num_heads", expanded / s.head_dim);
  s.d_inner = s.n_heads * s.head_dim;  // transformers sizes d_inner as num_heads · head_dim
  s.n_groups = r.positive("n_groups", 1);
  s.chunk_size = r.positive("chunk_size", 256);
  s.in_proj_bias = s.out_proj_bias = r.boolean("use_bias", false);
  s.conv_bias = r.boolean("use_conv_bias", true);
  s.norm_before_gate = r.boolean("norm_before_gate", false);
  s.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  if (r.has("time_step_limit")) {
    const std::vector<double> limit = r.numbers("time_step_limit");
    SSM_CHECK(limit.size() == 2, "{}: time_step_limit must be [min, max]", r.source());
    s.dt_limit_min = limit[0];
    s.dt_limit_max = limit[1];
  }
  s.dt_init_min = r.number("time_step_min", 0.001);
  s.dt_init_max = r.number("time_step_max", 0.1);
  s.dt_init_floor = r.number("time_step_floor", 1e-4);
  s.validate(r.source());
  return s;
}

std::unique_ptr<Mixer> Mamba2Settings::build() const { return std::make_unique<Mamba2Mixer>(*this); }

Mamba2Mixer::Mamba2Mixer(const Mamba2Settings& settings)
    : s(settings),
      in_proj(s.d_model, s.in_proj_width(), s.in_proj_bias),
      out_proj(s.d_inner, s.d_model, s.out_proj_bias) {
  if (!s.in_proj_part_scales.empty()) {
    in_proj_scale = Tensor::empty({s.in_proj_width()});
    const int64_t GN = s.n_groups * s.d_state;
    const int64_t widths[5] = {s.d_inner, s.d_inner, GN, GN, s.n_heads};
    float* p = in_proj_scale.data<float>();
    for (int part = 0, col = 0; part < 5; ++part)
      for (int64_t i = 0; i < widths[part]; ++i) p[col++] = s.in_proj_part_scales[size_t(part)];
  }
}

void Mamba2Mixer::add_params(const std::string& prefix, ParamList& params) {
  params.push_back({prefix + ".A_log", {s.n_heads}, &A_log, ParamKind::Vector, false});
  params.push_back({prefix + ".D", {s.n_heads}, &D, ParamKind::Vector, false});
  params.push_back({prefix + ".dt_bias", {s.n_heads}, &dt_bias, ParamKind::Vector, false});
  params.push_back(
      {prefix + ".conv1d.weight", {s.conv_channels(), 1, s.d_conv}, &conv_weight, ParamKind::Vector, true});
  if (s.conv_bias)
    params.push_back({prefix + ".conv1d.bias", {s.conv_channels()}, &conv_bias, ParamKind::Vector, false});
  in_proj.add_params(prefix + ".in_proj", params);
  if (s.gated_norm) params.push_back({prefix + ".norm.weight", {s.d_inner}, &norm_weight, ParamKind::Vector, false});
  out_proj.add_params(prefix + ".out_proj", params);
}

// mamba_ssm: A = -U(1, 16) per head, D = 1, dt bias from the dt range, projections PyTorch's default,
// out_proj rescaled.
void Mamba2Mixer::init_parameters(Rng& rng, const InitOptions& o) {
  float* a = A_log.data<float>();
  for (int64_t i = 0; i < A_log.numel(); ++i)
    a[i] = float(std::log(double(rng.uniform(float(s.A_init_min), float(s.A_init_max)))));
  init::constant(D, 1.0f);
  init::dt_bias(dt_bias, rng, s.dt_init_min, s.dt_init_max, s.dt_init_floor);
  init::fan_in_uniform(conv_weight, rng, s.d_conv);
  if (conv_bias.defined()) init::fan_in_uniform(conv_bias, rng, s.d_conv);
  init::fan_in_uniform(in_proj.weight, rng, s.d_model);
  if (norm_weight.defined()) init::constant(norm_weight, 1.0f);
  const double rescale = o.rescale_prenorm_residual ? 1.0 / std::sqrt(double(o.residual_branches)) : 1.0;
  init::fan_in_uniform(out_proj.weight, rng, s.d_inner, rescale);
  for (Tensor* bias : {&in_proj.bias, &out_proj.bias})
    if (bias->defined()) init::constant(*bias, 0.0f);
}

void Mamba2Mixer::to_device(Device device) {
  if (in_proj_scale.defined()) in_proj_scale = in_proj_scale.to_device(device);
}

double Mamba2Mixer::matmul_macs_per_token() const {
  return double(s.d_model) * s.in_proj_width() + double(s.d_inner) * s.d_model;
}

Tensor Mamba2Mixer::A(Workspace& ws) const {
  Tensor a = ws.take(A_log.shape());
  ops::neg_exp(A_log, a);
  return a;
}

std::unique_ptr<MixerState> Mamba2Mixer::new_state(int64_t batch) const {
  return std::make_unique<ConvSsmState>(Shape{batch, s.d_conv - 1, s.conv_channels()},
                                        Shape{batch, s.n_heads, s.head_dim, s.d_state}, decode_A(A_log));
}

void Mamba2Mixer::project_in(const Tensor& x, Tensor& zxbcdt) const {
  in_proj.forward(x, zxbcdt);
  if (in_proj_scale.defined()) ops::scale_columns(zxbcdt, in_proj_scale);
}

ops::SsdInputs Mamba2Mixer::ssd_inputs(const Tensor& xbc, const Tensor& dt, const Tensor& A) const {
  const int64_t axis = xbc.dim() - 1, group_width = s.n_groups * s.d_state;
  ops::SsdInputs in;
  in.x = xbc.slice(axis, 0, s.d_inner);
  in.B = xbc.slice(axis, s.d_inner, group_width);
  in.C = xbc.slice(axis, s.d_inner + group_width, group_width);
  in.dt = dt;
  in.dt_bias = dt_bias;
  in.A = A;
  in.D = D;
  in.n_groups = s.n_groups;
  in.dt_min = float(s.dt_limit_min);
  in.dt_max = float(s.dt_limit_max);
  in.chunk_size = std::min<int64_t>(s.chunk_size, kCpuChunk);
  return in;
}

void Mamba2Mixer::gate(const Tensor& y, const Tensor& z, Tensor& out) const {
  if (s.gated_norm)
    ops::gated_rmsnorm(y, z, norm_weight, s.d_inner / s.n_groups, s.norm_before_gate, float(s.norm_eps), out);
  else ops::gated_activation(ops::Activation::Silu, z, y, 1.0f, out);
}

void Mamba2Mixer::forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  ConvSsmState* st = state ? &state_as<ConvSsmState>(state, "mamba2") : nullptr;
  const int64_t batch = x.size(0), length = x.size(1), Cc = s.conv_channels();
  Tensor zxbcdt = ws.take({batch, length, in_proj.out}, x.dtype());
  project_in(x, zxbcdt);
  Tensor xbc = ws.take({batch, length, Cc}, x.dtype());
  ops::conv1d_causal(zxbcdt.slice(2, xbc_offset(), Cc), conv_taps(), conv_bias, true, st ? &st->conv : nullptr, xbc);
  Tensor scanned = ws.take({batch, length, s.d_inner}, x.dtype());
  // With a state, its A (made from A_log with the same op when the state was): one kernel fewer a layer.
  ops::ssd(ssd_inputs(xbc, zxbcdt.slice(2, dt_offset(), s.n_heads), st ? st->A : A(ws)), st ? &st->ssm : nullptr,
           scanned);
  Tensor gated = ws.take({batch, length, s.d_inner}, x.dtype());
  gate(scanned, zxbcdt.slice(2, z_offset(), s.d_inner), gated);
  out_proj.forward(gated, y);
}

void Mamba2Mixer::step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  step_from(x, Tensor(), 0.0f, state, y, false, ws);
}

void Mamba2Mixer::step_in_residual(Tensor& h, const Tensor& norm_weight, float eps, MixerState* state,
                                   Workspace& ws) const {
  step_from(h, norm_weight, eps, state, h, true, ws);
}

void Mamba2Mixer::step_from(const Tensor& x, const Tensor& prenorm, float eps, MixerState* state, Tensor& y,
                            bool accumulate, Workspace& ws) const {
  WorkspaceScope scope(ws);
  ConvSsmState& st = state_as<ConvSsmState>(state, "mamba2");
  const int64_t batch = x.size(0), Cc = s.conv_channels();
  Tensor zxbcdt = ws.take({batch, in_proj.out}, x.dtype());  // the xBC columns leave it through the conv
  ops::LinearConvStep in;
  in.norm_weight = prenorm;
  in.norm_eps = eps;
  in.weight = in_proj.weight;
  in.bias = in_proj.bias;
  in.column_scale = in_proj_scale;
  in.conv_offset = xbc_offset();
  in.conv_weight = conv_taps();
  in.conv_bias = conv_bias;
  ops::linear_conv_step(x, in, st.conv, zxbcdt);
  Tensor scanned = ws.take({batch, s.d_inner}, x.dtype());
  ops::ssd_step(ssd_inputs(zxbcdt.slice(1, xbc_offset(), Cc), zxbcdt.slice(1, dt_offset(), s.n_heads), st.A), st.ssm,
                scanned);
  const Tensor z = zxbcdt.slice(1, z_offset(), s.d_inner);
  if (s.gated_norm) {
    ops::gated_rmsnorm_linear(scanned, z, norm_weight, s.d_inner / s.n_groups, s.norm_before_gate, float(s.norm_eps),
                              out_proj.weight, out_proj.bias, y, accumulate);
  } else {
    Tensor gated = ws.take({batch, s.d_inner}, x.dtype());
    gate(scanned, z, gated);
    ops::linear(gated, out_proj.weight, out_proj.bias, y, accumulate);
  }
}

}  // namespace ssm
