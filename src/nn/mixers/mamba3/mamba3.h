// Mamba-3 mixer (mamba_ssm modules/mamba3.py, Mamba3), SISO (is_mimo false) or MIMO of rank R:
//   in_proj(u) → [z, x, B, C, dd_dt, dd_A, trap, angles]   widths Di, Di, R·G·N, R·G·N, H, H, H, S (no bias)
//   B = B_norm(B), C = C_norm(C)                            RMSNorm over each (rank, group)'s N (eps 1e-5)
//   MIMO: x_r = x ⊙ mimo_x[:, r], z_r = z ⊙ mimo_z[:, r]    per head channel (ops::mamba3_mimo_expand)
//   y_r = mamba3(x_r, B, C, dd_dt, dd_A, trap, angles)      ops::mamba3: dt_bias, B_bias, C_bias, D, A_floor
//   y_r = y_r · silu(z_r), or with is_outproj_norm norm(y_r, z_r) = rmsnorm_head(y_r) · w · silu(z_r) per head
//   MIMO: y = Σ_r y_r ⊙ mimo_o[:, r]                        (ops::mamba3_mimo_contract)
//   out = out_proj(y)                                       (no bias)
// Di = expand · d_model, H = Di / headdim, G = ngroups, N = d_state, R = mimo_rank (1 for SISO);
// S = num_rope_angles: with split = int(N · rope_fraction) rounded down to even, S = split / 2
// (rope_fraction 0.5 or 1). SISO turns adjacent channel pairs, MIMO the pairs (j, j + N/2) (mamba_ssm's
// TileLang kernels; ops::Mamba3Rotation). There is no short convolution. Checkpoint tensors under the
// mixer prefix: in_proj.weight [W, D], dt_bias [H], B_bias and C_bias [H, R, N], B_norm.weight and
// C_norm.weight [N], D [H], mimo_x, mimo_z and mimo_o [H, R, P] (MIMO only), norm.weight [Di]
// (is_outproj_norm only), out_proj.weight [D, Di].
// The decode state is mamba_ssm's (angle, ssm, k, v): ops::Mamba3State (v: the ranks' x_r).
#pragma once
#include <set>

#include "core/config_reader.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "ops/ops.h"

namespace ssm {

struct Mamba3Settings final : MixerSettings {
  int64_t d_model = 0, d_inner = 0, d_state = 128, n_heads = 0, head_dim = 64, n_groups = 1;
  int64_t n_angles = 0;      // S
  double rope_fraction = 0.5;
  double A_floor = 1e-4;
  bool outproj_norm = false;  // is_outproj_norm
  bool mimo = false;          // is_mimo
  int64_t mimo_rank = 1;      // R (1 when not mimo)
  int64_t chunk_size = 64;    // of the chunked forward and the backward (changes rounding only)
  double dt_init_min = 0.001, dt_init_max = 0.1, dt_init_floor = 1e-4;

  // mamba_ssm's Mamba3 keyword arguments (ssm_cfg, and the project's own `mamba3` section):
  // d_state (128), expand (2), headdim (64), ngroups (1), rope_fraction (0.5), dt_min, dt_max,
  // dt_init_floor, A_floor (1e-4), is_outproj_norm (false), is_mimo (false), mimo_rank (4, read with
  // is_mimo only, as mamba_ssm does), fuse_pregate_headwise_norm (a kernel choice: the same function),
  // chunk_size (64).
  static Mamba3Settings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();

  int64_t in_proj_width() const { return 2 * d_inner + 2 * mimo_rank * n_groups * d_state + 3 * n_heads + n_angles; }
  std::string_view kind() const override { return "mamba3"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

class Mamba3State final : public MixerState {
 public:
  Mamba3State(int64_t batch, const Mamba3Settings& s, Device device);
  void copy_sequence(int64_t from, MixerState& to, int64_t to_index) const override;
  int64_t bytes() const override;
  bool resizable() const override { return true; }
  void resize(int64_t batch) override;
  StateTensors export_sequence(int64_t index) const override;
  void import_sequence(int64_t index, const StateTensorMap& tensors) override;

  ops::Mamba3State state;

 private:
  ops::Mamba3State storage_;  // state's tensors are the first B rows of these
};

class Mamba3Mixer final : public Mixer {
 public:
  explicit Mamba3Mixer(const Mamba3Settings& settings);
  void add_params(const std::string& prefix, ParamList& params) override;
  void init_parameters(Rng& rng, const InitOptions& options) override;
  std::unique_ptr<MixerState> new_state(int64_t batch) const override;
  bool replayable_step() const override { return true; }
  void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  std::unique_ptr<MixerTraining> training() const override;
  double matmul_macs_per_token() const override;

  // in_proj's output split into the op's inputs (B and C normalised, in contiguous tensors from ws;
  // their raw copies in B_raw, C_raw), x and z as in_proj gives them, and the gate's z (z, or MIMO's
  // ranks z_r from ws). MIMO: in.x holds the ranks' x_r (from ws).
  struct Projected {
    Tensor proj, x, z, z_gate, B_raw, C_raw;
    ops::Mamba3Inputs in;
  };
  Projected project(const Tensor& x, Workspace& ws) const;
  // gated = the output gate of y and z_gate (see the header); out = out_proj(merged), merged = gated
  // (SISO) or MIMO's Σ_r gated_r ⊙ mimo_o[:, r] (from ws), which it returns.
  Tensor finish(const Tensor& y, const Tensor& z_gate, Tensor& gated, Tensor& out, Workspace& ws) const;
  // A contiguous [..., R·Di] tensor viewed as one row per rank ([rows · R, Di]), for the output norm.
  Tensor rank_rows(const Tensor& t) const;
  // A contiguous [..., G·N] tensor viewed as one row per group ([rows · G, N]), for the B/C norms.
  Tensor group_rows(const Tensor& t) const;

  static constexpr float kNormEps = 1e-5f;  // of B_norm, C_norm and the output norm (mamba_ssm fixes it)

  const Mamba3Settings s;
  Linear in_proj, out_proj;
  Tensor dt_bias;                    // [H]
  Tensor B_bias, C_bias;             // [H, R, N]
  Tensor B_norm_weight, C_norm_weight;  // [N]
  Tensor D;                          // [H]
  Tensor norm_weight;                // [Di] (outproj_norm)
  Tensor mimo_x, mimo_z, mimo_o;     // [H, R, P] (mimo)
};

}  // namespace ssm
