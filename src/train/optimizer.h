// AdamW (decoupled weight decay, bias-corrected moments) over named F32 parameters, each with its
// own gradient buffer and a flag for weight decay (mamba_ssm: no decay on norms, biases, A_log, D,
// dt_bias). Also clipping by global gradient norm. Deterministic: parameters are updated in order,
// each one elementwise, and the norm is summed in double in a fixed order.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ssm {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

struct OptimizerParam {
  std::string name;
  Tensor* param = nullptr;  // F32, contiguous; updated in place
  Tensor* grad = nullptr;   // F32, same shape
  bool weight_decay = true;
  Tensor* shadow = nullptr;  // BF16 copy refreshed after every update (mixed precision), or none
};

class AdamW {
 public:
  AdamW(std::vector<OptimizerParam> params, const AdamWOptions& options);

  // One update with learning rate `lr` of the gradients times `grad_scale` (clipping's factor; the
  // gradients themselves are left as they are). The step counter advances first: bias corrections use it.
  void step(double lr, float grad_scale = 1.0f);
  int64_t steps() const { return steps_; }
  const std::vector<OptimizerParam>& params() const { return params_; }
  const AdamWOptions& options() const { return options_; }

  // The moments as named tensors ("<param>.exp_avg", "<param>.exp_avg_sq") for a checkpoint, and
  // back. load_state checks that every moment is there with its parameter's shape.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  void load_state(const std::map<std::string, Tensor>& tensors, int64_t steps, const std::string& source);

 private:
  std::vector<OptimizerParam> params_;
  AdamWOptions options_;
  std::vector<Tensor> m_, v_;
  int64_t steps_ = 0;
};

// The global L2 norm of the gradients, and the factor clipping by it applies to them (AdamW::step's
// grad_scale): max_norm / norm when the norm exceeds max_norm > 0, else 1 (also for a non-finite norm).
double grad_norm(const std::vector<Tensor*>& grads);
float clip_factor(double norm, double max_norm);
void zero_grads(const std::vector<Tensor*>& grads);

}  // namespace ssm
