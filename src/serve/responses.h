// The JSON OpenAI's clients expect back: whole completions, streamed chunks and usage counts, for
// /v1/completions ("text_completion") and /v1/chat/completions ("chat.completion").
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "serve/job.h"

namespace ssm::serve {

struct ResponseContext {
  bool chat = false;
  std::string id, model;
  int64_t created = 0;  // Unix seconds
};

// usage: prompt, completion and total tokens, and the prompt tokens the prefix cache covered.
nlohmann::json usage(int64_t prompt_tokens, const Job::Update& update);
nlohmann::json completion(const ResponseContext& context, const Job::Update& update, int64_t prompt_tokens);
// A streamed chunk with new text, or (finish_reason set) the last one; a chat's first chunk names the role.
nlohmann::json chunk(const ResponseContext& context, const std::string& text, const std::string& finish_reason = {},
                     bool first = false);
// The chunk after the last that carries usage (stream_options.include_usage).
nlohmann::json usage_chunk(const ResponseContext& context, int64_t prompt_tokens, const Job::Update& update);

// Compact JSON; invalid UTF-8 (never in generated text, which is decoded strictly) becomes U+FFFD.
std::string dump(const nlohmann::json& value);

}  // namespace ssm::serve
