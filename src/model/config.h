// ModelConfig: a checkpoint's config.json turned into a layer plan. One reader per model_type
// (model/architectures/) knows that type's keys and tensor names; below model/, nothing knows a
// model_type. A model is: embedding → residual branches → final RMSNorm → head, where each branch
// is  h += Σ_i out_scale_i · mixer_i(in_scale_i · rmsnorm(h))  (one mixer in all but Falcon-H1,
// whose attention and Mamba-2 mixers run side by side on the same normalised input).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/json.h"
#include "nn/mixer.h"

namespace ssm {

struct MixerPlan {
  std::shared_ptr<const MixerSettings> settings;
  std::string prefix;  // tensor-name prefix, e.g. "model.layers.3.mamba"
  float input_scale = 1.0f, output_scale = 1.0f;
};

struct BranchPlan {
  int64_t layer = 0;  // the decoder layer it belongs to (for display)
  std::string norm;   // tensor name of the pre-norm's weight
  std::vector<MixerPlan> mixers;
};

struct ModelConfig {
  std::string model_type;
  int64_t d_model = 0, vocab_size = 0, n_layers = 0;
  double norm_eps = 1e-5;
  std::string embedding_name, final_norm_name;
  std::string head_name;  // empty: the head is tied to the embedding
  float embedding_scale = 1.0f, logit_scale = 1.0f;
  float logit_soft_cap = 0.0f;  // xLSTM: logits = cap · tanh(logits / cap) after the head; 0: none
  std::vector<BranchPlan> branches;
  InitOptions init;
  int64_t bos_id = -1, pad_id = -1;
  std::vector<int64_t> eos_ids;
  // config.json as `save` writes it (the source's own, or a state-spaces config rewritten for transformers).
  Json hf_config;

  bool tie_embeddings() const { return head_name.empty(); }

  // Parses and validates; unknown keys, unsupported features and inconsistent sizes are errors
  // naming `source`.
  static ModelConfig from_json(const Json& config, const std::string& source);
  // config.json, plus eos/bos from generation_config.json beside it.
  static ModelConfig load_folder(const std::string& folder);

  std::string describe() const;       // one line: type, sizes
  std::string layer_pattern() const;  // per decoder layer, its mixers: "mamba2 mlp | attention mlp | ..."
};

}  // namespace ssm
