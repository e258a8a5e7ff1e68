// transformers' `xlstm` (NX-AI xLSTM-7B, xLSTMForCausalLM): blocks of an mLSTM layer and a SwiGLU
// feed-forward, each behind an RMSNorm with weight; an RMSNorm after the last block (transformers
// applies backbone.out_norm whatever add_out_norm says); logits soft-capped at output_logit_soft_cap.
// Tensor names: backbone.embeddings, backbone.blocks.{i}.{norm_mlstm, mlstm_layer, norm_ffn, ffn},
// backbone.out_norm, lm_head (unless tied).
#include <fmt/ranges.h>

#include <cmath>

#include "model/architectures/architectures.h"
#include "nn/mixers/mlp/mlp.h"
#include "nn/mixers/mlstm/mlstm.h"

namespace ssm::arch {

namespace {

// The one of two synonymous size keys that is given (both: they must agree).
int64_t either(const ConfigReader& r, const std::string& a, const std::string& b) {
  SSM_CHECK(r.has(a) || r.has(b), "{}: missing '{}' (or '{}')", r.source(), a, b);
  const int64_t value = r.has(a) ? r.positive(a) : r.positive(b);
  SSM_CHECK(!r.has(a) || !r.has(b) || r.positive(b) == value, "{}: '{}' ({}) and '{}' ({}) differ", r.source(), a,
            value, b, r.positive(b));
  return value;
}

// A string key that only selects kernels or precisions of the same computation: any of `allowed`.
void expect_one_of(const ConfigReader& r, const std::string& key, const std::set<std::string>& allowed) {
  if (!r.has(key)) return;
  const std::string value = r.string(key, "");
  SSM_CHECK(allowed.count(value), "{}: {} '{}' is not supported (expected one of: {})", r.source(), key, value,
            fmt::format("{}", fmt::join(allowed, ", ")));
}

}  // namespace

void read_xlstm(const ConfigReader& r, ModelConfig& c) {
  static const std::set<std::string> keys = {
      "vocab_size", "hidden_size", "embedding_dim", "num_hidden_layers", "num_blocks", "num_heads", "use_bias",
      "norm_reduction_force_float32", "add_out_norm", "norm_eps", "qk_dim_factor", "v_dim_factor",
      "chunkwise_kernel", "sequence_kernel", "step_kernel", "mode", "chunk_size", "return_last_states",
      "autocast_kernel_dtype", "eps", "inference_state_dtype", "ffn_proj_factor", "ffn_round_up_to_multiple_of",
      "gate_soft_cap", "output_logit_soft_cap", "weight_mode", "max_inference_chunksize"};
  r.reject_unknown(generic_keys(), keys);
  c.d_model = either(r, "hidden_size", "embedding_dim");
  either(r, "num_blocks", "num_hidden_layers");  // one of them, equal when both
  c.n_layers = r.layers(r.has("num_blocks") ? "num_blocks" : "num_hidden_layers");
  c.vocab_size = r.positive("vocab_size");
  c.norm_eps = r.number("norm_eps", 1e-6);
  SSM_CHECK(!r.boolean("use_bias", false), "{}: use_bias true is not supported (xLSTM-7B has no biases)", r.source());
  const std::string weight_mode = r.string("weight_mode", "single");
  SSM_CHECK(weight_mode == "single", "{}: weight_mode '{}' is not supported (single only)", r.source(), weight_mode);
  expect_one_of(r, "mode", {"train", "train_with_padding", "inference"});
  for (const char* key : {"autocast_kernel_dtype", "inference_state_dtype"})
    expect_one_of(r, key, {"float32", "bfloat16", "float16"});
  const double cap = read_soft_cap(r, "output_logit_soft_cap", 30.0);
  c.logit_soft_cap = float(cap);

  auto mlstm = std::make_shared<MlstmSettings>(MlstmSettings::from_config(r, c.d_model));
  auto ffn = std::make_shared<MlpSettings>();
  ffn->d_model = c.d_model;
  // round_up_to_next_multiple_of(hidden · ffn_proj_factor, multiple) on a float, as Python floors it.
  const double multiple = double(r.positive("ffn_round_up_to_multiple_of", 64));
  ffn->d_ff = int64_t(std::floor((double(c.d_model) * r.number("ffn_proj_factor", 2.667) + multiple - 1) / multiple) *
                      multiple);
  ffn->activation = ops::Activation::Silu;
  ffn->gate_name = "proj_up_gate";
  ffn->up_name = "proj_up";
  ffn->down_name = "proj_down";
  ffn->validate(r.source());

  c.embedding_name = "backbone.embeddings.weight";
  c.final_norm_name = "backbone.out_norm.weight";
  if (!r.boolean("tie_word_embeddings", false)) c.head_name = "lm_head.weight";
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string block = "backbone.blocks." + std::to_string(i);
    add_branch(c, i, block + ".norm_mlstm.weight", mlstm, block + ".mlstm_layer");
    add_branch(c, i, block + ".norm_ffn.weight", ffn, block + ".ffn");
  }
}

}  // namespace ssm::arch
