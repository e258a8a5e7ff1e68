#include "nn/mamba2_mixer.h"

#include <algorithm>
#include <cmath>

namespace ssm {

namespace {
constexpr int64_t kCpuChunk = 64;
}  // namespace

Mamba2Mixer::Mamba2Mixer(const ModelConfig& c)
    : d_model(c.d_model),
      d_inner(c.d_inner),
      d_state(c.d_state),
      d_conv(c.d_conv),
      n_heads(c.n_heads),
      head_dim(c.head_dim),
      n_groups(c.n_groups),
      chunk_size(c.chunk_size),
      dt_limit_min(float(c.dt_limit_min)),
      dt_limit_max(float(c.dt_limit_max)),
      norm_eps(float(c.norm_eps)),
      norm_before_gate(c.norm_before_gate),
      has_conv_bias(c.conv_bias),
      in_proj(c.d_model, c.in_proj_width(), c.proj_bias),
      out_proj(c.d_inner, c.d_model, c.proj_bias) {}

void Mamba2Mixer::add_params(const std::string& prefix, ParamList& params) {
  params.push_back({prefix + ".A_log", {n_heads}, &A_log, ParamKind::Vector, false});
  params.push_back({prefix + ".D", {n_heads}, &D, ParamKind::Vector, false});
  params.push_back({prefix + ".dt_bias", {n_heads}, &dt_bias, ParamKind::Vector, false});
  params.push_back({prefix + ".conv1d.weight", {conv_channels(), 1, d_conv}, &conv_weight, ParamKind::Vector, true});
  if (has_conv_bias)
    params.push_back({prefix + ".conv1d.bias", {conv_channels()}, &conv_bias, ParamKind::Vector, false});
  in_proj.add_params(prefix + ".in_proj", params);
  params.push_back({prefix + ".norm.weight", {d_inner}, &norm_weight, ParamKind::Vector, false});
  out_proj.add_params(prefix + ".out_proj", params);
}

Tensor Mamba2Mixer::A() const {
  Tensor a = Tensor::empty(A_log.shape());
  ops::neg_exp(A_log, a);
  return a;
}

LayerState Mamba2Mixer::new_state(int64_t batch) const {
  return {Tensor::zeros({batch, d_conv - 1, conv_channels()}), Tensor::zeros({batch, n_heads, head_dim, d_state})};
}

ops::SsdInputs Mamba2Mixer::ssd_inputs(const Tensor& xbc, const Tensor& dt) const {
  const int64_t axis = xbc.dim() - 1, group_width = n_groups * d_state;
  ops::SsdInputs in;
  in.x = xbc.slice(axis, 0, d_inner);
  in.B = xbc.slice(axis, d_inner, group_width);
  in.C = xbc.slice(axis, d_inner + group_width, group_width);
  in.dt = dt;
  in.dt_bias = dt_bias;
  in.A = A();
  in.D = D;
  in.n_groups = n_groups;
  in.dt_min = dt_limit_min;
  in.dt_max = dt_limit_max;
  // The chunked algorithm gives the same result for any chunk length; on the CPU 64 measured ~1.35x
  // faster than 256 at the mamba2-130m shape (docs/performance.md).
  in.chunk_size = std::min<int64_t>(chunk_size, kCpuChunk);
  return in;
}

void Mamba2Mixer::forward(const Tensor& x, LayerState* state, Tensor& y) const {
  const int64_t batch = x.size(0), length = x.size(1);
  Tensor zxbcdt = Tensor::empty({batch, length, in_proj.out});
  in_proj.forward(x, zxbcdt);
  Tensor xbc = Tensor::empty({batch, length, conv_channels()});
  ops::conv1d_causal(zxbcdt.slice(2, xbc_offset(), conv_channels()), conv_weight.view({conv_channels(), d_conv}),
                     conv_bias, true, state ? &state->conv : nullptr, xbc);
  Tensor scanned = Tensor::empty({batch, length, d_inner});
  ops::ssd(ssd_inputs(xbc, zxbcdt.slice(2, dt_offset(), n_heads)), state ? &state->ssm : nullptr, scanned);
  Tensor normed = Tensor::empty({batch, length, d_inner});
  ops::gated_rmsnorm(scanned, zxbcdt.slice(2, z_offset(), d_inner), norm_weight, d_inner / n_groups,
                     norm_before_gate, norm_eps, normed);
  out_proj.forward(normed, y);
}

void Mamba2Mixer::step(const Tensor& x, LayerState& state, Tensor& y) const {
  const int64_t batch = x.size(0);
  Tensor zxbcdt = Tensor::empty({batch, in_proj.out});
  in_proj.forward(x, zxbcdt);
  Tensor xbc = Tensor::empty({batch, conv_channels()});
  ops::conv1d_causal_step(zxbcdt.slice(1, xbc_offset(), conv_channels()), conv_weight.view({conv_channels(), d_conv}),
                          conv_bias, true, state.conv, xbc);
  Tensor scanned = Tensor::empty({batch, d_inner});
  ops::ssd_step(ssd_inputs(xbc, zxbcdt.slice(1, dt_offset(), n_heads)), state.ssm, scanned);
  Tensor normed = Tensor::empty({batch, d_inner});
  ops::gated_rmsnorm(scanned, zxbcdt.slice(1, z_offset(), d_inner), norm_weight, d_inner / n_groups,
                     norm_before_gate, norm_eps, normed);
  out_proj.forward(normed, y);
}

}  // namespace ssm
