#include "nn/mixers/moe/moe.h"

#include <cmath>

#include "nn/init_util.h"
#include "nn/mixers/moe/moe_routing.h"

namespace ssm {

// ---- settings ----

const std::set<std::string>& MoeSettings::config_keys() {
  static const std::set<std::string> keys = {
      "num_experts", "num_experts_per_tok", "moe_intermediate_size", "hidden_act", "gated", "router",
      "norm_topk_prob", "routed_scaling_factor", "n_group", "topk_group", "shared_expert_intermediate_size"};
  return keys;
}

MoeSettings MoeSettings::from_config(const ConfigReader& r, int64_t d_model) {
  MoeSettings s;
  s.d_model = d_model;
  s.n_experts = r.positive("num_experts");
  s.router.top_k = r.positive("num_experts_per_tok", 2);
  const std::string router = r.string("router", "softmax");
  SSM_CHECK(router == "softmax" || router == "sigmoid", "{}: router must be \"softmax\" or \"sigmoid\", got '{}'",
            r.source(), router);
  s.router.scoring = router == "softmax" ? ops::MoeScoring::Softmax : ops::MoeScoring::Sigmoid;
  s.router.norm_topk_prob = r.boolean("norm_topk_prob", router == "sigmoid");
  s.router.routed_scaling_factor = float(r.number("routed_scaling_factor", 1.0));
  s.router.n_group = r.positive("n_group", 1);
  s.router.topk_group = r.positive("topk_group", s.router.n_group);
  s.correction_bias = router == "sigmoid";
  s.expert.d_model = d_model;
  s.expert.d_ff = r.positive("moe_intermediate_size");
  s.expert.activation = ops::activation_from_name(r.string("hidden_act", "silu"));
  s.expert.gated = r.boolean("gated", true);
  s.shared = s.expert;
  s.shared.d_ff = r.integer("shared_expert_intermediate_size", 0);
  s.validate(r.source());
  return s;
}

std::string MoeSettings::describe() const {
  std::string text = fmt::format("moe: {} experts of width {}, top {}, {} router", n_experts, expert.d_ff,
                                 router.top_k, router.scoring == ops::MoeScoring::Softmax ? "softmax" : "sigmoid");
  if (router.n_group > 1) text += fmt::format(" ({} of {} groups)", router.topk_group, router.n_group);
  if (shared.d_ff > 0) text += fmt::format(", shared expert of width {}", shared.d_ff);
  if (latent_size > 0) text += fmt::format(", latent {}", latent_size);
  return text;
}

void MoeSettings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && n_experts > 0, "{}: bad MoE sizes (d_model {}, experts {})", source, d_model, n_experts);
  SSM_CHECK(router.top_k >= 1 && router.top_k <= n_experts, "{}: num_experts_per_tok {} must be in [1, {}]", source,
            router.top_k, n_experts);
  SSM_CHECK(router.n_group >= 1 && n_experts % router.n_group == 0, "{}: n_group {} must divide the {} experts",
            source, router.n_group, n_experts);
  SSM_CHECK(router.topk_group >= 1 && router.topk_group <= router.n_group, "{}: topk_group {} must be in [1, {}]",
            source, router.topk_group, router.n_group);
  SSM_CHECK(expert.d_model == (latent_size > 0 ? latent_size : d_model), "{}: the experts' width does not match",
            source);
  expert.validate(source);
  if (shared.d_ff > 0) shared.validate(source);
}

std::unique_ptr<Mixer> MoeSettings::build() const { return std::make_unique<MoeMixer>(*this); }

// ---- mixer ----

MoeMixer::MoeMixer(const MoeSettings& settings)
    : s(settings),
      router(s.d_model, s.n_experts, false),
      fc1_latent(s.d_model, s.latent_size, s.latent_bias),
      fc2_latent(s.latent_size, s.d_model, s.latent_bias) {
  experts.reserve(size_t(s.n_experts));
  for (int64_t e = 0; e < s.n_experts; ++e) experts.emplace_back(s.expert);
  if (s.shared.d_ff > 0) shared = std::make_unique<MlpMixer>(s.shared);
}

void MoeMixer::add_params(const std::string& prefix, ParamList& params) {
  router.add_params(prefix + "." + s.router_name, params);
  if (s.correction_bias)
    params.push_back({prefix + "." + s.router_name + ".e_score_correction_bias", {s.n_experts}, &correction_bias,
                      ParamKind::Vector, false});
  for (int64_t e = 0; e < s.n_experts; ++e)
    experts[size_t(e)].add_params(prefix + ".experts." + std::to_string(e), params);
  if (shared) shared->add_params(prefix + ".shared_experts", params);
  if (s.latent_size > 0) {
    fc1_latent.add_params(prefix + ".fc1_latent_proj", params);
    fc2_latent.add_params(prefix + ".fc2_latent_proj", params);
  }
}

void MoeMixer::init_parameters(Rng& rng, const InitOptions& o) {
  init::normal(router.weight, rng, o.initializer_range);
  if (correction_bias.defined()) init::constant(correction_bias, 0.0f);
  for (MlpMixer& expert : experts) expert.init_parameters(rng, o);
  if (shared) shared->init_parameters(rng, o);
  if (s.latent_size > 0) {
    init::normal(fc1_latent.weight, rng, o.initializer_range);
    init::normal(fc2_latent.weight, rng, o.initializer_range);
    for (Linear* proj : {&fc1_latent, &fc2_latent})
      if (proj->bias.defined()) init::constant(proj->bias, 0.0f);
  }
}

double MoeMixer::matmul_macs_per_token() const {
  double macs = double(s.d_model) * double(s.n_experts) + double(s.router.top_k) * experts[0].matmul_macs_per_token();
  if (shared) macs += shared->matmul_macs_per_token();
  if (s.latent_size > 0) macs += 2.0 * double(s.d_model) * double(s.latent_size);
  return macs;
}

void MoeMixer::forward(const Tensor& x_in, MixerState*, Tensor& y_out, Workspace& ws) const {
  WorkspaceScope scope(ws);
  const int64_t M = x_in.rows(), D = s.d_model, k = s.router.top_k, Dx = s.expert.d_model;
  const DType act = x_in.dtype();
  const Tensor x = x_in.view({M, D});
  Tensor y = y_out.view({M, D});
  Tensor logits = ws.take({M, s.n_experts});  // F32 whatever the activations: the routing is exact
  router.forward(x, logits);
  const MoeRouting routing = route_tokens(logits, correction_bias, s.router, ws);
  Tensor latent_in = x;
  if (s.latent_size > 0) {
    latent_in = ws.take({M, Dx}, act);
    fc1_latent.forward(x, latent_in);
  }
  Tensor rows = ws.take({M * k, Dx}, act), outputs = ws.take({M * k, Dx}, act);
  ops::moe_gather(latent_in, routing.plan, 0, rows);
  for (int64_t e = 0; e < s.n_experts; ++e) {
    if (routing.count(e) == 0) continue;
    Tensor out = outputs.slice(0, routing.first(e), routing.count(e));
    experts[size_t(e)].apply(rows.slice(0, routing.first(e), routing.count(e)), out, ws);
  }
  Tensor combined = s.latent_size > 0 ? ws.take({M, Dx}, act) : y;
  ops::fill(combined, 0.0f);
  ops::moe_scatter_add(outputs, routing.weights, routing.plan, 0, combined);
  if (s.latent_size > 0) fc2_latent.forward(combined, y);
  if (shared) {
    Tensor common = ws.take({M, D}, act);
    shared->apply(x, common, ws);
    ops::add_inplace(y, common);
  }
}

void MoeMixer::step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const { forward(x, state, y, ws); }

}  // namespace ssm
