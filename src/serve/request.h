// OpenAI request bodies (/v1/completions, /v1/chat/completions) read into what the scheduler runs.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "infer/sampler.h"
#include "serve/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

struct RequestLimits {
  int64_t context = 4096;            // prompt + completion tokens per request
  int64_t default_max_tokens = 256;  // when a chat request gives no max_tokens (completions: 16, as OpenAI)
  int64_t vocab = 0;                 // the model's: prompt ids must be below it
};

// What one request asks the model to do.
struct GenerationRequest {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingOptions sampling;
  std::vector<std::string> stop;
  bool stream = false, include_usage = false;
  bool ignore_eos = false;   // llama.cpp's extension: generate past EOS (fixed lengths for benchmarks)
  int64_t n = 1;             // choices: sequences of their own, choice i sampled with seed + i
  bool logprobs = false;     // report each generated token's log-probability (logprobs.h) ...
  int64_t top_logprobs = 0;  // ... and those of the this many most likely tokens
};

// The body as a JSON value: 400 for text that is not UTF-8 or not JSON.
nlohmann::json parse_body(const std::string& body);

GenerationRequest parse_completion(const nlohmann::json& body, const Tokenizer& tokenizer, const RequestLimits& limits);
// The messages through the model's chat template, or (chat_template null) the plain role format.
GenerationRequest parse_chat(const nlohmann::json& body, const Tokenizer& tokenizer, const RequestLimits& limits,
                             const ChatTemplate* chat_template);

// /tokenize {"content": text} and /detokenize {"tokens": [ids]}.
std::vector<int32_t> parse_tokenize(const nlohmann::json& body, const Tokenizer& tokenizer);
std::vector<int32_t> parse_detokenize(const nlohmann::json& body, const Tokenizer& tokenizer);

}  // namespace ssm::serve
