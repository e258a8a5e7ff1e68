#include "serve/responses.h"

#include <fmt/format.h>

#include <algorithm>

#include "tokenizer/utf8_stream.h"

namespace ssm::serve {

using nlohmann::json;

namespace {

json envelope(const ResponseContext& c, bool streamed, json choices) {
  const char* object = c.chat ? (streamed ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {
      {"id", c.id}, {"object", object}, {"created", c.created}, {"model", c.model}, {"choices", std::move(choices)}};
}

json reason(const std::string& finish_reason) { return finish_reason.empty() ? json() : json(finish_reason); }

std::string_view raw_token(const ResponseContext& c, int32_t id) { return c.tokenizer->token_bytes(id); }

// A token as text: itself, or, when it is not UTF-8 on its own (a piece of a character), "bytes:\xNN..."
// as OpenAI's API writes such tokens.
std::string token_text(const ResponseContext& c, int32_t id) {
  const std::string_view raw = raw_token(c, id);
  if (utf8_valid(raw)) return std::string(raw);
  std::string out = "bytes:";
  for (unsigned char b : raw) out += fmt::format("\\x{:02x}", b);
  return out;
}

json token_bytes(std::string_view raw) {
  json bytes = json::array();
  for (unsigned char b : raw) bytes.push_back(int(b));
  return bytes;
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}], "refusal"}.
json chat_logprobs(const ResponseContext& c, const std::vector<TokenLogprob>& entries) {
  const auto entry = [&](int32_t id, float logprob) {
    return json{{"token", token_text(c, id)}, {"logprob", logprob}, {"bytes", token_bytes(raw_token(c, id))}};
  };
  json content = json::array();
  for (const TokenLogprob& e : entries) {
    json item = entry(e.token, e.logprob);
    item["top_logprobs"] = json::array();
    for (const auto& [id, logprob] : e.top) item["top_logprobs"].push_back(entry(id, logprob));
    content.push_back(std::move(item));
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

// Legacy: parallel lists, the top ones as {token: logprob} objects, offsets in bytes from `text_bytes` on.
json legacy_logprobs(const ResponseContext& c, const std::vector<TokenLogprob>& entries, int64_t& text_bytes) {
  json tokens = json::array(), logprobs = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& e : entries) {
    tokens.push_back(token_text(c, e.token));
    logprobs.push_back(e.logprob);
    json top = json::object();
    for (const auto& [id, logprob] : e.top) top[token_text(c, id)] = logprob;
    tops.push_back(std::move(top));
    offsets.push_back(text_bytes);
    text_bytes += int64_t(c.tokenizer->is_special(e.token) ? 0 : raw_token(c, e.token).size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(logprobs)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

json logprobs(const ResponseContext& c, const std::vector<TokenLogprob>& entries, int64_t& text_bytes) {
  if (!c.logprobs) return nullptr;
  return c.chat ? chat_logprobs(c, entries) : legacy_logprobs(c, entries, text_bytes);
}

json stream_choice(const ResponseContext& c, int64_t index, const std::string& text, json logprobs,
                   const std::string& finish_reason, bool first) {
  json choice = {{"index", index}, {"logprobs", std::move(logprobs)}, {"finish_reason", reason(finish_reason)}};
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

}  // namespace

json usage(int64_t prompt_tokens, const Job::Update& update) {
  int64_t completion_tokens = 0, cached_tokens = prompt_tokens;
  for (const Job::Choice& c : update.choices) {
    completion_tokens += c.completion_tokens;
    cached_tokens = std::min(cached_tokens, c.cached_tokens);
  }
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

json completion(const ResponseContext& c, const Job::Update& update, int64_t prompt_tokens) {
  json choices = json::array();
  for (size_t i = 0; i < update.choices.size(); ++i) {
    const Job::Choice& choice = update.choices[i];
    int64_t text_bytes = 0;
    json out = {{"index", i},
                {"logprobs", logprobs(c, choice.logprobs, text_bytes)},
                {"finish_reason", reason(choice.finish_reason)}};
    if (c.chat)
      out["message"] = {{"role", "assistant"}, {"content", choice.text}};
    else
      out["text"] = choice.text;
    choices.push_back(std::move(out));
  }
  json out = envelope(c, false, std::move(choices));
  out["usage"] = usage(prompt_tokens, update);
  return out;
}

std::vector<json> chunks(const ResponseContext& c, int64_t index, const Job::Choice& choice, ChoiceStream& sent) {
  std::vector<json> out;
  if (sent.ended) return out;
  const bool first = !sent.started;
  sent.started = true;
  if (c.chat && first) out.push_back(stream_choice(c, index, "", nullptr, "", true));
  if (!choice.text.empty() || !choice.logprobs.empty())
    out.push_back(stream_choice(c, index, choice.text, logprobs(c, choice.logprobs, sent.text_bytes), "", false));
  if (choice.finished) {
    out.push_back(stream_choice(c, index, "", nullptr, choice.finish_reason, false));
    sent.ended = true;
  }
  return out;
}

json usage_chunk(const ResponseContext& c, int64_t prompt_tokens, const Job::Update& update) {
  json out = envelope(c, true, json::array());
  out["usage"] = usage(prompt_tokens, update);
  return out;
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace ssm::serve
