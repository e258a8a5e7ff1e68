// The JSON OpenAI's clients expect back: whole completions, streamed chunks and usage counts, for
// /v1/completions ("text_completion") and /v1/chat/completions ("chat.completion"), with their
// log-probabilities in each endpoint's shape: the legacy {"tokens", "token_logprobs", "top_logprobs",
// "text_offset"} (offsets in bytes of the choice's text) and the chat's {"content": [{"token",
// "logprob", "bytes", "top_logprobs"}]}. A token that is not UTF-8 on its own is written "bytes:\xNN..."
// as OpenAI's API writes it.
// The text is written straight into a string, without building JSON values (a streamed token's chunk
// is the server's hottest output), and is byte for byte what nlohmann's dump (see dump() below) writes
// for the same objects: compact, keys in sorted order, invalid UTF-8 as U+FFFD
// (tests/serve/test_responses.cpp compares the two).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "serve/job.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

struct ResponseContext {
  bool chat = false;
  std::string id, model;
  int64_t created = 0;  // Unix seconds
  const Tokenizer* tokenizer = nullptr;
  bool logprobs = false;  // the request asked for them
};

// The whole completion with its usage: prompt tokens, completion tokens of all choices, their total,
// and the prompt tokens the prefix cache covered (the least over the choices: later ones find the
// first's prompt cached).
std::string completion(const ResponseContext& context, const Job::Update& update, int64_t prompt_tokens);

// What the stream has sent of one choice: whether its first chunk went (a chat's names the role), the
// bytes of its text so far (the legacy text_offset), whether its last chunk went.
struct ChoiceStream {
  bool started = false, ended = false;
  int64_t text_bytes = 0;
};
// Appends to `out` the server-sent events ("data: {...}\n\n") of one choice's update: new text and
// log-probabilities, then (when it finished) the last chunk with its finish_reason. None when there is
// nothing to send.
void append_chunks(std::string& out, const ResponseContext& context, int64_t index, const Job::Choice& choice,
                   ChoiceStream& sent);
// Appends the event after the last chunk that carries usage (stream_options.include_usage).
void append_usage_chunk(std::string& out, const ResponseContext& context, int64_t prompt_tokens,
                        const Job::Update& update);

// Compact JSON; invalid UTF-8 (never in generated text, which is decoded strictly) becomes U+FFFD.
std::string dump(const nlohmann::json& value);

}  // namespace ssm::serve
