// The responses' JSON, written straight into strings, against the same objects built as nlohmann JSON
// values and dumped (the server's earlier path, kept here as the reference): byte for byte, on random
// updates of both endpoints' shapes, with and without log-probabilities, over tricky text and tokens
// (quotes, backslashes, control characters, non-ASCII, invalid UTF-8, tokens that are pieces of a
// character, tokens with the same text) and numbers (-0, NaN, infinities, subnormals).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "serve/responses.h"
#include "tokenizer/utf8_stream.h"

namespace ssm::serve {
namespace {

using nlohmann::json;

// The reference: responses as JSON values.
namespace reference {

json envelope(const ResponseContext& c, bool streamed, json choices) {
  const char* object = c.chat ? (streamed ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {
      {"id", c.id}, {"object", object}, {"created", c.created}, {"model", c.model}, {"choices", std::move(choices)}};
}

json reason(const std::string& finish_reason) { return finish_reason.empty() ? json() : json(finish_reason); }

std::string token_text(const ResponseContext& c, int32_t id) {
  const std::string_view raw = c.tokenizer->token_bytes(id);
  if (utf8_valid(raw)) return std::string(raw);
  std::string out = "bytes:";
  for (unsigned char b : raw) out += fmt::format("\\x{:02x}", b);
  return out;
}

json chat_logprobs(const ResponseContext& c, const std::vector<TokenLogprob>& entries) {
  const auto entry = [&](int32_t id, float logprob) {
    json bytes = json::array();
    for (unsigned char b : c.tokenizer->token_bytes(id)) bytes.push_back(int(b));
    return json{{"token", token_text(c, id)}, {"logprob", logprob}, {"bytes", bytes}};
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

json legacy_logprobs(const ResponseContext& c, const std::vector<TokenLogprob>& entries, int64_t& text_bytes) {
  json tokens = json::array(), logprobs = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& e : entries) {
    tokens.push_back(token_text(c, e.token));
    logprobs.push_back(e.logprob);
    json top = json::object();
    for (const auto& [id, logprob] : e.top) top[token_text(c, id)] = logprob;
    tops.push_back(std::move(top));
    offsets.push_back(text_bytes);
    text_bytes += int64_t(c.tokenizer->is_special(e.token) ? 0 : c.tokenizer->token_bytes(e.token).size());
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

// Whole microseconds between two points (the tests' points are), in ms; 0 when one was not reached.
double ms_between(Job::Clock::time_point from, Job::Clock::time_point to) {
  if (from == Job::Clock::time_point{} || to == Job::Clock::time_point{}) return 0.0;
  return double(std::chrono::duration_cast<std::chrono::microseconds>(to - from).count()) / 1e3;
}

json timings(int64_t prompt_tokens, const Job::Update& update) {
  int64_t completion_tokens = 0;
  for (const Job::Choice& c : update.choices) completion_tokens += c.completion_tokens;
  const int64_t cached = update.choices.empty() ? 0 : update.choices[0].cached_tokens;
  const Job::Timings& t = update.timings;
  return {{"cache_n", cached},
          {"prompt_n", prompt_tokens - cached},
          {"queued_ms", ms_between(t.arrived, t.admitted)},
          {"prompt_ms", ms_between(t.admitted, t.first_token)},
          {"predicted_n", completion_tokens},
          {"predicted_ms", ms_between(t.first_token, t.finished)}};
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
  out["timings"] = timings(prompt_tokens, update);
  out["usage"] = usage(prompt_tokens, update);
  return out;
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

std::string events(const std::vector<json>& chunks) {
  std::string out;
  for (const json& chunk : chunks) out += "data: " + dump(chunk) + "\n\n";
  return out;
}

std::string chunks(const ResponseContext& c, int64_t index, const Job::Choice& choice, ChoiceStream& sent) {
  std::vector<json> out;
  if (sent.ended) return "";
  const bool first = !sent.started;
  sent.started = true;
  if (c.chat && first) out.push_back(stream_choice(c, index, "", nullptr, "", true));
  if (!choice.text.empty() || !choice.logprobs.empty())
    out.push_back(stream_choice(c, index, choice.text, logprobs(c, choice.logprobs, sent.text_bytes), "", false));
  if (choice.finished) {
    out.push_back(stream_choice(c, index, "", nullptr, choice.finish_reason, false));
    sent.ended = true;
  }
  return events(out);
}

std::string usage_chunk(const ResponseContext& c, int64_t prompt_tokens, const Job::Update& update) {
  json out = envelope(c, true, json::array());
  out["timings"] = timings(prompt_tokens, update);
  out["usage"] = usage(prompt_tokens, update);
  return events({out});
}

}  // namespace reference

// Pieces of text: plain, JSON's escapes, control characters, DEL, non-ASCII, and invalid UTF-8
// (a lone lead byte, a lone continuation, a surrogate, past U+10FFFF, overlong, cut short).
const std::vector<std::string> kPieces = {
    "plain",  " ",      "\"",           "\\",           "/",        std::string(1, '\0'), "\x01",     "\b",
    "\t",     "\n",     "\f",           "\r",           "\x1f",     "\x7f",               "\xC3\xA9", "\xE6\x97\xA5",
    "\xF0\x9F\x98\x80", "\xC3",         "\x80",         "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xC0\xAF", "\xE6\x97",
    "\xFF",   "<|x|>"};

std::string random_text(std::mt19937& rng, int max_pieces) {
  std::string out;
  const int pieces = std::uniform_int_distribution<int>(0, max_pieces)(rng);
  for (int i = 0; i < pieces; ++i) out += kPieces[std::uniform_int_distribution<size_t>(0, kPieces.size() - 1)(rng)];
  return out;
}

// Ordinary values and the odd ones a float can hold.
float random_logprob(std::mt19937& rng) {
  const std::vector<float> odd = {0.0f,
                                  -0.0f,
                                  std::numeric_limits<float>::quiet_NaN(),
                                  -std::numeric_limits<float>::infinity(),
                                  std::numeric_limits<float>::infinity(),
                                  -std::numeric_limits<float>::denorm_min(),
                                  -1e-8f,
                                  -123456.7f,
                                  -1.0f,
                                  -std::numeric_limits<float>::max()};
  if (std::uniform_int_distribution<int>(0, 3)(rng) == 0)
    return odd[std::uniform_int_distribution<size_t>(0, odd.size() - 1)(rng)];
  return -std::exponential_distribution<float>(0.5f)(rng);
}

class ResponsesTest : public ::testing::Test {
 protected:
  // Specials: one whose text is a byte's ("A": two ids with the same text), non-ASCII, JSON's escapes,
  // and one that is not UTF-8.
  ResponsesTest() : tokenizer_(make_byte_tokenizer({"<|endoftext|>", "A", "\xC3\xA9t\xC3\xA9", "q\"\\\n", "x\xFF"})) {}

  int32_t random_id(std::mt19937& rng) const {
    return std::uniform_int_distribution<int32_t>(0, int32_t(tokenizer_->vocab_size()) - 1)(rng);
  }
  TokenLogprob random_entry(std::mt19937& rng) const {
    TokenLogprob e{random_id(rng), random_logprob(rng), {}};
    const int top = std::uniform_int_distribution<int>(0, 4)(rng);
    for (int k = 0; k < top; ++k) e.top.emplace_back(random_id(rng), random_logprob(rng));
    if (top >= 2 && std::uniform_int_distribution<int>(0, 2)(rng) == 0) {  // the two ids whose text is "A"
      e.top[0].first = 'A';
      e.top[1].first = int32_t(tokenizer_->vocab_size()) - 4;
    }
    return e;
  }
  Job::Choice random_choice(std::mt19937& rng) const {
    Job::Choice c;
    c.text = random_text(rng, 4);
    const int tokens = std::uniform_int_distribution<int>(0, 3)(rng);
    for (int i = 0; i < tokens; ++i) c.logprobs.push_back(random_entry(rng));
    c.finished = std::uniform_int_distribution<int>(0, 2)(rng) == 0;
    if (c.finished) c.finish_reason = std::uniform_int_distribution<int>(0, 1)(rng) ? "stop" : "length";
    c.completion_tokens = std::uniform_int_distribution<int64_t>(0, 1000)(rng);
    c.cached_tokens = std::uniform_int_distribution<int64_t>(0, 1000)(rng);
    return c;
  }
  // Points whole microseconds apart (some not reached: the clock's epoch), in order.
  static Job::Timings random_timings(std::mt19937& rng) {
    Job::Timings t;
    auto at = Job::Clock::time_point{} + std::chrono::seconds(1000);
    for (Job::Clock::time_point* point : {&t.arrived, &t.admitted, &t.first_token, &t.finished}) {
      at += std::chrono::microseconds(std::uniform_int_distribution<int64_t>(0, 5'000'000)(rng));
      if (std::uniform_int_distribution<int>(0, 5)(rng) > 0) *point = at;
    }
    return t;
  }
  ResponseContext random_context(std::mt19937& rng, bool chat, bool logprobs) const {
    return {.chat = chat,
            .id = "cmpl-" + random_text(rng, 2),
            .model = random_text(rng, 3),
            .created = std::uniform_int_distribution<int64_t>(0, int64_t(1) << 40)(rng),
            .tokenizer = tokenizer_.get(),
            .logprobs = logprobs};
  }

  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(ResponsesTest, TheSpecialsAreThere) {
  // The cases below lean on them: "A" twice, and a token that is not UTF-8.
  ASSERT_EQ(tokenizer_->vocab_size(), 256 + 5);
  EXPECT_EQ(tokenizer_->token_bytes(256 + 1), "A");
  EXPECT_EQ(tokenizer_->token_bytes(256 + 4), "x\xFF");
}

TEST_F(ResponsesTest, StreamedChunksAreTheJsonValuesDumped) {
  std::mt19937 rng(11);
  for (int round = 0; round < 400; ++round) {
    for (const bool chat : {false, true})
      for (const bool logprobs : {false, true}) {
        const ResponseContext context = random_context(rng, chat, logprobs);
        ChoiceStream sent, expected_sent;
        // A stream: updates until one finishes it (or six), then one more (which sends nothing).
        for (int update = 0; update < 6 && !expected_sent.ended; ++update) {
          const Job::Choice choice = random_choice(rng);
          const int64_t index = update % 3;
          std::string got = "kept:";
          append_chunks(got, context, index, choice, sent);
          const std::string expected = "kept:" + reference::chunks(context, index, choice, expected_sent);
          ASSERT_EQ(got, expected) << "round " << round << " chat " << chat << " logprobs " << logprobs;
          EXPECT_EQ(sent.started, expected_sent.started);
          EXPECT_EQ(sent.ended, expected_sent.ended);
          EXPECT_EQ(sent.text_bytes, expected_sent.text_bytes);
        }
        if (!sent.ended) continue;
        std::string after;  // nothing once the last chunk went
        append_chunks(after, context, 0, random_choice(rng), sent);
        EXPECT_EQ(after, "");
      }
  }
}

TEST_F(ResponsesTest, CompletionsAndUsageAreTheJsonValuesDumped) {
  std::mt19937 rng(12);
  for (int round = 0; round < 400; ++round)
    for (const bool chat : {false, true})
      for (const bool logprobs : {false, true}) {
        const ResponseContext context = random_context(rng, chat, logprobs);
        Job::Update update;
        const int choices = std::uniform_int_distribution<int>(0, 3)(rng);
        for (int i = 0; i < choices; ++i) update.choices.push_back(random_choice(rng));
        update.timings = random_timings(rng);
        const int64_t prompt_tokens = std::uniform_int_distribution<int64_t>(0, 5000)(rng);
        const std::string whole = completion(context, update, prompt_tokens);
        ASSERT_EQ(whole, dump(reference::completion(context, update, prompt_tokens))) << "round " << round;
        EXPECT_TRUE(json::accept(whole));  // valid JSON
        std::string usage;
        append_usage_chunk(usage, context, prompt_tokens, update);
        ASSERT_EQ(usage, reference::usage_chunk(context, prompt_tokens, update)) << "round " << round;
      }
}

// The cases the random ones might miss, one by one: every byte as a token and as text.
TEST_F(ResponsesTest, EveryByteAsATokenAndAsText) {
  for (const bool chat : {false, true}) {
    ResponseContext context{.chat = chat, .id = "id", .model = "m", .created = 1, .tokenizer = tokenizer_.get(),
                            .logprobs = true};
    for (int byte = 0; byte < 256; ++byte) {
      Job::Choice choice;
      choice.text = std::string(1, char(byte)) + "\xC3\xA9" + std::string(1, char(byte));
      choice.logprobs.push_back({int32_t(byte), -0.5f, {{int32_t(byte), -0.5f}, {'A', -1.0f}}});
      ChoiceStream sent, expected_sent;
      std::string got;
      append_chunks(got, context, 0, choice, sent);
      ASSERT_EQ(got, reference::chunks(context, 0, choice, expected_sent)) << "byte " << byte;
      Job::Update update;
      update.choices = {choice};
      ASSERT_EQ(completion(context, update, 3), dump(reference::completion(context, update, 3))) << "byte " << byte;
    }
  }
}

}  // namespace
}  // namespace ssm::serve
