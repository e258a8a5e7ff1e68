// The mLSTM layer of xLSTM as transformers' `xlstm` (the xLSTM-7B layout, xLSTMLayer with
// weight_mode "single") applies it:
//   q = q(x), k = k(x), v = v(x), o = ogate_preact(x)                no bias
//   i = cap(igate_preact(x)), f = cap(fgate_preact(x))               [H] each, with bias; cap = c·tanh(·/c)
//   h = mlstm(q, k, v, i, f)                                         ops::mlstm, state (C, n, m) per head
//   y = out_proj(σ(o) ⊙ multihead_norm(h))                           LayerNorm per head (weight, no bias)
// The block's pre-norms, residuals and feed-forward are the model's residual branches.
#pragma once
#include <set>

#include "core/config_reader.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "ops/ops.h"

namespace ssm {

// A soft-cap setting: the key's number, 0 (no cap) where the key is null, `fallback` where absent.
double read_soft_cap(const ConfigReader& r, const std::string& key, double fallback);

struct MlstmSettings final : MixerSettings {
  int64_t d_model = 0, n_heads = 8;
  int64_t qk_dim = 0, v_dim = 0;  // all heads together
  double gate_soft_cap = 15.0;    // 0: none
  double eps = 1e-6;              // in the output's denominator
  double norm_eps = 1e-6;         // the per-head LayerNorm's
  int64_t chunk_size = 64;        // of the chunkwise forward (changes rounding only)

  // Keys, as transformers' xLSTMConfig names them (also the project's own `mlstm` section):
  //   num_heads (8), qk_dim_factor (0.5: qk_dim = int(hidden · factor)), v_dim_factor (1.0),
  //   gate_soft_cap (15; null: none), chunk_size (64), eps (1e-6), norm_eps (1e-6).
  static MlstmSettings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();

  int64_t qk_head_dim() const { return qk_dim / n_heads; }
  int64_t v_head_dim() const { return v_dim / n_heads; }
  std::string_view kind() const override { return "mlstm"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

class MlstmState final : public MixerState {
 public:
  MlstmState(int64_t batch, const MlstmSettings& s, Device device);
  void copy_sequence(int64_t from, MixerState& to, int64_t to_index) const override;
  int64_t bytes() const override { return int64_t(storage_.C.nbytes() + storage_.n.nbytes() + storage_.m.nbytes()); }
  bool resizable() const override { return true; }
  void resize(int64_t batch) override;
  StateTensors export_sequence(int64_t index) const override;
  void import_sequence(int64_t index, const StateTensorMap& tensors) override;

  ops::MlstmState state;

 private:
  ops::MlstmState storage_;  // state's tensors are the first B rows of these
};

class MlstmMixer final : public Mixer {
 public:
  explicit MlstmMixer(const MlstmSettings& settings);
  void add_params(const std::string& prefix, ParamList& params) override;
  void init_parameters(Rng& rng, const InitOptions& options) override;
  std::unique_ptr<MixerState> new_state(int64_t batch) const override;
  void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  bool replayable_step() const override { return true; }
  std::unique_ptr<MixerTraining> training() const override;
  double matmul_macs_per_token() const override;

  // The projections of x ([..., D]) into tensors from ws: q, k, v and o, and the gate
  // pre-activations before (i_raw, f_raw) and after the soft cap (i, f: the same tensors without cap).
  struct Projected {
    ops::MlstmInputs in;
    Tensor o, i_raw, f_raw;
  };
  Projected project(const Tensor& x, Workspace& ws) const;
  // y = out_proj(σ(o) ⊙ norm(h)), h F32: `normed` (o's dtype) receives norm(h) and `gated` σ(o) ⊙ norm(h)
  // (they may be one tensor).
  void finish(const Tensor& h, const Tensor& o, Tensor& normed, Tensor& gated, Tensor& y) const;

  const MlstmSettings s;
  Linear query, key, value, ogate, igate, fgate, out_proj;
  Tensor norm_weight;  // multihead_norm.weight [v_dim]
};

}  // namespace ssm
