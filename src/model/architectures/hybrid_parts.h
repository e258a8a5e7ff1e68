// Pieces the transformers hybrid configs (bamba, jamba, falcon_h1, nemotron_h) share: their
// attention and MLP settings under transformers' key names, the Mamba-2 mixer under the `mamba_*`
// keys, and the `model.*` tensor names.
#pragma once
#include "core/config_reader.h"
#include "model/config.h"
#include "nn/mixers/attention/attention.h"
#include "nn/mixers/mamba2/mamba2.h"
#include "nn/mixers/mlp/mlp.h"

namespace ssm::arch {

// num_attention_heads, num_key_value_heads (absent/null: the same), head_dim (absent: hidden /
// heads), attention_bias (q/k/v/o); RoPE from rope_parameters (or a top-level rope_theta) over
// rotary_fraction of each head when `rope`, none otherwise.
AttentionSettings hf_attention(const ConfigReader& r, int64_t d_model, bool rope, double rotary_fraction);

// The RoPE fraction of rope_parameters.partial_rotary_factor, else `fallback`; only the default RoPE
// type is supported.
double rope_fraction(const ConfigReader& r, double fallback);

// A gated MLP of intermediate_size with hidden_act and mlp_bias.
MlpSettings hf_gated_mlp(const ConfigReader& r, int64_t d_model);

// time_step_limit [min, max] into the Mamba-2 settings (default (0, inf)).
void read_dt_limit(const ConfigReader& r, Mamba2Settings& s);

// model.embed_tokens / model.layers.i.{input_layernorm, pre_ff_layernorm} / model.final_layernorm,
// lm_head unless tied.
void use_model_names(ModelConfig& c, bool tied);
std::string model_layer(int64_t layer);  // "model.layers.{layer}"

}  // namespace ssm::arch
