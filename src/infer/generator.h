// The generation loop: prefill each prompt through the parallel forward, then decode all
// sequences together one token at a time through the recurrent state.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "core/workspace.h"
#include "infer/sampler.h"
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

struct GenerationResult {
  std::vector<std::vector<int32_t>> sequences;  // prompt + generated tokens, per prompt
  int64_t prefill_tokens = 0, decode_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Called for each generated token; return false to end that sequence (a stop string, say).
using TokenCallback = std::function<bool(size_t sequence, int32_t token)>;

class Generator {
 public:
  explicit Generator(const LanguageModel& model) : model_(model), ws_(model.device()) {}
  // Prompts must be non-empty (the caller puts BOS in an empty one); ids are checked against the vocabulary.
  GenerationResult generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
                            const TokenCallback& on_token = {});

  const Workspace& workspace() const { return ws_; }

 private:
  const LanguageModel& model_;
  Workspace ws_;  // activations of prefill and decode: planned by the first call, then reused
};

}  // namespace ssm
