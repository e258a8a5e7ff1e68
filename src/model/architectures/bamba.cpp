// transformers' `bamba` (IBM Bamba): Mamba-2 layers with attention at attn_layer_indices, a SwiGLU MLP
// after every mixer. The gated norm is per group (mamba_ssm's form; see tests/fixtures/hf/README.md).
#include "model/architectures/architectures.h"
#include "core/json.h"
#include "model/architectures/hybrid_parts.h"

namespace ssm::arch {

void read_bamba(const ConfigReader& r, ModelConfig& c) {
  static const std::set<std::string> keys = {
      "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
      "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "attn_layer_indices", "mamba_n_heads",
      "mamba_d_head", "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_chunk_size",
      "mamba_conv_bias", "mamba_proj_bias", "time_step_limit", "time_step_min", "time_step_max", "time_step_floor",
      "rope_parameters", "rope_theta", "partial_rotary_factor", "attention_bias", "mlp_bias",
      "max_position_embeddings", "num_logits_to_keep", "z_loss_coefficient", "attention_dropout"};
  r.reject_unknown(generic_keys(), keys);
  c.d_model = r.positive("hidden_size");
  c.n_layers = r.layers("num_hidden_layers");
  c.vocab_size = r.positive("vocab_size");
  c.norm_eps = r.number("rms_norm_eps", 1e-5);
  const std::string act = r.string("hidden_act", "silu");
  SSM_CHECK(act == "silu", "{}: hidden_act '{}' is not supported (it is also the Mamba conv activation: silu only)",
            r.source(), act);

  auto mamba = std::make_shared<Mamba2Settings>();
  mamba->d_model = c.d_model;
  mamba->n_heads = r.positive("mamba_n_heads", 128);
  mamba->d_inner = r.positive("mamba_expand", 2) * c.d_model;
  mamba->head_dim = r.is_string("mamba_d_head") && r.string("mamba_d_head", "") == "auto"
                        ? mamba->d_inner / mamba->n_heads
                        : r.positive("mamba_d_head", mamba->d_inner / mamba->n_heads);
  mamba->n_groups = r.positive("mamba_n_groups", 1);
  mamba->d_state = r.positive("mamba_d_state", 256);
  mamba->d_conv = r.positive("mamba_d_conv", 4);
  mamba->chunk_size = r.positive("mamba_chunk_size", 256);
  mamba->conv_bias = r.boolean("mamba_conv_bias", true);
  mamba->in_proj_bias = mamba->out_proj_bias = r.boolean("mamba_proj_bias", false);
  mamba->norm_eps = c.norm_eps;
  mamba->dt_init_min = r.number("time_step_min", 0.001);
  mamba->dt_init_max = r.number("time_step_max", 0.1);
  mamba->dt_init_floor = r.number("time_step_floor", 1e-4);
  read_dt_limit(r, *mamba);
  mamba->validate(r.source());

  // Bamba forces a partial rotary factor of 0.5 unless rope_parameters names another.
  auto attention = std::make_shared<AttentionSettings>(hf_attention(r, c.d_model, true, rope_fraction(r, 0.5)));
  attention->validate(r.source());
  auto mlp = std::make_shared<MlpSettings>(hf_gated_mlp(r, c.d_model));
  mlp->validate(r.source());

  std::set<int64_t> attention_layers;
  if (r.has("attn_layer_indices")) {
    SSM_CHECK(r.json()["attn_layer_indices"].is_array(), "{}: attn_layer_indices must be a list", r.source());
    for (const Json& index : r.json()["attn_layer_indices"]) {
      SSM_CHECK(index.is_number_integer() && index.get<int64_t>() >= 0 && index.get<int64_t>() < c.n_layers,
                "{}: attn_layer_indices holds {}, not a layer index below {}", r.source(), json_excerpt(index), c.n_layers);
      attention_layers.insert(index.get<int64_t>());
    }
  }
  use_model_names(c, r.boolean("tie_word_embeddings", false));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string layer = model_layer(i);
    if (attention_layers.count(i)) add_branch(c, i, layer + ".input_layernorm.weight", attention, layer + ".self_attn");
    else add_branch(c, i, layer + ".input_layernorm.weight", mamba, layer + ".mamba");
    add_branch(c, i, layer + ".pre_ff_layernorm.weight", mlp, layer + ".feed_forward");
  }
}

}  // namespace ssm::arch
