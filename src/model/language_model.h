// LanguageModel: embedding → residual branches (RMSNorm + mixers) → final RMSNorm → head, built from
// a ModelConfig's layer plan. Loaded from and saved to Hugging Face checkpoint folders; prefill
// through the mixers' parallel forward, decoding through their one-token step on a ModelState.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/workspace.h"
#include "model/config.h"
#include "nn/mixer.h"

namespace ssm {

// The recurrent state of every mixer of a model for a batch of sequences.
struct ModelState {
  std::vector<std::unique_ptr<MixerState>> mixers;  // plan order; null for mixers without state
  int64_t batch = 0;
  Device device = Device::CPU;  // where the states are (the model's device)

  void reserve(int64_t length);  // lets KV caches hold `length` tokens without reallocating
  // Whether every mixer's state can change its number of sequences in place (MixerState::resize),
  // and that change: sequences below both sizes are kept, memory of the largest batch is kept (on the
  // CPU the mixers grow on the OpenMP threads, as copy_sequence copies).
  bool resizable() const;
  void resize(int64_t new_batch);
  int64_t bytes() const;
  // Copies sequence `from_index` of this state into sequence `to_index` of `to`. On the CPU the
  // mixers' rows are copied on the OpenMP threads (called outside a parallel region): one core copies
  // about 10 GB/s, and a server copies whole states (mamba2-130m's: 19 MB) several times per prompt.
  // On the GPU the layers that allow it copy as one kernel (copy_many).
  void copy_sequence(int64_t from_index, ModelState& to, int64_t to_index) const;
  // The same for `count` sequences from `from_first` on into `to`'s from `to_first` on (one kernel on the GPU).
  void copy_sequences(int64_t from_first, ModelState& to, int64_t to_first, int64_t count) const;
  // Sequence `index` as named host tensors ("mixer.<i>.<name>", i in plan order), and back into
  // sequence `index` of a state of the same model (ssm::Error for a tensor missing, extra or misfit).
  StateTensors export_sequence(int64_t index) const;
  void import_sequence(int64_t index, const StateTensorMap& tensors);
};

// How projection matrices and the embedding/head are kept in memory (`--dtype`). Vectors (norms,
// biases, conv taps, A_log, D) are always F32, and all arithmetic is F32.
enum class WeightDType {
  Auto,  // as stored: F32 stays F32, BF16 and F16 stay 16-bit (read in place from the file mapping)
  F32,   // widened to F32
  BF16,  // rounded to BF16 (F32 and F16 checkpoints)
};
// "auto", "f32", "bf16" (ssm::Error otherwise) and back.
WeightDType weight_dtype_from_name(const std::string& name);
const char* weight_dtype_name(WeightDType dtype);

struct LoadOptions {
  WeightDType weights = WeightDType::Auto;
  bool writable = false;  // copy weights out of the file mapping (training)
  // Where the model computes. On the GPU the matrices, the activations and the residual stream are
  // BF16 unless `weights` is F32 (then all F32, for parity with the CPU); vectors and states are F32.
  Device device = Device::CPU;
};

struct MixerSlot {
  std::unique_ptr<Mixer> mixer;
  float input_scale = 1.0f, output_scale = 1.0f;
};

struct Branch {
  Tensor norm;  // [d_model]
  std::vector<MixerSlot> mixers;
};

// The residual stream between branches: h, and the last mixer's output not yet added to it. The next
// norm adds it as it reads h (ops::add_rmsnorm): one pass over h and one launch fewer per branch.
struct Residual {
  Tensor h, mixed;  // mixed: where mixers write their output, h's shape
  float pending_scale = 1.0f;
  bool pending = false;  // mixed · pending_scale still to be added to h
};

// Parameters of a branch that a model does not hold for the whole run but has made just before the
// branch reads them: mixed-precision training makes the BF16 matrices of whichever branch runs from
// the F32 master weights (train/mixed_precision.h).
class BranchParamMaker {
 public:
  virtual ~BranchParamMaker() = default;
  // Makes `branch`'s parameters, queued on the current stream before the branch's own work. `next`:
  // the branch the caller makes next in the same pass (none at its end), with no change to the weights
  // in between, which the maker may start making while this branch runs.
  virtual void make(size_t branch, std::optional<size_t> next) = 0;
  virtual bool makes(const Tensor& param) const = 0;  // whether `param` is one it makes
};

class LanguageModel {
 public:
  // Parameters are not allocated: load() fills them from a checkpoint, allocate() with zeros.
  explicit LanguageModel(const ModelConfig& config);
  static LanguageModel load(const std::string& folder, const LoadOptions& options = {});
  void allocate(DType matrix_dtype = DType::F32);

  // Writes config.json, generation_config.json and model.safetensors (each atomically), with the
  // matrices in `matrix_dtype` (F32, BF16 or F16) and the vectors in F32.
  void save(const std::string& folder, DType matrix_dtype = DType::F32) const;

  const ModelConfig& config() const { return config_; }
  ParamList params();
  const std::vector<Branch>& branches() const { return branches_; }
  const Tensor& embedding() const { return embedding_; }
  const Tensor& final_norm() const { return norm_f_; }
  const Tensor& head_weight() const { return config_.tie_embeddings() ? embedding_ : lm_head_; }
  int64_t weight_bytes() const;  // as held now
  int64_t weight_bytes(WeightDType as) const;  // as they would be held when loaded with `as`
  int64_t parameter_count() const;  // the tied head counted once
  double matmul_macs_per_token() const;  // every mixer's projections (not the head)
  // Bytes of every mixer's state for one sequence that has seen `context` tokens.
  double state_bytes(int64_t context) const;

  ModelState new_state(int64_t batch) const;
  // A state of `batch` sequences whose rows are left unset, for copies that overwrite them whole
  // (MixerState::unset_like; a fresh state for the mixers without that form); what is not per
  // sequence is `like`'s, a state of this model.
  ModelState unset_state(const ModelState& like, int64_t batch) const;
  // Whether every mixer's step, or forward, can be recorded and replayed (see Mixer::replayable_step).
  bool replayable_step() const;
  bool replayable_forward() const;
  // ids I32 [B,T] → logits [B,T,V] (all_positions) or [B,V] for the last position. state (optional)
  // is the starting state and receives the state after the last token. The logits are taken from
  // ws and stay valid until the caller releases it; temporaries are released before returning.
  Tensor forward(const Tensor& ids, ModelState* state, bool all_positions, Workspace& ws) const;
  // ids I32 [B] → logits [B,V] (from ws, as above); advances state by one token.
  Tensor step(const Tensor& ids, ModelState& state, Workspace& ws) const;
  // The same with a workspace of their own (the logits keep its memory alive).
  Tensor forward(const Tensor& ids, ModelState* state, bool all_positions) const;
  Tensor step(const Tensor& ids, ModelState& state) const;

  // The residual stream after the last branch, h [B,T,D] taken from ws (the caller releases it);
  // state as in forward.
  Tensor hidden_states(const Tensor& ids, ModelState* state, Workspace& ws) const;
  // Embedding rows of ids (I32 [...]) into out [..., D], times the embedding multiplier.
  void embed(const Tensor& ids, Tensor& out) const;
  // ids (I32, on the host or the model's device) on the model's device, checked against the vocabulary.
  Tensor ids_here(const Tensor& ids, Workspace& ws) const;
  // The same into `here` (I32 of ids' shape on the model's device), a place the caller keeps.
  void copy_ids(const Tensor& ids, Tensor& here) const;

  Device device() const { return embedding_.defined() ? embedding_.device() : Device::CPU; }
  // The dtype the mixers compute their activations in: F32 on the CPU, the matrices' dtype on the GPU.
  DType activation_dtype() const;
  // Moves every parameter to `device`, matrices (and the embedding) converted to `matrix_dtype`.
  void to_device(Device device, DType matrix_dtype);

  // Gives the model a maker of branch parameters (or none). With one, branch i's parameters are only
  // valid after make_branch_params(i, ...) until another branch's are made: every forward and step
  // calls it before running the branch, a training pass before a branch's forward and again before its
  // backward; `next` as in BranchParamMaker::make.
  void set_param_maker(std::unique_ptr<BranchParamMaker> maker) { param_maker_ = std::move(maker); }
  const BranchParamMaker* param_maker() const { return param_maker_.get(); }
  void make_branch_params(size_t branch, std::optional<size_t> next) const {
    if (param_maker_) param_maker_->make(branch, next);
  }

 private:
  // Embedding, then every branch, through forward (rows [B, T]) or step (rows [B]); the last
  // branch's output is left pending. r.h and r.mixed come from ws.
  Residual run_branches(const Tensor& ids, ModelState* state, bool one_token, Workspace& ws) const;
  // One residual branch: h += Σ out_scale · mixer(in_scale · rmsnorm(h)), the last term left pending.
  void apply_branch(size_t index, Residual& r, ModelState* state, bool one_token, Workspace& ws) const;
  // out = rmsnorm(h) · w, adding what is pending to h first.
  void normalize(Residual& r, const Tensor& w, Tensor& out) const;
  // Final norm + head on the stream's rows [M, D] into logits [M, V].
  void logits(Residual& r, Tensor& out, Workspace& ws) const;
  ModelConfig config_;
  Tensor embedding_, norm_f_, lm_head_;
  std::vector<Branch> branches_;
  std::vector<size_t> first_slot_;  // per branch, the index of its first mixer in ModelState::mixers
  std::unique_ptr<BranchParamMaker> param_maker_;
};

}  // namespace ssm
