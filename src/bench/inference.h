// Prefill and decode speed of a model through ssm::Generator: the code `ssm generate` runs, so a
// figure measured here is one a user gets.
#pragma once
#include <cstdint>
#include <vector>

#include "infer/generator.h"

namespace ssm::bench {

struct InferenceMeasure {
  std::vector<PhaseStats> prefill;  // one per prompt length, in the order asked
  PhaseStats decode;                // the decode steps of every timed call together
};

// A warm-up call at each length (they plan the workspace and touch every weight), then one timed
// call per length: a prompt of random ids (from seed), then greedy decoding of decode_tokens steps
// with EOS ignored.
// `batch` prompts of each length are prefilled together and decoded together.
InferenceMeasure measure_inference(const LanguageModel& model, const std::vector<int64_t>& prompt_lengths,
                                   int64_t decode_tokens, uint64_t seed, int64_t batch = 1);

// FLOPs of the matrix products of a prefill of `length` tokens (the head on the last token only).
double prefill_matmul_flops(const LanguageModel& model, int64_t length);
// Bytes a decode step moves: every weight read once, the recurrent state read and written (of
// `batch` sequences).
double decode_bytes_per_token(const LanguageModel& model, int64_t batch = 1);

}  // namespace ssm::bench
