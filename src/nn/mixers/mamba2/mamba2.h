// Mamba-2 mixer (mamba_ssm mamba2.py / transformers Mamba2Mixer, and the Mamba-2 layers of Bamba,
// Falcon-H1 and Nemotron-H): in_proj → [z, xBC, dt]; causal conv + SiLU over xBC; SSD; gated
// RMSNorm per group (or Falcon-H1's plain y·silu(z) gate); out_proj.
#pragma once
#include <limits>
#include <set>
#include <vector>

#include "core/config_reader.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "ops/ops.h"

namespace ssm {

struct Mamba2Settings final : MixerSettings {
  int64_t d_model = 0, d_inner = 0, d_state = 128, d_conv = 4;
  int64_t n_heads = 0, head_dim = 64, n_groups = 1, chunk_size = 256;
  bool conv_bias = true, in_proj_bias = false, out_proj_bias = false;
  double dt_limit_min = 0.0, dt_limit_max = std::numeric_limits<double>::infinity();  // time_step_limit
  bool gated_norm = true;          // false: y · silu(z) without a norm (Falcon-H1's mamba_rms_norm false)
  bool norm_before_gate = false;
  double norm_eps = 1e-5;
  // Falcon-H1's mup_vector: per-column multipliers of in_proj's output, one per part [z, x, B, C, dt]
  // (empty = none).
  std::vector<float> in_proj_part_scales;
  double dt_init_min = 0.001, dt_init_max = 0.1, dt_init_floor = 1e-4;
  double A_init_min = 1.0, A_init_max = 16.0;

  // transformers' Mamba2Config keys (state_size, head_dim, n_groups, chunk_size, ...) read from `r`.
  static Mamba2Settings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();

  int64_t conv_channels() const { return d_inner + 2 * n_groups * d_state; }
  int64_t in_proj_width() const { return 2 * d_inner + 2 * n_groups * d_state + n_heads; }
  std::string_view kind() const override { return "mamba2"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

class Mamba2Mixer final : public Mixer {
 public:
  explicit Mamba2Mixer(const Mamba2Settings& settings);
  void add_params(const std::string& prefix, ParamList& params) override;
  void init_parameters(Rng& rng, const InitOptions& options) override;
  std::unique_ptr<MixerState> new_state(int64_t batch) const override;
  void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step_in_residual(Tensor& h, const Tensor& norm_weight, float eps, MixerState* state,
                        Workspace& ws) const override;
  bool fuses_residual_step() const override { return true; }
  std::unique_ptr<MixerTraining> training() const override;
  bool replayable_step() const override { return true; }
  bool replayable_forward() const override { return true; }
  double matmul_macs_per_token() const override;
  void to_device(Device device) override;

  const Mamba2Settings s;
  Linear in_proj, out_proj;
  Tensor conv_weight;  // [conv_channels, 1, K]
  Tensor conv_bias;    // [conv_channels] or undefined
  Tensor A_log;        // [H]
  Tensor D;            // [H]
  Tensor dt_bias;      // [H]
  Tensor norm_weight;  // [d_inner] (gated_norm)
  Tensor in_proj_scale;  // [in_proj_width]: the part scales spread over columns (undefined = none)

  Tensor conv_taps() const { return conv_weight.view({s.conv_channels(), s.d_conv}); }
  Tensor A(Workspace& ws) const;  // -exp(A_log), in the workspace
  // Column ranges of in_proj's output.
  int64_t z_offset() const { return 0; }
  int64_t xbc_offset() const { return s.d_inner; }
  int64_t dt_offset() const { return s.d_inner + s.conv_channels(); }
  // in_proj's output for rows x (scaled per part when the settings ask).
  void project_in(const Tensor& x, Tensor& zxbcdt) const;
  ops::SsdInputs ssd_inputs(const Tensor& xbc, const Tensor& dt, const Tensor& A) const;
  // The output gate: gated RMSNorm per group, or y · silu(z).
  void gate(const Tensor& y, const Tensor& z, Tensor& out) const;
  // One token from the layer's input x, or from rmsnorm(x, prenorm, eps) where prenorm is defined, into
  // y (accumulate: added to y): in_proj with the norm and the conv (ops::linear_conv_step), the SSD
  // step, the gate with out_proj (ops::gated_rmsnorm_linear): three kernels on the GPU at batch <= 8.
  void step_from(const Tensor& x, const Tensor& prenorm, float eps, MixerState* state, Tensor& y, bool accumulate,
                 Workspace& ws) const;
};

}  // namespace ssm
