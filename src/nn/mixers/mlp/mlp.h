// MLP channel mixer: gated (SwiGLU / GeGLU: down(act(s · gate(x)) ⊙ up(x)); Bamba, Jamba, Falcon-H1)
// or plain (down(act(up(x))); Nemotron-H's relu²). Also the experts of the MoE mixer.
#pragma once
#include <set>

#include "core/config_reader.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "ops/ops.h"

namespace ssm {

struct MlpSettings final : MixerSettings {
  int64_t d_model = 0, d_ff = 0;
  ops::Activation activation = ops::Activation::Silu;
  bool gated = true;
  bool bias = false;
  float gate_scale = 1.0f;  // Falcon-H1's mlp_multipliers[0], on gate_proj's output
  // The projections' names under the mixer's prefix (xLSTM: proj_up_gate, proj_up, proj_down).
  std::string gate_name = "gate_proj", up_name = "up_proj", down_name = "down_proj";

  // The project's own section keys: intermediate_size, hidden_act, gated, mlp_bias.
  static MlpSettings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();

  std::string_view kind() const override { return "mlp"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

class MlpMixer final : public Mixer {
 public:
  explicit MlpMixer(const MlpSettings& settings);
  void add_params(const std::string& prefix, ParamList& params) override;
  void init_parameters(Rng& rng, const InitOptions& options) override;
  void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  std::unique_ptr<MixerTraining> training() const override;
  bool replayable_step() const override { return true; }
  bool replayable_forward() const override { return true; }
  double matmul_macs_per_token() const override;

  // y = mlp(x) for rows x (any leading shape); temporaries from ws.
  void apply(const Tensor& x, Tensor& y, Workspace& ws) const;

  const MlpSettings s;
  Linear gate_proj, up_proj, down_proj;  // gate_proj unused when not gated
};

}  // namespace ssm
