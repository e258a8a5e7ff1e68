// Turning logits into the next token: greedy at temperature 0, otherwise repetition penalty →
// temperature → top-k → top-p → min-p → a draw from a seeded generator.
#pragma once
#include <cstdint>
#include <vector>

#include "core/random.h"

namespace ssm {

// Defaults as llama.cpp's, which users of such tools expect.
struct SamplingOptions {
  float temperature = 0.8f;         // 0 = greedy
  int64_t top_k = 40;               // 0 = off
  float top_p = 0.95f;              // 1 = off
  float min_p = 0.05f;              // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off (CTRL-style: divides positive logits, multiplies negative ones)
  uint64_t seed = 0;
  void validate() const;            // throws ssm::Error naming the bad option
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}
  // logits [vocab] (modified in place); history: the tokens so far, for the repetition penalty.
  int32_t sample(float* logits, int64_t vocab, const std::vector<int32_t>& history);

 private:
  SamplingOptions options_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

int32_t argmax(const float* logits, int64_t vocab);  // first maximum, as torch.argmax

}  // namespace ssm
