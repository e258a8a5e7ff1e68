// transformers' `falcon_h1` (TII Falcon-H1): in every layer attention and Mamba-2 run side by side on
// the same normalised input, then a SwiGLU MLP; µP multipliers on the embedding, the head, each
// mixer's input and output, the keys, the five parts of in_proj's output and the MLP's gate and output.
#include "model/architectures/architectures.h"
#include "model/architectures/hybrid_parts.h"

namespace ssm::arch {

void read_falcon_h1(const ConfigReader& r, ModelConfig& c) {
  static const std::set<std::string> keys = {
      "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
      "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "mamba_d_ssm", "mamba_n_heads", "mamba_d_head",
      "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_chunk_size", "mamba_conv_bias",
      "mamba_proj_bias", "projectors_bias", "mamba_rms_norm", "mamba_norm_before_gate", "time_step_limit",
      "time_step_min", "time_step_max", "time_step_floor", "rope_parameters", "rope_theta", "rope_scaling",
      "attention_bias", "mlp_bias", "embedding_multiplier", "lm_head_multiplier", "attention_in_multiplier",
      "attention_out_multiplier", "key_multiplier", "ssm_in_multiplier", "ssm_out_multiplier", "ssm_multipliers",
      "mlp_multipliers", "max_position_embeddings", "num_logits_to_keep", "attention_dropout", "mamba_use_mlp",
      "mlp_expansion_factor", "attn_layer_indices"};
  r.reject_unknown(generic_keys(), keys);
  SSM_CHECK(!r.has("rope_scaling"), "{}: rope_scaling is not supported", r.source());
  c.d_model = r.positive("hidden_size");
  c.n_layers = r.layers("num_hidden_layers");
  c.vocab_size = r.positive("vocab_size");
  c.norm_eps = r.number("rms_norm_eps", 1e-5);
  c.embedding_scale = float(r.number("embedding_multiplier", 1.0));
  c.logit_scale = float(r.number("lm_head_multiplier", 1.0));
  const std::string act = r.string("hidden_act", "silu");
  SSM_CHECK(act == "silu", "{}: hidden_act '{}' is not supported (it is also the Mamba conv activation: silu only)",
            r.source(), act);

  auto mamba = std::make_shared<Mamba2Settings>();
  mamba->d_model = c.d_model;
  // transformers' default mamba_d_ssm is 1024 when the key is absent; null means expand · hidden.
  mamba->d_inner = !r.json().contains("mamba_d_ssm") ? 1024
                   : r.has("mamba_d_ssm")            ? r.positive("mamba_d_ssm")
                                                     : r.positive("mamba_expand", 2) * c.d_model;
  mamba->n_heads = r.positive("mamba_n_heads", 128);
  mamba->head_dim = r.is_string("mamba_d_head") && r.string("mamba_d_head", "") == "auto"
                        ? mamba->d_inner / mamba->n_heads
                        : r.positive("mamba_d_head", mamba->d_inner / mamba->n_heads);
  mamba->n_groups = r.positive("mamba_n_groups", 1);
  mamba->d_state = r.positive("mamba_d_state", 256);
  mamba->d_conv = r.positive("mamba_d_conv", 4);
  mamba->chunk_size = r.positive("mamba_chunk_size", 256);
  mamba->conv_bias = r.boolean("mamba_conv_bias", true);
  mamba->in_proj_bias = r.boolean("mamba_proj_bias", false);
  mamba->out_proj_bias = r.boolean("projectors_bias", false);
  mamba->gated_norm = r.boolean("mamba_rms_norm", false);
  mamba->norm_before_gate = r.boolean("mamba_norm_before_gate", true);
  mamba->norm_eps = c.norm_eps;
  mamba->dt_init_min = r.number("time_step_min", 0.001);
  mamba->dt_init_max = r.number("time_step_max", 0.1);
  mamba->dt_init_floor = r.number("time_step_floor", 1e-4);
  read_dt_limit(r, *mamba);
  if (r.has("ssm_multipliers"))
    for (double m : r.numbers("ssm_multipliers")) mamba->in_proj_part_scales.push_back(float(m));
  mamba->validate(r.source());

  auto attention = std::make_shared<AttentionSettings>(hf_attention(r, c.d_model, true, rope_fraction(r, 1.0)));
  attention->key_scale = float(r.number("key_multiplier", 1.0));
  attention->validate(r.source());

  MlpSettings mlp = hf_gated_mlp(r, c.d_model);
  float mlp_out = 1.0f;
  if (r.has("mlp_multipliers")) {
    const std::vector<double> m = r.numbers("mlp_multipliers");
    SSM_CHECK(m.size() == 2, "{}: mlp_multipliers must be [gate, down], got {} values", r.source(), m.size());
    mlp.gate_scale = float(m[0]);
    mlp_out = float(m[1]);
  }
  mlp.validate(r.source());
  auto mlp_settings = std::make_shared<MlpSettings>(mlp);

  const float ssm_in = float(r.number("ssm_in_multiplier", 1.0)), ssm_out = float(r.number("ssm_out_multiplier", 1.0));
  const float attn_in = float(r.number("attention_in_multiplier", 1.0));
  const float attn_out = float(r.number("attention_out_multiplier", 1.0));
  use_model_names(c, r.boolean("tie_word_embeddings", false));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string layer = model_layer(i);
    BranchPlan mixers;
    mixers.layer = i;
    mixers.norm = layer + ".input_layernorm.weight";
    mixers.mixers.push_back({mamba, layer + ".mamba", ssm_in, ssm_out});
    mixers.mixers.push_back({attention, layer + ".self_attn", attn_in, attn_out});
    c.branches.push_back(std::move(mixers));
    add_branch(c, i, layer + ".pre_ff_layernorm.weight", mlp_settings, layer + ".feed_forward", 1.0f, mlp_out);
  }
}

}  // namespace ssm::arch
