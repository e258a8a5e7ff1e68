// ModelConfig: what the engine needs from a checkpoint's config.json, for transformers' `mamba` and
// `mamba2` model types and for the original state-spaces format (d_model, n_layer, ssm_cfg).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/json.h"

namespace ssm {

enum class MixerKind { Mamba1, Mamba2 };
enum class WeightLayout { HuggingFace, StateSpaces };  // backbone.embeddings vs backbone.embedding

struct ModelConfig {
  std::string model_type;  // "mamba" or "mamba2" (state-spaces folders are mapped onto these)
  MixerKind mixer = MixerKind::Mamba1;
  WeightLayout layout = WeightLayout::HuggingFace;

  int64_t d_model = 0, n_layers = 0, vocab_size = 0;
  int64_t d_inner = 0, d_state = 16, d_conv = 4;
  bool conv_bias = true, proj_bias = false;
  int64_t dt_rank = 0;                                     // Mamba-1
  int64_t n_heads = 0, head_dim = 64, n_groups = 1;        // Mamba-2
  int64_t chunk_size = 256;                                // Mamba-2
  double dt_limit_min = 0.0, dt_limit_max = INFINITY;      // Mamba-2 time_step_limit
  bool norm_before_gate = false;                           // Mamba-2 gated RMSNorm
  double norm_eps = 1e-5;
  bool tie_embeddings = true;
  bool residual_in_fp32 = true;

  // Initialisation (training from scratch), as mamba_ssm does.
  double dt_init_min = 0.001, dt_init_max = 0.1, dt_init_floor = 1e-4, initializer_range = 0.02;
  bool rescale_prenorm_residual = true;

  int64_t bos_id = -1, pad_id = -1;
  std::vector<int64_t> eos_ids;

  // Parses and validates; unknown keys, unsupported features and inconsistent sizes are errors
  // naming `source`. Reads eos/bos from generation_config.json beside it when given.
  static ModelConfig from_json(const Json& config, const std::string& source);
  static ModelConfig load_folder(const std::string& folder);
  // transformers' config.json for this model (what save writes).
  Json to_hf_json() const;

  int64_t conv_channels() const;     // Mamba-1: d_inner; Mamba-2: d_inner + 2·G·N
  int64_t in_proj_width() const;     // Mamba-1: 2·d_inner; Mamba-2: 2·d_inner + 2·G·N + H
  int64_t parameter_count() const;
  std::string describe() const;      // one line: type, sizes
};

}  // namespace ssm
