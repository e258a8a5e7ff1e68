// Mamba-2 mixer (mamba_ssm mamba2.py / transformers Mamba2Mixer): in_proj → [z, xBC, dt],
// conv over xBC, SSD, gated RMSNorm per group, out_proj.
#pragma once
#include "nn/linear.h"
#include "nn/mixer.h"

namespace ssm {

class Mamba2Mixer : public Mixer {
 public:
  explicit Mamba2Mixer(const ModelConfig& config);
  void forward(const Tensor& x, LayerState* state, Tensor& y) const override;
  void step(const Tensor& x, LayerState& state, Tensor& y) const override;
  LayerState new_state(int64_t batch) const override;
  void add_params(const std::string& prefix, ParamList& params) override;

  int64_t d_model, d_inner, d_state, d_conv, n_heads, head_dim, n_groups, chunk_size;
  float dt_limit_min, dt_limit_max, norm_eps;
  bool norm_before_gate;
  bool has_conv_bias;
  Linear in_proj, out_proj;
  Tensor conv_weight;  // [conv_channels, 1, K]
  Tensor conv_bias;    // [conv_channels] or undefined
  Tensor A_log;        // [H]
  Tensor D;            // [H]
  Tensor dt_bias;      // [H]
  Tensor norm_weight;  // [d_inner]

  int64_t conv_channels() const { return d_inner + 2 * n_groups * d_state; }
  Tensor A() const;    // -exp(A_log)
  // Column ranges of in_proj's output.
  int64_t z_offset() const { return 0; }
  int64_t xbc_offset() const { return d_inner; }
  int64_t dt_offset() const { return d_inner + conv_channels(); }
  ops::SsdInputs ssd_inputs(const Tensor& xbc, const Tensor& dt) const;  // slices of the conv output / in_proj
};

}  // namespace ssm
