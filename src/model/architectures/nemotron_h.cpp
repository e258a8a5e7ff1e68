// transformers' `nemotron_h` (NVIDIA Nemotron-H): one pre-norm residual block per entry of
// layers_block_type — Mamba-2 ("M"), attention without positional encoding ("*"), a relu² MLP ("-")
// or a sigmoid-routed MoE with a selection bias, group-limited top-k and a shared expert ("E").
#include <algorithm>

#include "model/architectures/architectures.h"
#include "core/json.h"
#include "model/architectures/hybrid_parts.h"
#include "nn/mixers/moe/moe.h"

namespace ssm::arch {

namespace {

// The block kinds, from layers_block_type or the legacy hybrid_override_pattern string.
std::vector<char> block_pattern(const ConfigReader& r) {
  std::vector<char> pattern;
  if (r.has("layers_block_type")) {
    SSM_CHECK(r.json()["layers_block_type"].is_array(), "{}: layers_block_type must be a list", r.source());
    for (const Json& kind : r.json()["layers_block_type"]) {
      const std::string name = kind.is_string() ? kind.get<std::string>() : json_excerpt(kind);
      if (name == "linear_attention" || name == "mamba") pattern.push_back('M');
      else if (name == "full_attention" || name == "attention") pattern.push_back('*');
      else if (name == "mlp") pattern.push_back('-');
      else if (name == "moe") pattern.push_back('E');
      else fail("{}: unknown layer kind '{}' in layers_block_type (mamba, attention, mlp, moe)", r.source(), name);
    }
  } else {
    const std::string text = r.string("hybrid_override_pattern", "");
    for (char kind : text) {
      SSM_CHECK(kind == 'M' || kind == '*' || kind == '-' || kind == 'E',
                "{}: unknown layer kind '{}' in hybrid_override_pattern (M, *, -, E)", r.source(), kind);
      pattern.push_back(kind);
    }
  }
  SSM_CHECK(!pattern.empty(), "{}: layers_block_type (or hybrid_override_pattern) names no layers", r.source());
  return pattern;
}

}  // namespace

void read_nemotron_h(const ConfigReader& r, ModelConfig& c) {
  static const std::set<std::string> keys = {
      "vocab_size", "hidden_size", "layers_block_type", "hybrid_override_pattern", "num_hidden_layers",
      "num_attention_heads", "num_key_value_heads", "head_dim", "attention_head_dim", "attention_bias",
      "sliding_window", "intermediate_size", "mlp_hidden_act", "mlp_bias", "ssm_state_size", "mamba_num_heads",
      "mamba_head_dim", "mamba_hidden_act", "n_groups", "mamba_n_groups", "conv_kernel", "mamba_d_conv", "expand",
      "mamba_expand", "chunk_size", "mamba_chunk_size", "use_conv_bias", "mamba_conv_bias", "use_bias",
      "mamba_proj_bias", "time_step_limit", "mamba_dt_limit", "time_step_min", "mamba_dt_min", "time_step_max",
      "mamba_dt_max", "time_step_floor", "mamba_dt_init_floor", "n_routed_experts", "num_local_experts",
      "num_experts_per_tok", "moe_intermediate_size", "moe_shared_expert_intermediate_size", "moe_latent_size",
      "n_group", "topk_group", "norm_topk_prob", "routed_scaling_factor", "n_shared_experts",
      "moe_shared_expert_overlap", "layer_norm_epsilon", "residual_in_fp32", "hidden_dropout", "use_mamba_kernels",
      "mamba_ssm_cache_dtype", "num_nextn_predict_layers", "mtp_layers_block_type", "mtp_hybrid_override_pattern",
      "max_position_embeddings", "num_logits_to_keep", "attention_dropout"};
  r.reject_unknown(generic_keys(), keys);
  const auto pick = [&](const char* key, const char* legacy) { return r.has(key) ? std::string(key) : std::string(legacy); };
  const std::vector<char> pattern = block_pattern(r);
  c.d_model = r.positive("hidden_size");
  c.n_layers = int64_t(pattern.size());
  c.vocab_size = r.positive("vocab_size");
  c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  const std::string conv_act = r.string("mamba_hidden_act", "silu");
  SSM_CHECK(conv_act == "silu", "{}: mamba_hidden_act '{}' is not supported (silu only)", r.source(), conv_act);

  auto mamba = std::make_shared<Mamba2Settings>();
  mamba->d_model = c.d_model;
  mamba->n_heads = r.positive("mamba_num_heads", 128);
  mamba->head_dim = r.positive("mamba_head_dim", 64);
  mamba->d_inner = mamba->n_heads * mamba->head_dim;
  mamba->d_state = r.positive("ssm_state_size", 128);
  mamba->n_groups = r.positive(pick("n_groups", "mamba_n_groups"), 8);
  mamba->d_conv = r.positive(pick("conv_kernel", "mamba_d_conv"), 4);
  mamba->chunk_size = r.positive(pick("chunk_size", "mamba_chunk_size"), 128);
  mamba->conv_bias = r.boolean(pick("use_conv_bias", "mamba_conv_bias"), true);
  mamba->in_proj_bias = mamba->out_proj_bias = r.boolean("use_bias", false);
  mamba->norm_eps = c.norm_eps;
  mamba->dt_init_min = r.number(pick("time_step_min", "mamba_dt_min"), 0.001);
  mamba->dt_init_max = r.number(pick("time_step_max", "mamba_dt_max"), 0.1);
  mamba->dt_init_floor = r.number(pick("time_step_floor", "mamba_dt_init_floor"), 1e-4);
  // The original clamps dt to time_step_limit (transformers 5.17 clamps to time_step_min instead:
  // tests/fixtures/hf/README.md).
  if (r.has("time_step_limit") || !r.has("mamba_dt_limit")) read_dt_limit(r, *mamba);
  else {
    const std::vector<double> limit = r.numbers("mamba_dt_limit");
    SSM_CHECK(limit.size() == 2, "{}: mamba_dt_limit must be [min, max]", r.source());
    mamba->dt_limit_min = limit[0];
    mamba->dt_limit_max = limit[1];
  }
  mamba->validate(r.source());

  auto attention = std::make_shared<AttentionSettings>();
  attention->d_model = c.d_model;
  attention->n_heads = r.positive("num_attention_heads");
  attention->n_kv_heads = r.positive("num_key_value_heads", attention->n_heads);
  attention->head_dim = r.positive(pick("head_dim", "attention_head_dim"), 128);
  attention->validate(r.source());

  const ops::Activation act = ops::activation_from_name(r.string("mlp_hidden_act", "relu2"));
  const bool mlp_bias = r.boolean("mlp_bias", false);
  auto mlp = std::make_shared<MlpSettings>();
  mlp->d_model = c.d_model;
  mlp->d_ff = r.positive("intermediate_size", 21504);
  mlp->activation = act;
  mlp->gated = false;
  mlp->bias = mlp_bias;
  mlp->validate(r.source());

  auto moe = std::make_shared<MoeSettings>();
  moe->d_model = c.d_model;
  moe->n_experts = r.positive(pick("n_routed_experts", "num_local_experts"), 8);
  moe->router.scoring = ops::MoeScoring::Sigmoid;
  moe->router.top_k = r.positive("num_experts_per_tok", 2);
  moe->router.norm_topk_prob = r.boolean("norm_topk_prob", true);
  moe->router.routed_scaling_factor = float(r.number("routed_scaling_factor", 1.0));
  moe->router.n_group = r.positive("n_group", 1);
  moe->router.topk_group = r.positive("topk_group", 1);
  moe->correction_bias = true;
  moe->router_name = "gate";
  moe->latent_size = r.has("moe_latent_size") ? r.positive("moe_latent_size") : 0;
  moe->latent_bias = mlp_bias;
  moe->expert = *mlp;
  moe->expert.bias = false;
  moe->expert.d_model = moe->latent_size > 0 ? moe->latent_size : c.d_model;
  moe->expert.d_ff = r.positive("moe_intermediate_size", 7688);
  moe->shared = *mlp;
  moe->shared.d_ff = r.positive("moe_shared_expert_intermediate_size", 7688);
  if (pattern.end() != std::find(pattern.begin(), pattern.end(), 'E')) moe->validate(r.source());

  use_backbone_names(c);
  c.head_name = "lm_head.weight";  // never tied (transformers ignores tie_word_embeddings here)
  for (int64_t i = 0; i < c.n_layers; ++i) {
    std::shared_ptr<const MixerSettings> mixer;
    switch (pattern[size_t(i)]) {
      case 'M': mixer = mamba; break;
      case '*': mixer = attention; break;
      case '-': mixer = mlp; break;
      default: mixer = moe; break;
    }
    add_branch(c, i, backbone_layer(i) + ".norm.weight", mixer, backbone_layer(i) + ".mixer");
  }
}

}  // namespace ssm::arch
