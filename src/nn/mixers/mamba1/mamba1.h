// Mamba-1 mixer (mamba_ssm mamba_simple.py / transformers MambaMixer; Jamba's variant adds RMSNorms
// over dt, B and C after x_proj): in_proj → [x, z]; causal conv + SiLU on x; x_proj → [dt, B, C];
// Δ = softplus(dt_proj(dt)); selective scan with D skip and silu(z) gate; out_proj.
#pragma once
#include <set>

#include "core/config_reader.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "ops/ops.h"

namespace ssm {

struct Mamba1Settings final : MixerSettings {
  int64_t d_model = 0, d_inner = 0, d_state = 16, d_conv = 4, dt_rank = 0;
  bool conv_bias = true, proj_bias = false;
  bool dt_bc_norms = false;  // Jamba: dt_layernorm, b_layernorm, c_layernorm
  double norm_eps = 1e-6;    // of those norms
  double dt_init_min = 0.001, dt_init_max = 0.1, dt_init_floor = 1e-4;

  // transformers' MambaConfig keys (state_size, expand, conv_kernel, time_step_rank, ...) read from `r`.
  static Mamba1Settings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();

  std::string_view kind() const override { return "mamba1"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

class Mamba1Mixer final : public Mixer {
 public:
  explicit Mamba1Mixer(const Mamba1Settings& settings);
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

  const Mamba1Settings s;
  Linear in_proj, x_proj, dt_proj, out_proj;
  Tensor conv_weight;  // [d_inner, 1, K]
  Tensor conv_bias;    // [d_inner] or undefined
  Tensor A_log;        // [d_inner, N]
  Tensor D;            // [d_inner]
  Tensor dt_norm, b_norm, c_norm;  // Jamba's norm weights [dt_rank], [N], [N] (dt_bc_norms)

  Tensor conv_taps() const { return conv_weight.view({s.d_inner, s.d_conv}); }
  // A = -exp(A_log), in the workspace.
  Tensor A(Workspace& ws) const;
  // x_proj's output [.., R + 2N] with Jamba's norms applied in place (no-op without them).
  void normalise_dt_bc(Tensor& x_dbl) const;
  // Scan inputs from in_proj's output xz, the conv output u and x_proj's (normalised) output x_dbl;
  // computes the pre-bias Δ into `delta`.
  ops::SelectiveScanInputs scan_inputs(const Tensor& xz, const Tensor& u, const Tensor& x_dbl, Tensor& delta,
                                       const Tensor& A) const;
  // The same with Δ left undefined (ops::dt_proj_selective_scan_step computes it).
  ops::SelectiveScanInputs scan_inputs(const Tensor& xz, const Tensor& u, const Tensor& x_dbl, const Tensor& A) const;
  // One token from the layer's input x, or from rmsnorm(x, prenorm, eps) where prenorm is defined, into
  // y (accumulate: added to y): in_proj with the norm and the conv (ops::linear_conv_step), x_proj,
  // dt_proj with the scan step (ops::dt_proj_selective_scan_step), out_proj: four kernels on the GPU
  // at batch <= 8.
  void step_from(const Tensor& x, const Tensor& prenorm, float eps, MixerState* state, Tensor& y, bool accumulate,
                 Workspace& ws) const;
};

}  // namespace ssm
