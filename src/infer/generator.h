// The generation loop: prefill each prompt through the parallel forward, then decode all
// sequences together one token at a time through the recurrent state.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "core/workspace.h"
#include "infer/prefill_graphs.h"
#include "infer/sampler.h"
#include "infer/step_graphs.h"
#include "model/language_model.h"

namespace ssm {

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  SamplingOptions sampling;
  std::vector<int64_t> eos_ids;  // a sequence ends after emitting one of these
  // Sample only ids below this (0 = the whole vocabulary): a model's vocabulary is often padded past
  // the ids its tokenizer can turn into text.
  int64_t sample_vocab = 0;
};

// What one phase of a generation cost, for the caller to report (the generator prints nothing).
struct PhaseStats {
  int64_t tokens = 0;       // prefill: prompt tokens; decode: tokens fed back through a step
  double seconds = 0;
  int64_t page_faults = 0;  // minor page faults of the process during the phase: memory touched for the first time
  double tokens_per_second() const { return seconds > 0 ? double(tokens) / seconds : 0.0; }
};

struct GenerationResult {
  std::vector<std::vector<int32_t>> sequences;  // prompt + generated tokens, per prompt
  PhaseStats prefill, decode;
  int64_t replayed_steps = 0;  // decode steps run by replaying a recorded device graph (GPU)
  int64_t replayed_prefills = 0;  // prefill forwards run that way (short prompts seen before)
};

// Called for each generated token; return false to end that sequence (a stop string, say).
using TokenCallback = std::function<bool(size_t sequence, int32_t token)>;

class Generator {
 public:
  explicit Generator(const LanguageModel& model)
      : model_(model),
        ws_(model.device()),
        host_(Workspace::staging_for(model.device())),
        graphs_(model),
        prefill_graphs_(model) {}
  // Prompts must be non-empty (the caller puts BOS in an empty one); ids are checked against the vocabulary.
  GenerationResult generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
                            const TokenCallback& on_token = {});

  const Workspace& workspace() const { return ws_; }

 private:
  // The states a call needs; returns that of `batch` sequences (kept while the batch size is unchanged).
  ModelState& prepare_states(int64_t batch);
  // One decode step from the ids on the model's device: replayed from a recording where the model
  // allows it (one launch for the whole step), else run op by op. Returns the logits there.
  Tensor decode_step(const Tensor& ids, ModelState& state);

  const LanguageModel& model_;
  Workspace ws_;    // activations of prefill and decode, on the model's device: planned by the first call, then reused
  Workspace host_;  // the same for what the sampler reads and writes: logits and token ids
  // Recurrent states, allocated once: each prompt starts from a copy of zero_ (one sequence) in
  // prompt_state_ (batches of several prompts) or directly in state_ (one prompt).
  ModelState zero_, prompt_state_, state_;
  StepGraphs graphs_;  // the recorded decode step of state_'s batch
  PrefillGraphs prefill_graphs_;  // short prompts' recorded prefills (a generator called again and again)
};

}  // namespace ssm
