#include "serve/responses.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/detail/conversions/to_chars.hpp>

#include "tokenizer/utf8_stream.h"

namespace ssm::serve {

namespace {

// JSON values appended to a string as nlohmann's dump(-1, ' ', false, replace) writes them.
void append_string(std::string& out, std::string_view s) {
  if (!utf8_valid(s)) {  // nlohmann's own replacement (one U+FFFD per bad sequence, as its decoder sees them)
    out += dump(std::string(s));
    return;
  }
  out += '"';
  for (const char ch : s) {
    const auto byte = static_cast<unsigned char>(ch);
    switch (byte) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (byte <= 0x1F)
          out += fmt::format("\\u{:04x}", byte);
        else
          out += ch;  // the rest of ASCII and valid UTF-8 as they are
    }
  }
  out += '"';
}

void append_integer(std::string& out, int64_t value) {
  char text[24];
  out.append(text, std::to_chars(text, text + sizeof text, value).ptr);
}

// A logprob as JSON holds it (a double) and writes it: nlohmann's shortest round-trip digits, null when
// not finite.
void append_number(std::string& out, double value) {
  if (!std::isfinite(value)) {
    out += "null";
    return;
  }
  char text[64];
  out.append(text, nlohmann::detail::to_chars(text, text + sizeof text, value));
}

void append_reason(std::string& out, const std::string& finish_reason) {
  if (finish_reason.empty())
    out += "null";
  else
    append_string(out, finish_reason);
}

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

// Chat's {"bytes", "logprob", "token" of one token, the object left open (for its top_logprobs).
void append_chat_entry(std::string& out, const ResponseContext& c, int32_t id, float logprob) {
  out += "{\"bytes\":[";
  const std::string_view raw = raw_token(c, id);
  for (size_t i = 0; i < raw.size(); ++i) {
    if (i > 0) out += ',';
    append_integer(out, static_cast<unsigned char>(raw[i]));
  }
  out += "],\"logprob\":";
  append_number(out, logprob);
  out += ",\"token\":";
  append_string(out, token_text(c, id));
}

// Chat: {"content": [{"bytes", "logprob", "token", "top_logprobs": [{"bytes", "logprob", "token"}]}], "refusal"}.
void append_chat_logprobs(std::string& out, const ResponseContext& c, const std::vector<TokenLogprob>& entries) {
  out += "{\"content\":[";
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out += ',';
    append_chat_entry(out, c, entries[i].token, entries[i].logprob);
    out += ",\"top_logprobs\":[";
    for (size_t k = 0; k < entries[i].top.size(); ++k) {
      if (k > 0) out += ',';
      append_chat_entry(out, c, entries[i].top[k].first, entries[i].top[k].second);
      out += '}';
    }
    out += "]}";
  }
  out += "],\"refusal\":null}";
}

// Legacy: parallel lists, the top ones as {token: logprob} objects (keys in order, the last of equal
// ones kept, as a JSON object built key by key holds them), offsets in bytes from `text_bytes` on.
void append_legacy_logprobs(std::string& out, const ResponseContext& c, const std::vector<TokenLogprob>& entries,
                            int64_t& text_bytes) {
  out += "{\"text_offset\":[";
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out += ',';
    append_integer(out, text_bytes);
    text_bytes += int64_t(c.tokenizer->is_special(entries[i].token) ? 0 : raw_token(c, entries[i].token).size());
  }
  out += "],\"token_logprobs\":[";
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out += ',';
    append_number(out, entries[i].logprob);
  }
  out += "],\"tokens\":[";
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out += ',';
    append_string(out, token_text(c, entries[i].token));
  }
  out += "],\"top_logprobs\":[";
  std::vector<std::pair<std::string, float>> top;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out += ',';
    top.clear();
    for (const auto& [id, logprob] : entries[i].top) top.emplace_back(token_text(c, id), logprob);
    std::stable_sort(top.begin(), top.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    out += '{';
    for (size_t k = 0; k < top.size(); ++k) {
      if (k + 1 < top.size() && top[k + 1].first == top[k].first) continue;  // a later value replaced it
      if (out.back() != '{') out += ',';
      append_string(out, top[k].first);
      out += ':';
      append_number(out, top[k].second);
    }
    out += '}';
  }
  out += "]}";
}

void append_logprobs(std::string& out, const ResponseContext& c, const std::vector<TokenLogprob>& entries,
                     int64_t& text_bytes) {
  if (!c.logprobs)
    out += "null";
  else if (c.chat)
    append_chat_logprobs(out, c, entries);
  else
    append_legacy_logprobs(out, c, entries, text_bytes);
}

// The envelope's fields after "choices": "created", "id", "model", "object".
void append_envelope_tail(std::string& out, const ResponseContext& c, bool streamed) {
  out += ",\"created\":";
  append_integer(out, c.created);
  out += ",\"id\":";
  append_string(out, c.id);
  out += ",\"model\":";
  append_string(out, c.model);
  out += ",\"object\":";
  out += c.chat ? (streamed ? "\"chat.completion.chunk\"" : "\"chat.completion\"") : "\"text_completion\"";
}

void append_usage(std::string& out, int64_t prompt_tokens, const Job::Update& update) {
  int64_t completion_tokens = 0, cached_tokens = prompt_tokens;
  for (const Job::Choice& c : update.choices) {
    completion_tokens += c.completion_tokens;
    cached_tokens = std::min(cached_tokens, c.cached_tokens);
  }
  out += "{\"completion_tokens\":";
  append_integer(out, completion_tokens);
  out += ",\"prompt_tokens\":";
  append_integer(out, prompt_tokens);
  out += ",\"prompt_tokens_details\":{\"cached_tokens\":";
  append_integer(out, cached_tokens);
  out += "},\"total_tokens\":";
  append_integer(out, prompt_tokens + completion_tokens);
  out += '}';
}

// Milliseconds from `from` to `to`, to the microsecond; 0 where either point was not reached.
double milliseconds(Job::Clock::time_point from, Job::Clock::time_point to) {
  if (from == Job::Clock::time_point{} || to == Job::Clock::time_point{}) return 0.0;
  return std::round(std::chrono::duration<double, std::micro>(to - from).count()) / 1e3;
}

// llama.cpp's server's "timings" (cache_n, prompt_n, prompt_ms, predicted_n, predicted_ms) and the
// time the request waited for the scheduler (queued_ms, its body's parse included); the first
// choice's, for a request of several. Once per request: built as a JSON value.
void append_timings(std::string& out, int64_t prompt_tokens, const Job::Update& update) {
  const Job::Timings& t = update.timings;
  int64_t completion_tokens = 0;
  for (const Job::Choice& c : update.choices) completion_tokens += c.completion_tokens;
  const int64_t cached = update.choices.empty() ? 0 : update.choices[0].cached_tokens;
  out += dump({{"cache_n", cached},
               {"prompt_n", prompt_tokens - cached},
               {"queued_ms", milliseconds(t.arrived, t.admitted)},
               {"prompt_ms", milliseconds(t.admitted, t.first_token)},
               {"predicted_n", completion_tokens},
               {"predicted_ms", milliseconds(t.first_token, t.finished)}});
}

// One chunk's event: a choice with new text (and its log-probabilities, when `entries`), or the first
// chunk of a chat (the role), or the last (its finish_reason).
void append_stream_choice(std::string& out, const ResponseContext& c, int64_t index, const std::string& text,
                          const std::vector<TokenLogprob>* entries, int64_t& text_bytes,
                          const std::string& finish_reason, bool first) {
  out += "data: {\"choices\":[{";
  if (c.chat) {
    out += "\"delta\":{";
    if (!text.empty() || first) {
      out += "\"content\":";
      append_string(out, text);
    }
    if (first) out += ",\"role\":\"assistant\"";  // (after the content, which a first chunk has)
    out += "},";
  }
  out += "\"finish_reason\":";
  append_reason(out, finish_reason);
  out += ",\"index\":";
  append_integer(out, index);
  out += ",\"logprobs\":";
  if (entries)
    append_logprobs(out, c, *entries, text_bytes);
  else
    out += "null";
  if (!c.chat) {
    out += ",\"text\":";
    append_string(out, text);
  }
  out += "}]";
  append_envelope_tail(out, c, true);
  out += "}\n\n";
}

}  // namespace

std::string completion(const ResponseContext& c, const Job::Update& update, int64_t prompt_tokens) {
  std::string out = "{\"choices\":[";
  for (size_t i = 0; i < update.choices.size(); ++i) {
    const Job::Choice& choice = update.choices[i];
    if (i > 0) out += ',';
    out += "{\"finish_reason\":";
    append_reason(out, choice.finish_reason);
    out += ",\"index\":";
    append_integer(out, int64_t(i));
    out += ",\"logprobs\":";
    int64_t text_bytes = 0;
    append_logprobs(out, c, choice.logprobs, text_bytes);
    if (c.chat) {
      out += ",\"message\":{\"content\":";
      append_string(out, choice.text);
      out += ",\"role\":\"assistant\"}";
    } else {
      out += ",\"text\":";
      append_string(out, choice.text);
    }
    out += '}';
  }
  out += ']';
  append_envelope_tail(out, c, false);
  out += ",\"timings\":";
  append_timings(out, prompt_tokens, update);
  out += ",\"usage\":";
  append_usage(out, prompt_tokens, update);
  out += '}';
  return out;
}

void append_chunks(std::string& out, const ResponseContext& c, int64_t index, const Job::Choice& choice,
                   ChoiceStream& sent) {
  if (sent.ended) return;
  const bool first = !sent.started;
  sent.started = true;
  static const std::string none;
  if (c.chat && first) append_stream_choice(out, c, index, none, nullptr, sent.text_bytes, none, true);
  if (!choice.text.empty() || !choice.logprobs.empty())
    append_stream_choice(out, c, index, choice.text, &choice.logprobs, sent.text_bytes, none, false);
  if (choice.finished) {
    append_stream_choice(out, c, index, none, nullptr, sent.text_bytes, choice.finish_reason, false);
    sent.ended = true;
  }
}

void append_usage_chunk(std::string& out, const ResponseContext& c, int64_t prompt_tokens,
                        const Job::Update& update) {
  out += "data: {\"choices\":[]";
  append_envelope_tail(out, c, true);
  out += ",\"timings\":";
  append_timings(out, prompt_tokens, update);
  out += ",\"usage\":";
  append_usage(out, prompt_tokens, update);
  out += "}\n\n";
}

std::string dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace ssm::serve
