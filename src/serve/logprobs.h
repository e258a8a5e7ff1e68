// The log-probabilities a response reports with `logprobs`: those of the model's next-token
// distribution as it comes out of the model (log-softmax of the raw logits over the ids the tokenizer
// can print), before the request's repetition penalty, temperature and cuts, as vLLM reports them by
// default, so that they say what the model thinks whatever the sampling.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace ssm::serve {

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // the most likely ids and their log-probabilities, most likely first
};

// logits: [vocab] raw logits; token: the id sampled; top: how many of the most likely to list (ties: lower id first).
TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int64_t top);

}  // namespace ssm::serve
