// Training forward and explicit backward of a LanguageModel (as in llm.c: one forward that saves
// what the backward needs, one backward per layer, no autograd graph).
//
//   h_0 = embed(ids);  h_{i+1} = h_i + mixer_i(rmsnorm(h_i));  loss = CE(rmsnorm_f(h_L) · headᵀ, targets)
//
// Each mixer gets a training face (model_backward.cpp: a forward that saves, and its backward).
// Mamba-1 mixers run the selective scan through selective_scan_forward_saving_chunk_states and
// recompute inside chunks in the backward; Mamba-2 mixers run ops::ssd and ssd_backward. The head
// and the loss are fused (ops::cross_entropy), so [tokens, vocab] logits are never materialised.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "model/language_model.h"

namespace ssm {

// One gradient tensor (F32, zero-initialised) per model parameter, in params() order. A tied head
// shares the embedding's gradient.
class ModelGrads {
 public:
  explicit ModelGrads(LanguageModel& model);
  Tensor& of(const Tensor& param);  // the gradient of a parameter tensor of the model (by identity)
  const ParamList& params() const { return params_; }
  std::vector<Tensor*> tensors();  // every gradient, params() order
  void zero();

 private:
  ParamList params_;
  std::vector<Tensor> grads_;
  std::map<const Tensor*, size_t> index_;
};

// Where the time of forward_backward goes (seconds, accumulated while a pointer is given).
struct StepProfile {
  double matmul = 0;  // projections, the head + loss (forward and backward)
  double scan = 0;    // selective scan / SSD (forward and backward)
  double conv = 0;    // depthwise conv1d (forward and backward)
  double other = 0;   // norms, embedding, residuals, gates
  double total() const { return matmul + scan + conv + other; }
};

struct TrainPassOptions {
  int64_t scan_chunk = 64;     // Mamba-1: chunk of the saved-state / recompute scheme
  int64_t vocab_chunk = 8192;  // cross-entropy vocabulary chunk
};

class TrainingPass {
 public:
  TrainingPass(LanguageModel& model, const TrainPassOptions& options = {});
  // ids, targets: I32 [B, T] (targets < 0 are ignored). Returns the mean loss over counted targets
  // and adds grad_scale × its gradient into `grads`.
  double forward_backward(const Tensor& ids, const Tensor& targets, ModelGrads& grads, float grad_scale = 1.0f,
                          StepProfile* profile = nullptr);
  // The loss alone through the inference forward (no saved activations); `counted` gets the number of
  // targets that count.
  double loss(const Tensor& ids, const Tensor& targets, int64_t* counted = nullptr);

 private:
  LanguageModel& model_;
  TrainPassOptions options_;
};

// Training allocates and frees the same large activation buffers every step; this asks glibc to keep
// freed memory (up to 32 MB blocks on the heap, no trimming) instead of returning it to the kernel
// and faulting it back in. Process-wide; called by the trainer and the training bench.
void keep_freed_memory();

}  // namespace ssm
