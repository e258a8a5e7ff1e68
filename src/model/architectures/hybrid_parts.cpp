#include "model/architectures/hybrid_parts.h"

namespace ssm::arch {

double rope_fraction(const ConfigReader& r, double fallback) {
  const ConfigReader rope = r.section("rope_parameters");
  const std::string type = rope.string("rope_type", r.string("rope_type", "default"));
  SSM_CHECK(type == "default", "{}: rope_type '{}' is not supported (default only)", r.source(), type);
  return rope.number("partial_rotary_factor", fallback);
}

AttentionSettings hf_attention(const ConfigReader& r, int64_t d_model, bool rope, double rotary_fraction) {
  AttentionSettings a;
  a.d_model = d_model;
  a.n_heads = r.positive("num_attention_heads");
  a.n_kv_heads = r.positive("num_key_value_heads", a.n_heads);
  a.head_dim = r.positive("head_dim", d_model / a.n_heads);
  a.qkv_bias = a.o_bias = r.boolean("attention_bias", false);
  if (rope) {
    a.rope_theta = r.section("rope_parameters").number("rope_theta", r.number("rope_theta", 10000.0));
    a.rotary_dim = int64_t(double(a.head_dim) * rotary_fraction);
  }
  return a;
}

MlpSettings hf_gated_mlp(const ConfigReader& r, int64_t d_model) {
  MlpSettings m;
  m.d_model = d_model;
  m.d_ff = r.positive("intermediate_size");
  m.activation = ops::activation_from_name(r.string("hidden_act", "silu"));
  m.bias = r.boolean("mlp_bias", false);
  return m;
}

void read_dt_limit(const ConfigReader& r, Mamba2Settings& s) {
  if (!r.has("time_step_limit")) return;
  const std::vector<double> limit = r.numbers("time_step_limit");
  SSM_CHECK(limit.size() == 2, "{}: time_step_limit must be [min, max]", r.source());
  s.dt_limit_min = limit[0];
  s.dt_limit_max = limit[1];
}

std::string model_layer(int64_t layer) { return "model.layers." + std::to_string(layer); }

void use_model_names(ModelConfig& c, bool tied) {
  c.embedding_name = "model.embed_tokens.weight";
  c.final_norm_name = "model.final_layernorm.weight";
  if (!tied) c.head_name = "lm_head.weight";
}

}  // namespace ssm::arch
