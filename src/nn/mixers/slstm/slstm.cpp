#include "nn/mixers/slstm/slstm.h"

#include <cmath>

#include "nn/init_util.h"
#include "nn/mixers/conv_ssm_state.h"

namespace ssm {

// ---- settings ----

const std::set<std::string>& SlstmSettings::config_keys() {
  static const std::set<std::string> keys = {"num_heads", "conv1d_kernel_size", "bias_init", "recurrent_weight_init"};
  return keys;
}

SlstmSettings SlstmSettings::from_config(const ConfigReader& r, int64_t d_model) {
  SlstmSettings s;
  s.d_model = d_model;
  s.n_heads = r.positive("num_heads", 4);
  s.conv_kernel = r.integer("conv1d_kernel_size", 4);
  s.bias_init = r.string("bias_init", s.bias_init);
  s.recurrent_weight_init = r.string("recurrent_weight_init", s.recurrent_weight_init);
  s.validate(r.source());
  return s;
}

std::string SlstmSettings::describe() const {
  return fmt::format("slstm: {} heads of {}, conv {}", n_heads, head_dim(),
                     conv_kernel > 0 ? std::to_string(conv_kernel) : "none");
}

void SlstmSettings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && n_heads > 0 && d_model % n_heads == 0,
            "{}: the sLSTM width {} must be a positive multiple of num_heads {}", source, d_model, n_heads);
  SSM_CHECK(conv_kernel >= 0, "{}: sLSTM conv1d_kernel_size must not be negative, got {}", source, conv_kernel);
  SSM_CHECK(bias_init == "powerlaw_blockdependent" || bias_init == "small_init" || bias_init == "standard" ||
                bias_init == "zeros",
            "{}: sLSTM bias_init '{}' is none of powerlaw_blockdependent, small_init, standard, zeros", source,
            bias_init);
  SSM_CHECK(recurrent_weight_init == "zeros" || recurrent_weight_init == "standard",
            "{}: sLSTM recurrent_weight_init '{}' is none of zeros, standard", source, recurrent_weight_init);
}

std::unique_ptr<Mixer> SlstmSettings::build() const { return std::make_unique<SlstmMixer>(*this); }

// ---- state ----

SlstmState::SlstmState(int64_t batch, const SlstmSettings& s, Device device)
    : cell(ops::SlstmState::zeros(batch, s.d_model, device)) {
  if (s.conv_kernel > 0) {
    conv = Tensor::zeros({batch, s.conv_kernel - 1, s.d_model}, DType::F32, device);
    names_.push_back("conv");
    rows_.push_back(&conv);
  }
  for (auto [name, rows] : {std::pair{"c", &cell.c}, {"n", &cell.n}, {"m", &cell.m}, {"h", &cell.h}}) {
    names_.push_back(name);
    rows_.push_back(rows);
  }
  for (Tensor* rows : rows_) storage_.push_back(*rows);
}

int64_t SlstmState::bytes() const {
  int64_t total = 0;
  for (const Tensor& t : storage_) total += int64_t(t.nbytes());
  return total;
}

void SlstmState::resize(int64_t batch) {
  for (size_t i = 0; i < rows_.size(); ++i) resize_batch_rows(storage_[i], *rows_[i], batch);
}

void SlstmState::copy_sequence(int64_t from, MixerState& to, int64_t to_index) const {
  auto& target = state_as<SlstmState>(&to, "SlstmState::copy_sequence");
  for (size_t i = 0; i < rows_.size(); ++i) copy_batch_row(*rows_[i], from, *target.rows_[i], to_index);
}

StateTensors SlstmState::export_sequence(int64_t index) const {
  StateTensors out;
  for (size_t i = 0; i < rows_.size(); ++i) out.emplace_back(names_[i], export_row(*rows_[i], index));
  return out;
}

void SlstmState::import_sequence(int64_t index, const StateTensorMap& tensors) {
  for (size_t i = 0; i < rows_.size(); ++i) import_row(tensors, names_[i], *rows_[i], index, "SlstmState");
}

// ---- mixer ----

SlstmMixer::SlstmMixer(const SlstmSettings& settings)
    : s(settings),
      fgate(s.n_heads, s.head_dim()),
      igate(s.n_heads, s.head_dim()),
      zgate(s.n_heads, s.head_dim()),
      ogate(s.n_heads, s.head_dim()) {}

void SlstmMixer::add_params(const std::string& prefix, ParamList& params) {
  const int64_t D = s.d_model, H = s.n_heads, dh = s.head_dim();
  if (has_conv()) {
    params.push_back({prefix + ".conv1d.conv.weight", {D, 1, s.conv_kernel}, &conv_weight, ParamKind::Vector, true});
    params.push_back({prefix + ".conv1d.conv.bias", {D}, &conv_bias, ParamKind::Vector, false});
  }
  fgate.add_params(prefix + ".fgate", params);
  igate.add_params(prefix + ".igate", params);
  zgate.add_params(prefix + ".zgate", params);
  ogate.add_params(prefix + ".ogate", params);
  // Vector: kept in F32, which ops::slstm reads; R decays like the other weights.
  params.push_back({prefix + ".slstm_cell._recurrent_kernel_", {H, dh, 4 * dh}, &recurrent_kernel, ParamKind::Vector,
                    true});
  params.push_back({prefix + ".slstm_cell._bias_", {4 * D}, &bias, ParamKind::Vector, false});
  params.push_back({prefix + ".group_norm.weight", {D}, &norm_weight, ParamKind::Vector, false});
}

// NX-AI's sLSTMLayer.reset_parameters: gate projections small_init (N(0, 2/(5D))), the conv as
// PyTorch's Conv1d default, R per recurrent_weight_init, biases per bias_init (the forget gate's
// "powerlaw_blockdependent" values depend on the block's place among the model's layers), the norm's
// residual weight at zero (a scale of one).
void SlstmMixer::init_parameters(Rng& rng, const InitOptions& o) {
  const int64_t D = s.d_model, H = s.n_heads, dh = s.head_dim();
  if (has_conv()) {
    init::fan_in_uniform(conv_weight, rng, s.conv_kernel);
    init::fan_in_uniform(conv_bias, rng, s.conv_kernel);
  }
  for (HeadwiseLinear* gate : {&fgate, &igate, &zgate, &ogate})
    init::normal(gate->weight, rng, std::sqrt(2.0 / (5.0 * double(D))));
  if (s.recurrent_weight_init == "zeros") init::constant(recurrent_kernel, 0.0f);
  else init::fan_in_uniform(recurrent_kernel, rng, D);
  if (s.bias_init == "standard") init::fan_in_uniform(bias, rng, D);
  else init::constant(bias, 0.0f);
  const double ratio = o.n_layers > 1 ? double(o.layer) / double(o.n_layers - 1) : 0.0;
  float* b = bias.data<float>();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t k = 0; k < dh; ++k) {
      float& forget = b[(h * 4 + 1) * dh + k];
      const double x = dh > 1 ? double(k) / double(dh - 1) : 0.0;  // NX-AI divides by dh − 1 (NaN at dh = 1)
      if (s.bias_init == "powerlaw_blockdependent") forget = float(-(-5.0 + 12.0 * std::pow(x, 0.3 + 1.3 * ratio)));
      else if (s.bias_init == "small_init") forget = float(3.0 + 3.0 * x);  // linspace(3, 6, dh)
    }
  init::constant(norm_weight, 0.0f);
}

double SlstmMixer::matmul_macs_per_token() const { return 8.0 * double(s.d_model) * double(s.head_dim()); }

std::unique_ptr<MixerState> SlstmMixer::new_state(int64_t batch) const {
  return std::make_unique<SlstmState>(batch, s, norm_weight.device());
}

void SlstmMixer::project(const Tensor& x, const Tensor& xc, Tensor& wx) const {
  const int64_t D = s.d_model;
  const auto gate = [&](int64_t g) { return wx.slice(-1, g * D, D); };
  Tensor i = gate(0), f = gate(1), z = gate(2), o = gate(3);
  fgate.forward(xc, i);
  igate.forward(xc, f);
  zgate.forward(x, z);
  ogate.forward(x, o);
}

ops::SlstmInputs SlstmMixer::cell_inputs(const Tensor& wx) const {
  return {wx, recurrent_kernel, bias, s.n_heads};
}

Tensor SlstmMixer::norm_scale(Workspace& ws) const {
  Tensor scale = ws.take({s.d_model});
  ops::fill(scale, 1.0f);
  ops::add_inplace(scale, norm_weight);
  return scale;
}

void SlstmMixer::forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  SlstmState* st = state ? &state_as<SlstmState>(state, "slstm") : nullptr;
  Tensor xc = x;
  if (has_conv()) {
    xc = ws.take(x.shape(), x.dtype());
    ops::conv1d_causal(x, conv_taps(), conv_bias, true, st ? &st->conv : nullptr, xc);
  }
  // F32 in either mode (ops/cuda/cuda_ops.h says why).
  Tensor wx = ws.take(with_last(x.shape(), 4 * s.d_model)), h = ws.take(x.shape());
  project(x, xc, wx);
  ops::slstm(cell_inputs(wx), st ? &st->cell : nullptr, h);
  ops::group_layernorm(h, norm_scale(ws), Tensor(), s.head_dim(), float(SlstmSettings::kNormEps), y);
}

void SlstmMixer::step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  SlstmState& st = state_as<SlstmState>(state, "slstm");
  Tensor xc = x;
  if (has_conv()) {
    xc = ws.take(x.shape(), x.dtype());
    ops::conv1d_causal_step(x, conv_taps(), conv_bias, true, st.conv, xc);
  }
  // F32 in either mode (ops/cuda/cuda_ops.h says why).
  Tensor wx = ws.take(with_last(x.shape(), 4 * s.d_model)), h = ws.take(x.shape());
  project(x, xc, wx);
  ops::slstm_step(cell_inputs(wx), st.cell, h);
  ops::group_layernorm(h, norm_scale(ws), Tensor(), s.head_dim(), float(SlstmSettings::kNormEps), y);
}

}  // namespace ssm
