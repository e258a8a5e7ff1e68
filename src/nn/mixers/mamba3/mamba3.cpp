#include "nn/mixers/mamba3/mamba3.h"

#include <cmath>
#include <tuple>

#include "nn/init_util.h"
#include "nn/mixers/conv_ssm_state.h"

namespace ssm {

// ---- settings ----

const std::set<std::string>& Mamba3Settings::config_keys() {
  static const std::set<std::string> keys = {"d_state", "expand",  "headdim", "ngroups",  "rope_fraction",
                                             "dt_min",  "dt_max",  "dt_init_floor", "A_floor", "is_outproj_norm",
                                             "is_mimo", "mimo_rank", "fuse_pregate_headwise_norm", "chunk_size",
                                             "dropout"};
  return keys;
}

Mamba3Settings Mamba3Settings::from_config(const ConfigReader& r, int64_t d_model) {
  Mamba3Settings s;
  s.mimo = r.boolean("is_mimo", false);
  s.mimo_rank = s.mimo ? r.positive("mimo_rank", 4) : 1;
  s.d_model = d_model;
  s.d_state = r.positive("d_state", 128);
  s.head_dim = r.positive("headdim", 64);
  s.d_inner = int64_t(r.number("expand", 2) * double(d_model));  // Python's int(expand * d_model)
  s.n_heads = s.head_dim > 0 ? s.d_inner / s.head_dim : 0;
  s.n_groups = r.positive("ngroups", 1);
  s.rope_fraction = r.number("rope_fraction", 0.5);
  SSM_CHECK(s.rope_fraction == 0.5 || s.rope_fraction == 1.0, "{}: rope_fraction must be 0.5 or 1, got {}",
            r.source(), s.rope_fraction);
  const int64_t split = int64_t(double(s.d_state) * s.rope_fraction) / 2 * 2;
  s.n_angles = split / 2;
  s.A_floor = r.number("A_floor", 1e-4);
  s.outproj_norm = r.boolean("is_outproj_norm", false);
  s.chunk_size = r.positive("chunk_size", 64);
  s.dt_init_min = r.number("dt_min", 0.001);
  s.dt_init_max = r.number("dt_max", 0.1);
  s.dt_init_floor = r.number("dt_init_floor", 1e-4);
  s.validate(r.source());
  return s;
}

std::string Mamba3Settings::describe() const {
  return fmt::format("mamba3: {} heads × {}, d_state {} ({} rotary angles), {} group(s){}{}", n_heads, head_dim,
                     d_state, n_angles, n_groups, mimo ? fmt::format(", MIMO rank {}", mimo_rank) : "",
                     outproj_norm ? ", output norm" : "");
}

void Mamba3Settings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && d_inner > 0 && d_state > 0 && head_dim > 0 && chunk_size > 0,
            "{}: bad Mamba-3 sizes (d_model {}, d_inner {}, d_state {}, headdim {}, chunk {})", source, d_model,
            d_inner, d_state, head_dim, chunk_size);
  SSM_CHECK(n_heads > 0 && n_heads * head_dim == d_inner, "{}: Mamba-3 d_inner {} must be a multiple of headdim {}",
            source, d_inner, head_dim);
  SSM_CHECK(n_groups > 0 && n_heads % n_groups == 0, "{}: Mamba-3 heads ({}) must be a multiple of ngroups ({})",
            source, n_heads, n_groups);
  SSM_CHECK(n_angles > 0 && 2 * n_angles <= d_state, "{}: Mamba-3 d_state {} leaves no rotary angle", source, d_state);
  SSM_CHECK(mimo_rank > 0 && (mimo || mimo_rank == 1), "{}: Mamba-3 mimo_rank {} without is_mimo", source, mimo_rank);
  SSM_CHECK(!mimo || d_state % 2 == 0, "{}: MIMO Mamba-3 turns the pairs (j, j + N/2): d_state {} must be even",
            source, d_state);
  SSM_CHECK(std::isfinite(A_floor) && A_floor >= 0, "{}: A_floor must not be negative, got {}", source, A_floor);
}

std::unique_ptr<Mixer> Mamba3Settings::build() const { return std::make_unique<Mamba3Mixer>(*this); }

// ---- state ----

Mamba3State::Mamba3State(int64_t batch, const Mamba3Settings& s, Device device)
    : state(ops::Mamba3State::zeros(batch, s.n_heads, s.head_dim, s.d_state, s.n_angles, s.mimo_rank, device)),
      storage_(state) {}

int64_t Mamba3State::bytes() const {
  return int64_t(storage_.angle.nbytes() + storage_.ssm.nbytes() + storage_.k.nbytes() + storage_.x.nbytes());
}

void Mamba3State::resize(int64_t batch) {
  resize_batch_rows(storage_.angle, state.angle, batch);
  resize_batch_rows(storage_.ssm, state.ssm, batch);
  resize_batch_rows(storage_.k, state.k, batch);
  resize_batch_rows(storage_.x, state.x, batch);
}

void Mamba3State::copy_sequence(int64_t from, MixerState& to, int64_t to_index) const {
  auto& target = state_as<Mamba3State>(&to, "Mamba3State::copy_sequence");
  copy_batch_row(state.angle, from, target.state.angle, to_index);
  copy_batch_row(state.ssm, from, target.state.ssm, to_index);
  copy_batch_row(state.k, from, target.state.k, to_index);
  copy_batch_row(state.x, from, target.state.x, to_index);
}

StateTensors Mamba3State::export_sequence(int64_t index) const {
  return {{"angle", export_row(state.angle, index)},
          {"ssm", export_row(state.ssm, index)},
          {"k", export_row(state.k, index)},
          {"x", export_row(state.x, index)}};
}

void Mamba3State::import_sequence(int64_t index, const StateTensorMap& tensors) {
  import_row(tensors, "angle", state.angle, index, "Mamba3State");
  import_row(tensors, "ssm", state.ssm, index, "Mamba3State");
  import_row(tensors, "k", state.k, index, "Mamba3State");
  import_row(tensors, "x", state.x, index, "Mamba3State");
}

// ---- mixer ----

Mamba3Mixer::Mamba3Mixer(const Mamba3Settings& settings)
    : s(settings), in_proj(s.d_model, s.in_proj_width(), false), out_proj(s.d_inner, s.d_model, false) {}

void Mamba3Mixer::add_params(const std::string& prefix, ParamList& params) {
  in_proj.add_params(prefix + ".in_proj", params);
  params.push_back({prefix + ".dt_bias", {s.n_heads}, &dt_bias, ParamKind::Vector, false});
  params.push_back({prefix + ".B_bias", {s.n_heads, s.mimo_rank, s.d_state}, &B_bias, ParamKind::Vector, false});
  params.push_back({prefix + ".C_bias", {s.n_heads, s.mimo_rank, s.d_state}, &C_bias, ParamKind::Vector, false});
  params.push_back({prefix + ".B_norm.weight", {s.d_state}, &B_norm_weight, ParamKind::Vector, false});
  params.push_back({prefix + ".C_norm.weight", {s.d_state}, &C_norm_weight, ParamKind::Vector, false});
  params.push_back({prefix + ".D", {s.n_heads}, &D, ParamKind::Vector, false});
  if (s.mimo)
    for (auto [name, t] : {std::pair{".mimo_x", &mimo_x}, {".mimo_z", &mimo_z}, {".mimo_o", &mimo_o}})
      params.push_back({prefix + name, {s.n_heads, s.mimo_rank, s.head_dim}, t, ParamKind::Vector, false});
  if (s.outproj_norm) params.push_back({prefix + ".norm.weight", {s.d_inner}, &norm_weight, ParamKind::Vector, false});
  out_proj.add_params(prefix + ".out_proj", params);
}

// mamba_ssm: projections PyTorch's default (out_proj rescaled by the model), dt bias from the dt
// range, B/C biases, norms and D at one; MIMO's mimo_z at one, mimo_x and mimo_o at 1/R.
void Mamba3Mixer::init_parameters(Rng& rng, const InitOptions& o) {
  init::fan_in_uniform(in_proj.weight, rng, s.d_model);
  const double rescale = o.rescale_prenorm_residual ? 1.0 / std::sqrt(double(o.residual_branches)) : 1.0;
  init::fan_in_uniform(out_proj.weight, rng, s.d_inner, rescale);
  init::dt_bias(dt_bias, rng, s.dt_init_min, s.dt_init_max, s.dt_init_floor);
  for (Tensor* t : {&B_bias, &C_bias, &B_norm_weight, &C_norm_weight, &D}) init::constant(*t, 1.0f);
  if (norm_weight.defined()) init::constant(norm_weight, 1.0f);
  if (s.mimo) {
    init::constant(mimo_x, 1.0f / float(s.mimo_rank));
    init::constant(mimo_z, 1.0f);
    init::constant(mimo_o, 1.0f / float(s.mimo_rank));
  }
}

double Mamba3Mixer::matmul_macs_per_token() const {
  return double(s.d_model) * double(s.in_proj_width()) + double(s.d_inner) * double(s.d_model);
}

std::unique_ptr<MixerState> Mamba3Mixer::new_state(int64_t batch) const {
  return std::make_unique<Mamba3State>(batch, s, dt_bias.defined() ? dt_bias.device() : Device::CPU);
}

Tensor Mamba3Mixer::group_rows(const Tensor& t) const { return t.view({t.numel() / s.d_state, s.d_state}); }
Tensor Mamba3Mixer::rank_rows(const Tensor& t) const { return t.view({t.numel() / s.d_inner, s.d_inner}); }

Mamba3Mixer::Projected Mamba3Mixer::project(const Tensor& x, Workspace& ws) const {
  Projected p;
  const int64_t axis = x.dim() - 1, Di = s.d_inner, GN = s.mimo_rank * s.n_groups * s.d_state, H = s.n_heads;
  p.proj = ws.take(with_last(x.shape(), in_proj.out), x.dtype());
  in_proj.forward(x, p.proj);
  int64_t column = 0;
  const auto part = [&](int64_t width) {
    Tensor t = p.proj.slice(axis, column, width);
    column += width;
    return t;
  };
  ops::Mamba3Inputs& in = p.in;
  p.z = part(Di);
  p.x = part(Di);
  const Tensor B = part(GN), C = part(GN);
  in.dt = part(H);
  in.A = part(H);
  in.trap = part(H);
  in.angles = part(s.n_angles);
  for (auto [raw, normed, source, weight] : {std::tuple{&p.B_raw, &in.B, &B, &B_norm_weight},
                                             std::tuple{&p.C_raw, &in.C, &C, &C_norm_weight}}) {
    *raw = ws.take(source->shape(), x.dtype());
    raw->copy_from(*source);
    *normed = ws.take(source->shape(), x.dtype());
    Tensor rows = group_rows(*normed);
    ops::rmsnorm(group_rows(*raw), *weight, kNormEps, rows);
  }
  in.x = p.x;
  p.z_gate = p.z;
  if (s.mimo) {
    const Shape wide = with_last(x.shape(), s.mimo_rank * Di);
    in.x = ws.take(wide, x.dtype());
    ops::mamba3_mimo_expand(p.x, mimo_x, in.x);
    p.z_gate = ws.take(wide, x.dtype());
    ops::mamba3_mimo_expand(p.z, mimo_z, p.z_gate);
  }
  in.dt_bias = dt_bias;
  in.B_bias = B_bias.view({H, s.mimo_rank * s.d_state});
  in.C_bias = C_bias.view({H, s.mimo_rank * s.d_state});
  in.D = D;
  in.n_groups = s.n_groups;
  in.rank = s.mimo_rank;
  in.rotation = s.mimo ? ops::Mamba3Rotation::Halves : ops::Mamba3Rotation::AdjacentPairs;
  in.A_floor = float(s.A_floor);
  in.chunk_size = s.chunk_size;
  return p;
}

Tensor Mamba3Mixer::finish(const Tensor& y, const Tensor& z_gate, Tensor& gated, Tensor& out, Workspace& ws) const {
  if (s.outproj_norm) {
    // One norm group per head of every rank: MIMO's tensors are contiguous, viewed a rank per row.
    const Tensor y_rows = s.mimo ? rank_rows(y) : y, z_rows = s.mimo ? rank_rows(z_gate) : z_gate;
    Tensor gated_rows = s.mimo ? rank_rows(gated) : gated;
    ops::gated_rmsnorm(y_rows, z_rows, norm_weight, s.head_dim, true, kNormEps, gated_rows);
  } else {
    ops::gated_activation(ops::Activation::Silu, z_gate, y, 1.0f, gated);
  }
  Tensor merged = gated;
  if (s.mimo) {
    merged = ws.take(with_last(gated.shape(), s.d_inner), gated.dtype());
    ops::mamba3_mimo_contract(gated, mimo_o, merged);
  }
  out_proj.forward(merged, out);
  return merged;
}

void Mamba3Mixer::forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  const Projected p = project(x, ws);
  Tensor scanned = ws.take(p.in.x.shape(), x.dtype());
  ops::mamba3(p.in, state ? &state_as<Mamba3State>(state, "mamba3").state : nullptr, scanned);
  Tensor gated = ws.take(scanned.shape(), x.dtype());
  finish(scanned, p.z_gate, gated, y, ws);
}

void Mamba3Mixer::step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  const Projected p = project(x, ws);
  Tensor scanned = ws.take(p.in.x.shape(), x.dtype());
  ops::mamba3_step(p.in, state_as<Mamba3State>(state, "mamba3").state, scanned);
  Tensor gated = ws.take(scanned.shape(), x.dtype());
  finish(scanned, p.z_gate, gated, y, ws);
}

}  // namespace ssm
