// The mixer interface. Every layer that maps normalised hidden states [B,T,D] to [B,T,D] inside a
// residual branch is a mixer: sequence mixers (Mamba-1, Mamba-2, attention, RAT), which carry a
// recurrent state, and channel mixers (MLP, MoE), which carry none. Each offers the same faces
// (ARCHITECTURE.md): a parallel `forward` for prefill, a one-token `step` on an explicit state, a
// training face (forward that saves + backward) and, in ops/ref, the double-precision reference
// its kernels are tested against. A mixer kind lives in one folder, nn/mixers/<kind>/, and is
// registered in nn/mixers/registry.cpp.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/random.h"
#include "core/workspace.h"
#include "nn/parameter.h"
#include "nn/training.h"

namespace ssm {

using StateTensors = std::vector<std::pair<std::string, Tensor>>;
using StateTensorMap = std::map<std::string, Tensor>;

// Recurrent state of one mixer layer for a batch of sequences (conv + SSM states, a KV cache, ...).
class MixerState {
 public:
  virtual ~MixerState() = default;
  // Copies sequence `from` of this state into sequence `to_index` of `to` (a state of the same mixer).
  virtual void copy_sequence(int64_t from, MixerState& to, int64_t to_index) const = 0;
  // The same as byte copies appended to `copies`, for a caller that makes many states' copies at once
  // (ModelState::copy_sequence on the GPU: one kernel for every layer); false, appending nothing, when
  // this state copies some other way (the caller then calls copy_sequence).
  virtual bool sequence_copies(int64_t from, MixerState& to, int64_t to_index, std::vector<ByteCopy>& copies) const {
    return false;
  }
  // Lets caches that grow with the context (attention, RAT) hold `length` tokens per sequence
  // without reallocating.
  virtual void reserve(int64_t length) {}
  virtual int64_t bytes() const = 0;  // memory held now, all sequences
  // Whether resize() can change the number of sequences in place. resize keeps sequences
  // [0, min(old, batch)) and leaves added ones unspecified until written (copy_sequence,
  // import_sequence); it keeps the memory of the largest batch seen, so that a batch whose
  // membership changes allocates nothing once it has been at its largest.
  virtual bool resizable() const { return false; }
  virtual void resize(int64_t batch);
  // Sequence `index` as named host tensors (copies, without the batch axis), and back into sequence
  // `index` of a state of the same mixer: how `ssm serve` saves states to files and restores them.
  // import_sequence throws ssm::Error naming a tensor that is missing or of another shape or dtype.
  virtual StateTensors export_sequence(int64_t index) const = 0;
  virtual void import_sequence(int64_t index, const StateTensorMap& tensors) = 0;
  // A state of this one's mixer for `batch` sequences whose rows are left unset, for copies that
  // overwrite them whole (a prefix-cache snapshot, a cache hit's state): no zeroing, and what is not
  // per sequence shared with this state. Null where the mixer makes its states only one way.
  virtual std::unique_ptr<MixerState> unset_like(int64_t batch) const { return nullptr; }
};

// `name` of `tensors`, checked to be `shape` and `dtype` (ssm::Error naming `owner` otherwise).
const Tensor& state_tensor(const StateTensorMap& tensors, const std::string& name, const Shape& shape, DType dtype,
                           const char* owner);
// A contiguous host copy of t.
Tensor host_copy(const Tensor& t);

// How parameters are initialised for training from scratch (the mixer-independent part; each
// mixer's settings carry their own, such as Mamba's dt range).
struct InitOptions {
  double initializer_range = 0.02;
  // mamba_ssm / GPT-2: output projections of residual branches scaled by 1/sqrt(number of branches).
  bool rescale_prenorm_residual = true;
  int64_t residual_branches = 1;
  // The decoder layer of the branch being initialised and the model's layer count (xLSTM's sLSTM
  // forget-gate biases depend on the block's place in the stack).
  int64_t layer = 0, n_layers = 1;
};

class Mixer {
 public:
  virtual ~Mixer() = default;
  // Parameters with their checkpoint names under `prefix` (e.g. "backbone.layers.0.mixer").
  virtual void add_params(const std::string& prefix, ParamList& params) = 0;
  // Draws the parameters (already allocated, F32) for training from scratch.
  virtual void init_parameters(Rng& rng, const InitOptions& options) = 0;
  // Moves what the mixer derives from its settings alone (not parameters: the model moves those) to
  // `device`, where the model has placed the parameters.
  virtual void to_device(Device device) {}

  // A zero state for `batch` sequences, or null for a mixer without one (MLP, MoE).
  virtual std::unique_ptr<MixerState> new_state(int64_t batch) const { return nullptr; }
  // x [B,T,D] → y [B,T,D]. state (optional) is the starting state and receives the final one.
  // Temporaries come from ws and are released before returning.
  virtual void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const = 0;
  // x [B,D] → y [B,D], advancing state by one token.
  virtual void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const = 0;
  virtual std::unique_ptr<MixerTraining> training() const = 0;
  // The one-token step of a pre-norm residual branch as one call: h += step(rmsnorm(h, norm_weight, eps)),
  // h [B,D]. The default composes those three; a mixer whose ops take the norm and the residual add in
  // (the fused decode ops of ops.h: fewer GPU kernels per layer) overrides it and says so in
  // fuses_residual_step(), which is when the model calls it.
  virtual void step_in_residual(Tensor& h, const Tensor& norm_weight, float eps, MixerState* state,
                                Workspace& ws) const;
  virtual bool fuses_residual_step() const { return false; }
  // Whether step() only queues device work on fixed addresses (no host bookkeeping, no copies from
  // the host), so that a decode step can be recorded once and replayed (DeviceGraph).
  virtual bool replayable_step() const { return false; }
  // The same for forward() with a state (a short prefill chunk recorded once per shape: PrefillGraphs).
  virtual bool replayable_forward() const { return false; }

  // Multiply-adds of the matrix products per token (what the benchmark's FLOP rate counts).
  virtual double matmul_macs_per_token() const = 0;
  // Bytes the state grows by per token of context, per sequence (a KV cache), and the context length
  // beyond which it stops growing (a sliding window; 0: never).
  virtual double cache_bytes_per_token() const { return 0; }
  virtual int64_t cache_limit_tokens() const { return 0; }
};

// The sizes and options of one mixer layer: what a config reader produces and a model builds from.
class MixerSettings {
 public:
  virtual ~MixerSettings() = default;
  virtual std::string_view kind() const = 0;  // registry name: "mamba1", "attention", "mlp", ...
  virtual std::string describe() const = 0;   // one line for `ssm inspect`
  virtual std::unique_ptr<Mixer> build() const = 0;
};

}  // namespace ssm
