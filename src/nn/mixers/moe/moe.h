// Mixture-of-experts channel mixer: a router picks top-k experts per token (Jamba: softmax;
// Nemotron-H / DeepSeek-V3: sigmoid with a selection bias and group-limited top-k), each expert (an
// MLP) runs on the tokens routed to it only, and their outputs are summed with the routing weights;
// optionally a shared expert on every token and latent projections around the routed experts.
#pragma once
#include <set>
#include <string>
#include <vector>

#include "core/config_reader.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/mixers/mlp/mlp.h"
#include "ops/ops.h"

namespace ssm {

struct MoeSettings final : MixerSettings {
  int64_t d_model = 0, n_experts = 0;
  ops::MoeRouterOptions router;
  bool correction_bias = false;  // Nemotron-H's e_score_correction_bias
  MlpSettings expert;  // each routed expert (its d_model is the latent size when latent_size > 0)
  MlpSettings shared;  // the shared expert on every token (d_ff 0: none)
  int64_t latent_size = 0;   // Nemotron-H's moe_latent_size: fc1/fc2 latent projections (0: none)
  bool latent_bias = false;
  std::string router_name = "router";  // tensor name of the router ("gate" in Nemotron-H)

  // The project's own section keys: num_experts, num_experts_per_tok, moe_intermediate_size,
  // hidden_act, router ("softmax" | "sigmoid"), norm_topk_prob, routed_scaling_factor, n_group,
  // topk_group, shared_expert_intermediate_size.
  static MoeSettings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();

  std::string_view kind() const override { return "moe"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

class MoeMixer final : public Mixer {
 public:
  explicit MoeMixer(const MoeSettings& settings);
  void add_params(const std::string& prefix, ParamList& params) override;
  void init_parameters(Rng& rng, const InitOptions& options) override;
  void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  std::unique_ptr<MixerTraining> training() const override;
  double matmul_macs_per_token() const override;  // the k routed experts a token visits, shared, router

  const MoeSettings s;
  Linear router;
  Tensor correction_bias;  // [E] (a buffer: loaded and saved, not trained)
  std::vector<MlpMixer> experts;
  std::unique_ptr<MlpMixer> shared;
  Linear fc1_latent, fc2_latent;
};

}  // namespace ssm
