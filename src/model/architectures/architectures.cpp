#include "model/architectures/architectures.h"

namespace ssm::arch {

void read_mamba(const ConfigReader& config, ModelConfig& out);
void read_mamba2(const ConfigReader& config, ModelConfig& out);
void read_ssm(const ConfigReader& config, ModelConfig& out);
void read_bamba(const ConfigReader& config, ModelConfig& out);
void read_jamba(const ConfigReader& config, ModelConfig& out);
void read_falcon_h1(const ConfigReader& config, ModelConfig& out);
void read_nemotron_h(const ConfigReader& config, ModelConfig& out);
void read_xlstm(const ConfigReader& config, ModelConfig& out);

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> table = {
      {"mamba", &read_mamba},
      {"mamba2", &read_mamba2},
      {"bamba", &read_bamba},
      {"jamba", &read_jamba},
      {"falcon_h1", &read_falcon_h1},
      {"nemotron_h", &read_nemotron_h},
      {"xlstm", &read_xlstm},
      {"ssm", &read_ssm},
  };
  return table;
}

const std::set<std::string>& generic_keys() {
  static const std::set<std::string> keys = {
      "architectures", "dtype", "torch_dtype", "transformers_version", "use_cache", "output_attentions",
      "output_hidden_states", "return_dict", "id2label", "label2id", "is_encoder_decoder", "tokenizer_class",
      "task_specific_params", "problem_type", "name_or_path", "model_type", "bos_token_id", "eos_token_id",
      "pad_token_id", "tie_word_embeddings", "initializer_range", "rescale_prenorm_residual",
      "chunk_size_feed_forward", "torchscript", "pruned_heads", "finetuning_task", "prefix", "sep_token_id",
      "decoder_start_token_id", "is_decoder", "add_cross_attention", "cross_attention_hidden_size", "tf_legacy_loss",
      "use_bfloat16", "auto_map"};
  return keys;
}

void add_branch(ModelConfig& c, int64_t layer, std::string norm, std::shared_ptr<const MixerSettings> settings,
                std::string prefix, float input_scale, float output_scale) {
  BranchPlan branch;
  branch.layer = layer;
  branch.norm = std::move(norm);
  branch.mixers.push_back({std::move(settings), std::move(prefix), input_scale, output_scale});
  c.branches.push_back(std::move(branch));
}

std::string backbone_layer(int64_t layer) { return "backbone.layers." + std::to_string(layer); }

void use_backbone_names(ModelConfig& c, bool state_spaces_embedding) {
  c.embedding_name = state_spaces_embedding ? "backbone.embedding.weight" : "backbone.embeddings.weight";
  c.final_norm_name = "backbone.norm_f.weight";
}

}  // namespace ssm::arch
