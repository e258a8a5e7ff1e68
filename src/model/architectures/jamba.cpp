// transformers' `jamba` (AI21 Jamba): Mamba-1 layers (with RMSNorms over dt, B and C) and attention
// layers without positional encoding every attn_layer_period; after each, a SwiGLU MLP or, every
// expert_layer_period, a softmax-routed MoE whose top-k weights are not renormalised.
#include "model/architectures/architectures.h"
#include "model/architectures/hybrid_parts.h"
#include "nn/mixers/mamba1/mamba1.h"
#include "nn/mixers/moe/moe.h"

namespace ssm::arch {

void read_jamba(const ConfigReader& r, ModelConfig& c) {
  static const std::set<std::string> keys = {
      "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
      "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "num_experts", "num_local_experts",
      "num_experts_per_tok", "expert_layer_period", "expert_layer_offset", "attn_layer_period", "attn_layer_offset",
      "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_dt_rank", "mamba_conv_bias", "mamba_proj_bias",
      "use_mamba_kernels", "use_mambapy", "use_associative_scan", "output_router_logits", "router_aux_loss_coef",
      "attention_dropout", "max_position_embeddings", "num_logits_to_keep", "sliding_window", "calc_logits_for_entire_prompt"};
  r.reject_unknown(generic_keys(), keys);
  SSM_CHECK(!r.has("sliding_window"), "{}: sliding_window is not supported for jamba", r.source());
  c.d_model = r.positive("hidden_size");
  c.n_layers = r.layers("num_hidden_layers");
  c.vocab_size = r.positive("vocab_size");
  c.norm_eps = r.number("rms_norm_eps", 1e-6);
  const std::string act = r.string("hidden_act", "silu");
  SSM_CHECK(act == "silu", "{}: hidden_act '{}' is not supported (it is also the Mamba conv activation: silu only)",
            r.source(), act);

  auto mamba = std::make_shared<Mamba1Settings>();
  mamba->d_model = c.d_model;
  mamba->d_inner = r.positive("mamba_expand", 2) * c.d_model;
  mamba->d_state = r.positive("mamba_d_state", 16);
  mamba->d_conv = r.positive("mamba_d_conv", 4);
  mamba->dt_rank = r.is_string("mamba_dt_rank") && r.string("mamba_dt_rank", "") == "auto"
                       ? (c.d_model + 15) / 16
                       : r.positive("mamba_dt_rank", (c.d_model + 15) / 16);
  mamba->conv_bias = r.boolean("mamba_conv_bias", true);
  mamba->proj_bias = r.boolean("mamba_proj_bias", false);
  mamba->dt_bc_norms = true;
  mamba->norm_eps = c.norm_eps;
  mamba->validate(r.source());

  auto attention = std::make_shared<AttentionSettings>(hf_attention(r, c.d_model, /*rope=*/false, 0.0));
  attention->qkv_bias = attention->o_bias = false;
  attention->validate(r.source());
  MlpSettings mlp_settings = hf_gated_mlp(r, c.d_model);
  mlp_settings.bias = false;
  auto mlp = std::make_shared<MlpSettings>(mlp_settings);
  mlp->validate(r.source());

  const int64_t n_experts = r.positive("num_experts", r.positive("num_local_experts", 16));
  auto moe = std::make_shared<MoeSettings>();
  moe->d_model = c.d_model;
  moe->n_experts = n_experts;
  moe->router.scoring = ops::MoeScoring::Softmax;
  moe->router.top_k = r.positive("num_experts_per_tok", 2);
  moe->router.norm_topk_prob = false;
  moe->expert = mlp_settings;
  moe->router_name = "router";
  moe->validate(r.source());

  const int64_t attn_period = r.positive("attn_layer_period", 8), attn_offset = r.integer("attn_layer_offset", 4);
  const int64_t expert_period = r.positive("expert_layer_period", 2), expert_offset = r.integer("expert_layer_offset", 1);
  SSM_CHECK(attn_offset >= 0 && attn_offset < attn_period, "{}: attn_layer_offset must be in [0, attn_layer_period)",
            r.source());
  SSM_CHECK(expert_offset >= 0 && expert_offset < expert_period,
            "{}: expert_layer_offset must be in [0, expert_layer_period)", r.source());
  use_model_names(c, r.boolean("tie_word_embeddings", false));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string layer = model_layer(i);
    if (i % attn_period == attn_offset) add_branch(c, i, layer + ".input_layernorm.weight", attention, layer + ".self_attn");
    else add_branch(c, i, layer + ".input_layernorm.weight", mamba, layer + ".mamba");
    const bool expert_layer = n_experts > 1 && i % expert_period == expert_offset;
    add_branch(c, i, layer + ".pre_ff_layernorm.weight", expert_layer ? std::shared_ptr<const MixerSettings>(moe) : mlp,
               layer + ".feed_forward");
  }
}

}  // namespace ssm::arch
