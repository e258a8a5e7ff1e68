#include "nn/mixers/mlstm/mlstm.h"

#include <cmath>

#include "nn/init_util.h"
#include "nn/mixers/conv_ssm_state.h"

namespace ssm {

double read_soft_cap(const ConfigReader& r, const std::string& key, double fallback) {
  if (r.json().contains(key) && r.json()[key].is_null()) return 0.0;
  const double cap = r.number(key, fallback);
  SSM_CHECK(std::isfinite(cap) && cap > 0, "{}: {} must be a positive number or null, got {}", r.source(), key, cap);
  return cap;
}

// ---- settings ----

const std::set<std::string>& MlstmSettings::config_keys() {
  static const std::set<std::string> keys = {"num_heads", "qk_dim_factor", "v_dim_factor", "gate_soft_cap",
                                             "chunk_size", "eps", "norm_eps"};
  return keys;
}

MlstmSettings MlstmSettings::from_config(const ConfigReader& r, int64_t d_model) {
  MlstmSettings s;
  s.d_model = d_model;
  s.n_heads = r.positive("num_heads", 8);
  // Python's int(hidden_size * factor), as xLSTMLayer sizes its projections.
  s.qk_dim = int64_t(double(d_model) * r.number("qk_dim_factor", 0.5));
  s.v_dim = int64_t(double(d_model) * r.number("v_dim_factor", 1.0));
  s.gate_soft_cap = read_soft_cap(r, "gate_soft_cap", 15.0);
  s.chunk_size = r.positive("chunk_size", 64);
  s.eps = r.number("eps", 1e-6);
  s.norm_eps = r.number("norm_eps", 1e-6);
  s.validate(r.source());
  return s;
}

std::string MlstmSettings::describe() const {
  return fmt::format("mlstm: {} heads, q/k {} and v {} per head, gate soft cap {}, chunk {}", n_heads, qk_head_dim(),
                     v_head_dim(), gate_soft_cap > 0 ? fmt::format("{}", gate_soft_cap) : "none", chunk_size);
}

void MlstmSettings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && n_heads > 0, "{}: bad mLSTM sizes (hidden {}, heads {})", source, d_model, n_heads);
  SSM_CHECK(qk_dim > 0 && qk_dim % n_heads == 0 && v_dim > 0 && v_dim % n_heads == 0,
            "{}: the mLSTM q/k width {} and value width {} must be positive multiples of num_heads {}", source, qk_dim,
            v_dim, n_heads);
  SSM_CHECK(chunk_size > 0, "{}: mLSTM chunk_size must be positive, got {}", source, chunk_size);
  SSM_CHECK(std::isfinite(eps) && eps >= 0 && std::isfinite(norm_eps) && norm_eps >= 0,
            "{}: mLSTM eps ({}) and norm_eps ({}) must not be negative", source, eps, norm_eps);
}

std::unique_ptr<Mixer> MlstmSettings::build() const { return std::make_unique<MlstmMixer>(*this); }

// ---- state ----

MlstmState::MlstmState(int64_t batch, const MlstmSettings& s, Device device)
    : state(ops::MlstmState::zeros(batch, s.n_heads, s.qk_head_dim(), s.v_head_dim(), device)), storage_(state) {}

void MlstmState::resize(int64_t batch) {
  resize_batch_rows(storage_.C, state.C, batch);
  resize_batch_rows(storage_.n, state.n, batch);
  resize_batch_rows(storage_.m, state.m, batch);
}

void MlstmState::copy_sequence(int64_t from, MixerState& to, int64_t to_index) const {
  auto& target = state_as<MlstmState>(&to, "MlstmState::copy_sequence");
  copy_batch_row(state.C, from, target.state.C, to_index);
  copy_batch_row(state.n, from, target.state.n, to_index);
  copy_batch_row(state.m, from, target.state.m, to_index);
}

StateTensors MlstmState::export_sequence(int64_t index) const {
  return {{"C", export_row(state.C, index)}, {"n", export_row(state.n, index)}, {"m", export_row(state.m, index)}};
}

void MlstmState::import_sequence(int64_t index, const StateTensorMap& tensors) {
  import_row(tensors, "C", state.C, index, "MlstmState");
  import_row(tensors, "n", state.n, index, "MlstmState");
  import_row(tensors, "m", state.m, index, "MlstmState");
}

// ---- mixer ----

MlstmMixer::MlstmMixer(const MlstmSettings& settings)
    : s(settings),
      query(s.d_model, s.qk_dim, false),
      key(s.d_model, s.qk_dim, false),
      value(s.d_model, s.v_dim, false),
      ogate(s.d_model, s.v_dim, false),
      igate(s.d_model, s.n_heads, true),
      fgate(s.d_model, s.n_heads, true),
      out_proj(s.v_dim, s.d_model, false) {}

void MlstmMixer::add_params(const std::string& prefix, ParamList& params) {
  // The names of the checkpoints (NX-AI's xlstm_large, as transformers 5 saves them).
  query.add_params(prefix + ".q", params);
  key.add_params(prefix + ".k", params);
  value.add_params(prefix + ".v", params);
  ogate.add_params(prefix + ".ogate_preact", params);
  igate.add_params(prefix + ".igate_preact", params);
  fgate.add_params(prefix + ".fgate_preact", params);
  params.push_back({prefix + ".multihead_norm.weight", {s.v_dim}, &norm_weight, ParamKind::Vector, false});
  out_proj.add_params(prefix + ".out_proj", params);
}

// transformers' xLSTM init for the gates: zero weights, input-gate bias −10 (the memory starts
// nearly closed) and forget-gate biases spread over [3, 6] across heads (long to longer memory);
// the projections N(0, initializer_range), out_proj also scaled by 1/sqrt(residual branches) as in
// the engine's other mixers; the norm at one.
void MlstmMixer::init_parameters(Rng& rng, const InitOptions& o) {
  for (Linear* proj : {&query, &key, &value, &ogate}) init::normal(proj->weight, rng, o.initializer_range);
  const double rescale = o.rescale_prenorm_residual ? 1.0 / std::sqrt(double(o.residual_branches)) : 1.0;
  init::normal(out_proj.weight, rng, o.initializer_range * rescale);
  init::constant(igate.weight, 0.0f);
  init::constant(fgate.weight, 0.0f);
  init::constant(igate.bias, -10.0f);
  for (int64_t h = 0; h < s.n_heads; ++h)
    fgate.bias.data<float>()[h] = s.n_heads > 1 ? 3.0f + 3.0f * float(h) / float(s.n_heads - 1) : 3.0f;
  init::constant(norm_weight, 1.0f);
}

double MlstmMixer::matmul_macs_per_token() const {
  return double(s.d_model) * double(2 * s.qk_dim + 2 * s.v_dim + 2 * s.n_heads) + double(s.v_dim) * double(s.d_model);
}

std::unique_ptr<MixerState> MlstmMixer::new_state(int64_t batch) const {
  return std::make_unique<MlstmState>(batch, s, norm_weight.device());
}

MlstmMixer::Projected MlstmMixer::project(const Tensor& x, Workspace& ws) const {
  Projected p;
  ops::MlstmInputs& in = p.in;
  const auto take = [&](int64_t width, DType dtype) { return ws.take(with_last(x.shape(), width), dtype); };
  in.q = take(s.qk_dim, x.dtype());
  in.k = take(s.qk_dim, x.dtype());
  in.v = take(s.v_dim, x.dtype());
  p.o = take(s.v_dim, x.dtype());
  p.i_raw = take(s.n_heads, DType::F32);  // F32 in either mode (ops/cuda/cuda_ops.h says why)
  p.f_raw = take(s.n_heads, DType::F32);
  query.forward(x, in.q);
  key.forward(x, in.k);
  value.forward(x, in.v);
  ogate.forward(x, p.o);
  igate.forward(x, p.i_raw);
  fgate.forward(x, p.f_raw);
  if (s.gate_soft_cap > 0) {
    in.i = take(s.n_heads, DType::F32);
    in.f = take(s.n_heads, DType::F32);
    ops::soft_cap(p.i_raw, float(s.gate_soft_cap), in.i);
    ops::soft_cap(p.f_raw, float(s.gate_soft_cap), in.f);
  } else {
    in.i = p.i_raw;
    in.f = p.f_raw;
  }
  in.n_heads = s.n_heads;
  in.eps = float(s.eps);
  in.chunk_size = s.chunk_size;
  return p;
}

void MlstmMixer::finish(const Tensor& h, const Tensor& o, Tensor& normed, Tensor& gated, Tensor& y) const {
  ops::group_layernorm(h, norm_weight, Tensor(), s.v_head_dim(), float(s.norm_eps), normed);
  ops::gated_activation(ops::Activation::Sigmoid, o, normed, 1.0f, gated);
  out_proj.forward(gated, y);
}

void MlstmMixer::forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  const Projected p = project(x, ws);
  Tensor h = ws.take(with_last(x.shape(), s.v_dim)), normed = ws.take(h.shape(), x.dtype());
  ops::mlstm(p.in, state ? &state_as<MlstmState>(state, "mlstm").state : nullptr, h);
  finish(h, p.o, normed, normed, y);
}

void MlstmMixer::step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  const Projected p = project(x, ws);
  Tensor h = ws.take(with_last(x.shape(), s.v_dim)), normed = ws.take(h.shape(), x.dtype());
  ops::mlstm_step(p.in, state_as<MlstmState>(state, "mlstm").state, h);
  finish(h, p.o, normed, normed, y);
}

}  // namespace ssm
