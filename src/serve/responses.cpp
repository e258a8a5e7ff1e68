#include "serve/responses.h"

namespace ssm::serve {

using nlohmann::json;

namespace {
json envelope(const ResponseContext& c, bool streamed, json choices) {
  const char* object = c.chat ? (streamed ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {
      {"id", c.id}, {"object", object}, {"created", c.created}, {"model", c.model}, {"choices", std::move(choices)}};
}

json reason(const std::string& finish_reason) { return finish_reason.empty() ? json() : json(finish_reason); }
}  // namespace

json usage(int64_t prompt_tokens, const Job::Update& update) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", update.completion_tokens},
          {"total_tokens", prompt_tokens + update.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", update.cached_tokens}}}};
}

json completion(const ResponseContext& c, const Job::Update& update, int64_t prompt_tokens) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", reason(update.finish_reason)}};
  if (c.chat)
    choice["message"] = {{"role", "assistant"}, {"content", update.text}};
  else
    choice["text"] = update.text;
  json out = envelope(c, false, json::array({choice}));
  out["usage"] = usage(prompt_tokens, update);
  return out;
}

json chunk(const ResponseContext& c, const std::string& text, const std::string& finish_reason, bool first) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", reason(finish_reason)}};
  if (!c.chat) {
    choice["text"] = text;
  } else {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  }
  return envelope(c, true, json::array({choice}));
}

json usage_chunk(const ResponseContext& c, int64_t prompt_tokens, const Job::Update& update) {
  json out = envelope(c, true, json::array());
  out["usage"] = usage(prompt_tokens, update);
  return out;
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace ssm::serve
