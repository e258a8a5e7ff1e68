#include "train/model_backward.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"

namespace ssm {

// ---- gradients ----

ModelGrads::ModelGrads(LanguageModel& model) : params_(model.params()) {
  grads_.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    grads_.push_back(Tensor::zeros(params_[i].shape, DType::F32, model.device()));
    index_[params_[i].tensor] = i;
  }
}

Tensor& ModelGrads::of(const Tensor& param) {
  auto it = index_.find(&param);
  SSM_CHECK(it != index_.end(), "ModelGrads: tensor {} is not a parameter of the model", shape_str(param.shape()));
  return grads_[it->second];
}

std::vector<Tensor*> ModelGrads::tensors() {
  std::vector<Tensor*> out;
  for (Tensor& g : grads_) out.push_back(&g);
  return out;
}

void ModelGrads::zero() {
  for (Tensor& g : grads_) zero_bytes(g.raw(), g.device(), g.nbytes());
}

namespace {

void check_batch(const Tensor& ids, const Tensor& targets, int64_t vocab) {
  SSM_CHECK(ids.dtype() == DType::I32 && ids.dim() == 2 && ids.is_contiguous() && ids.size(0) > 0 && ids.size(1) > 0,
            "training ids must be contiguous I32 [batch, length], got {}", shape_str(ids.shape()));
  SSM_CHECK(targets.dtype() == DType::I32 && targets.shape() == ids.shape() && targets.is_contiguous(),
            "training targets must be contiguous I32 {}, got {}", shape_str(ids.shape()), shape_str(targets.shape()));
  SSM_CHECK(ids.device() == Device::CPU && targets.device() == Device::CPU,
            "training ids and targets come from the host (the model's device gets a checked copy)");
  const int32_t* p = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    SSM_CHECK(p[i] >= 0 && p[i] < vocab, "token id {} is outside the model's vocabulary ({})", p[i], vocab);
}

// What the forward keeps of one branch for the backward.
struct SavedBranch {
  Workspace::Mark mark;  // the workspace below this branch's activations
  Tensor h_in;           // the residual stream entering the branch
  std::vector<std::unique_ptr<MixerTraining>> faces;
};

}  // namespace

TrainingPass::TrainingPass(LanguageModel& model, const TrainPassOptions& options)
    : model_(model), options_(options), ws_(model.device()) {
  SSM_CHECK(options.vocab_chunk >= 1, "TrainingPass: the vocabulary chunk must be positive");
}

// The head and loss on the final hidden rows h [M, D]: s_l · rmsnorm_f(h) · headᵀ under cross-entropy.
// The logit multiplier is applied to the normalised rows (the same product). With dh given, the
// gradient of grad_scale × loss with respect to h is written there and the head's accumulated.
static double head_loss(const LanguageModel& model, const Tensor& h, const Tensor& targets, int64_t vocab_chunk,
                        float grad_scale, Workspace& ws, Tensor* dh, Gradients* grads, int64_t* counted,
                        StepProfile* prof) {
  const ModelConfig& c = model.config();
  const int64_t M = h.size(0), D = h.size(1);
  const float eps = float(c.norm_eps), s = c.logit_scale;
  WorkspaceScope scope(ws);
  Tensor normed = ws.take({M, D}, h.dtype());
  {
    Timed t(prof, &StepProfile::other);
    ops::rmsnorm(h, model.final_norm(), eps, normed);
    if (s != 1.0f) ops::scale(normed, s, normed);
  }
  ops::CrossEntropyOptions ce;
  ce.vocab_chunk = vocab_chunk;
  ce.grad_scale = grad_scale;
  ce.logit_soft_cap = c.logit_soft_cap;  // the loss of the logits inference gives (xLSTM's output cap)
  Tensor dnormed = dh ? ws.take({M, D}, h.dtype()) : Tensor();
  double loss;
  {
    Timed t(prof, &StepProfile::matmul);
    loss = ops::cross_entropy(normed, model.head_weight(), targets, dh ? &dnormed : nullptr,
                              grads ? &grads->of(model.head_weight()) : nullptr, ce, counted);
  }
  if (dh) {
    Timed t(prof, &StepProfile::other);
    if (s != 1.0f) ops::scale(dnormed, s, dnormed);
    ops::rmsnorm_backward(h, model.final_norm(), eps, dnormed, *dh, &grads->of(model.final_norm()));
  }
  return loss;
}

// The input of branch i's mixers: its normalised residual stream, and for a mixer with an input
// multiplier a scaled copy (inputs[j] is normed itself when a_j = 1).
static void branch_inputs(const Branch& branch, const Tensor& h_in, float eps, Tensor& normed,
                          std::vector<Tensor>& inputs) {
  ops::rmsnorm(h_in, branch.norm, eps, normed);
  for (size_t j = 0; j < branch.mixers.size(); ++j)
    if (branch.mixers[j].input_scale != 1.0f) ops::scale(normed, branch.mixers[j].input_scale, inputs[j]);
}

double TrainingPass::forward_backward(const Tensor& ids, const Tensor& targets, ModelGrads& grads, float grad_scale,
                                      StepProfile* prof) {
  const ModelConfig& c = model_.config();
  check_batch(ids, targets, c.vocab_size);
  const int64_t Bt = ids.size(0), T = ids.size(1), D = c.d_model, M = Bt * T;
  const float eps = float(c.norm_eps);
  const auto& branches = model_.branches();
  const DType act = model_.activation_dtype();  // F32, or BF16 on the GPU in mixed precision
  const bool recompute = options_.recompute;
  ws_.reset();
  auto rows = [&] { return ws_.take({Bt, T, D}, act); };

  // Buffers that live through the whole pass, below every saved activation:
  //   dh: the residual stream's gradient;  dnormed: a branch's normalised input's;
  //   dy / dx: a mixer's output / input gradient where a multiplier or a second mixer needs its own;
  //   mixed: a mixer's output, added to the stream at once (no backward reads it);
  //   with recompute, normed and inputs: a branch's mixer inputs, rewritten before its backward.
  size_t most_mixers = 0;
  bool output_scales = false;
  for (const Branch& b : branches) {
    most_mixers = std::max(most_mixers, b.mixers.size());
    for (const MixerSlot& slot : b.mixers) output_scales |= slot.output_scale != 1.0f;
  }
  Tensor dh = rows(), dnormed = rows(), mixed = rows();
  Tensor dy = output_scales ? rows() : Tensor(), dx = most_mixers > 1 ? rows() : Tensor();
  Tensor shared_normed;
  std::vector<Tensor> shared_inputs(most_mixers);
  if (recompute) {
    shared_normed = rows();
    for (const Branch& b : branches)
      for (size_t j = 0; j < b.mixers.size(); ++j)
        if (b.mixers[j].input_scale != 1.0f && !shared_inputs[j].defined()) shared_inputs[j] = rows();
  }
  // Where each mixer of a branch reads its input: normed itself, or its scaled copy (kept in the
  // branch's activations, or the shared buffer).
  auto mixer_inputs = [&](const Branch& b, const Tensor& normed, bool kept) {
    std::vector<Tensor> inputs(b.mixers.size(), normed);
    for (size_t j = 0; j < b.mixers.size(); ++j)
      if (b.mixers[j].input_scale != 1.0f) inputs[j] = kept ? rows() : shared_inputs[j];
    return inputs;
  };

  // Forward, saving the residual stream entering each branch and each mixer's activations.
  Tensor h = rows();
  {
    Timed t(prof, &StepProfile::other);
    model_.embed(model_.ids_here(ids, ws_), h);
  }
  std::vector<SavedBranch> saved(branches.size());
  for (size_t i = 0; i < branches.size(); ++i) {
    SavedBranch& s = saved[i];
    const Branch& branch = branches[i];
    model_.make_branch_params(i, std::min(i + 1, branches.size() - 1));  // the backward starts at the top
    s.mark = ws_.mark();
    s.h_in = h;
    // The mixers' inputs: kept in this branch's activations, or (recompute) in the shared buffers.
    Tensor normed = recompute ? shared_normed : rows();
    std::vector<Tensor> inputs = mixer_inputs(branch, normed, !recompute);
    h = rows();
    {
      Timed t(prof, &StepProfile::other);
      branch_inputs(branch, s.h_in, eps, normed, inputs);
      h.copy_from(s.h_in);
    }
    for (size_t j = 0; j < branch.mixers.size(); ++j) {
      const MixerSlot& slot = branch.mixers[j];
      s.faces.push_back(slot.mixer->training());
      s.faces.back()->recompute = recompute;
      s.faces.back()->forward(inputs[j], mixed, ws_, prof);
      Timed t(prof, &StepProfile::other);
      ops::add_scaled_inplace(h, mixed, slot.output_scale);
    }
  }
  Tensor dh_rows = dh.view({M, D});
  const double loss = head_loss(model_, h.view({M, D}), targets.view({M}), options_.vocab_chunk, grad_scale, ws_,
                                &dh_rows, &grads, nullptr, prof);

  // Backward, branch by branch from the top, releasing each branch's activations after it.
  for (size_t i = branches.size(); i-- > 0;) {
    SavedBranch& s = saved[i];
    const Branch& branch = branches[i];
    // The forward's were overwritten by the branches above (per-layer copies), but for the top one's.
    model_.make_branch_params(i, i > 0 ? std::optional<size_t>(i - 1) : std::nullopt);
    if (recompute) {
      // The mixers' inputs again, into the buffers their forward read (the same ops: the same bits).
      Timed t(prof, &StepProfile::other);
      std::vector<Tensor> inputs = mixer_inputs(branch, shared_normed, false);
      branch_inputs(branch, s.h_in, eps, shared_normed, inputs);
    }
    for (size_t j = 0; j < s.faces.size(); ++j) {
      const MixerSlot& slot = branch.mixers[j];
      const Tensor* dout = &dh;
      if (slot.output_scale != 1.0f) {
        ops::scale(dh, slot.output_scale, dy);
        dout = &dy;
      }
      // d(normed) = Σ_j a_j · d(input_j): the first mixer writes it, the others add.
      Tensor& dinput = j == 0 ? dnormed : dx;
      s.faces[j]->backward(*dout, dinput, grads, ws_, prof);
      Timed t(prof, &StepProfile::other);
      if (j == 0 && slot.input_scale != 1.0f) ops::scale(dnormed, slot.input_scale, dnormed);
      if (j > 0) ops::add_scaled_inplace(dnormed, dx, slot.input_scale);
    }
    s.faces.clear();
    {
      Timed t(prof, &StepProfile::other);
      ops::rmsnorm_backward(s.h_in, branch.norm, eps, dnormed, dh, &grads.of(branch.norm),
                            /*accumulate_dx=*/true);
    }
    ws_.release(s.mark);
  }
  Timed t(prof, &StepProfile::other);
  // h_0 = s_e · table[ids]: the table's gradient rows carry the multiplier too.
  if (c.embedding_scale != 1.0f) ops::scale(dh, c.embedding_scale, dh);
  ops::embedding_backward(ids, dh, grads.of(model_.embedding()));
  return loss;
}

double TrainingPass::loss(const Tensor& ids, const Tensor& targets, int64_t* counted) {
  const ModelConfig& c = model_.config();
  check_batch(ids, targets, c.vocab_size);
  const int64_t M = ids.numel();
  ws_.reset();
  const Tensor h = model_.hidden_states(ids, nullptr, ws_);
  return head_loss(model_, h.view({M, c.d_model}), targets.view({M}), options_.vocab_chunk, 1.0f, ws_, nullptr,
                   nullptr, counted, nullptr);
}

}  // namespace ssm
