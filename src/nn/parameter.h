// A named parameter slot: how layers expose their weights to the loader, the saver, the
// initialiser and the optimizer without any of them knowing the layer types.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ssm {

enum class ParamKind {
  Matrix,     // projection weights: may be kept in BF16 for inference, decayed in training
  Embedding,  // token table (also the tied head)
  Vector,     // norms, biases, A_log, D, dt_bias, conv weights: F32, no weight decay
};

struct ParamRef {
  std::string name;  // HF checkpoint name, e.g. backbone.layers.3.mixer.in_proj.weight
  Shape shape;
  Tensor* tensor;
  ParamKind kind;
  bool weight_decay;  // AdamW decay applies (mamba_ssm: matrices and conv weights only)
};

using ParamList = std::vector<ParamRef>;

}  // namespace ssm
