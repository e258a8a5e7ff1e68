// LanguageModel: embedding → pre-norm residual blocks (RMSNorm + mixer) → final RMSNorm → head.
// Loaded from and saved to Hugging Face checkpoint folders; prefill through the mixers' parallel
// forward, decoding through their one-token step on an explicit ModelState.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "nn/mixer.h"

namespace ssm {

struct ModelState {
  std::vector<LayerState> layers;
  int64_t batch = 0;
};

struct LoadOptions {
  DType matrix_dtype = DType::F32;  // F32 or BF16 for projection matrices and the embedding/head
  bool writable = false;            // copy weights out of the file mapping (training)
};

struct Block {
  Tensor norm;  // [d_model]
  std::unique_ptr<Mixer> mixer;
};

class LanguageModel {
 public:
  // Parameters are not allocated: load() fills them from a checkpoint, allocate() with zeros.
  explicit LanguageModel(const ModelConfig& config);
  static LanguageModel load(const std::string& folder, const LoadOptions& options = {});
  void allocate(DType matrix_dtype = DType::F32);

  // Writes config.json, generation_config.json and model.safetensors (each atomically).
  void save(const std::string& folder) const;

  const ModelConfig& config() const { return config_; }
  ParamList params();
  const std::vector<Block>& blocks() const { return blocks_; }
  const Tensor& embedding() const { return embedding_; }
  const Tensor& final_norm() const { return norm_f_; }
  const Tensor& head_weight() const { return config_.tie_embeddings ? embedding_ : lm_head_; }
  int64_t weight_bytes() const;

  ModelState new_state(int64_t batch) const;
  // ids I32 [B,T] → logits [B,T,V] (all_positions) or [B,V] for the last position.
  // state (optional) is the starting state and receives the state after the last token.
  Tensor forward(const Tensor& ids, ModelState* state, bool all_positions) const;
  // ids I32 [B] → logits [B,V]; advances state by one token.
  Tensor step(const Tensor& ids, ModelState& state) const;

  // Final norm + head on hidden rows [M, D] → logits [M, V].
  Tensor logits(const Tensor& hidden) const;
  Tensor embed(const Tensor& ids) const;  // ids I32 [...] → [..., D] F32

 private:
  ModelConfig config_;
  Tensor embedding_, norm_f_, lm_head_;
  std::vector<Block> blocks_;
};

}  // namespace ssm
