#include "serve/request.h"

#include <mutex>
#include <random>

#include "core/json.h"
#include "core/random.h"
#include "serve/api_error.h"
#include "serve/chat_prompt.h"
#include "serve/fields.h"
#include "tokenizer/utf8_stream.h"

namespace ssm::serve {

namespace {

// A seed for a request that gives none: the next draw of one generator seeded once from the system's
// entropy (a std::random_device per request cost ~30 us here: making one probes the CPU, which traps
// in a virtual machine).
uint64_t fresh_seed() {
  static std::mutex mutex;
  static Rng seeds((uint64_t(std::random_device()()) << 32) ^ std::random_device()());
  const std::lock_guard lock(mutex);
  return seeds.next_u64();
}

using nlohmann::json;

constexpr int64_t kMaxChoices = 128, kMaxTopLogprobs = 20;

// The fields both endpoints share: sampling, limits, stop strings, streaming.
const std::vector<std::string> kCommon = {
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n", "stream", "stream_options",
    "user", "repetition_penalty", "presence_penalty", "frequency_penalty", "logit_bias", "ignore_eos"};

std::vector<std::string> with(std::vector<std::string> fields, const std::vector<std::string>& more) {
  fields.insert(fields.end(), more.begin(), more.end());
  return fields;
}

std::vector<int32_t> checked_ids(const json& ids, const std::string& param, int64_t vocab) {
  std::vector<int32_t> out;
  for (const json& id : ids) {
    if (!id.is_number_integer()) bad_field(param, "'{}' must be an array of integer token ids", param);
    const int64_t v = id.is_number_unsigned() && id.get<uint64_t>() > uint64_t(INT64_MAX) ? -1 : id.get<int64_t>();
    if (v < 0 || v >= vocab)
      bad_field(param, "token id {} in '{}' is outside the vocabulary [0, {})", json_excerpt(id), param, vocab);
    out.push_back(int32_t(v));
  }
  return out;
}

// OpenAI's prompt: a string or an array of token ids (or a batch of one of either).
std::vector<int32_t> read_prompt(const json& prompt, const Tokenizer& tokenizer, int64_t vocab) {
  if (prompt.is_string()) return tokenizer.encode(prompt.get<std::string>());
  if (!prompt.is_array()) bad_field("prompt", "'prompt' must be a string or an array of token ids");
  if (!prompt.empty() && (prompt[0].is_string() || prompt[0].is_array())) {
    if (prompt.size() > 1) bad_field("prompt", "one prompt per request: batches of prompts are not supported yet");
    return read_prompt(prompt[0], tokenizer, vocab);
  }
  return checked_ids(prompt, "prompt", vocab);
}

std::vector<std::string> read_stop(const Fields& fields) {
  const json* stop = fields.get("stop");
  if (!stop) return {};
  if (stop->is_string()) return {stop->get<std::string>()};
  if (!stop->is_array() || stop->size() > 4)
    bad_field("stop", "'stop' must be a string or an array of up to 4 strings");
  std::vector<std::string> out;
  for (const json& s : *stop) {
    if (!s.is_string()) bad_field("stop", "'stop' must be a string or an array of up to 4 strings");
    out.push_back(s.get<std::string>());
  }
  return out;
}

// Everything but the prompt; max_tokens defaults to `default_max_tokens` within the context.
GenerationRequest read_common(const Fields& fields, std::vector<int32_t> prompt, const std::string& prompt_param,
                              int64_t default_max_tokens, const RequestLimits& limits) {
  GenerationRequest r;
  if (prompt.empty()) bad_field(prompt_param, "'{}' is empty: give at least one token", prompt_param);
  for (int32_t id : prompt)  // text can encode past a model's vocabulary when its tokenizer is larger
    if (id >= limits.vocab)
      bad_field(prompt_param, "the tokenizer gives id {} but the model's vocabulary has {} ids", id, limits.vocab);
  const int64_t room = limits.context - int64_t(prompt.size());
  if (room < 1)
    throw ApiError(
        400,
        fmt::format("the prompt has {} tokens, and this server's context is {} tokens", prompt.size(), limits.context),
        prompt_param, "context_length_exceeded");
  r.prompt = std::move(prompt);
  fields.string("model");
  fields.string("user");
  const std::string max_name = fields.get("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  r.max_tokens = fields.integer(max_name, 1, INT64_MAX).value_or(std::min(default_max_tokens, room));
  if (r.max_tokens > room)
    throw ApiError(400,
                   fmt::format("'{}' is {}, but the prompt's {} tokens leave {} of the context's {}", max_name,
                               r.max_tokens, r.prompt.size(), room, limits.context),
                   max_name, "context_length_exceeded");
  // OpenAI's defaults: plain sampling from the whole distribution.
  r.sampling = {
      .temperature = float(fields.number("temperature", 0, 2).value_or(1.0)),
      .top_k = fields.integer("top_k", 0, INT64_MAX).value_or(0),
      .top_p = float(fields.number("top_p", 0, 1).value_or(1.0)),
      .min_p = float(fields.number("min_p", 0, 1).value_or(0.0)),
      .repetition_penalty = float(fields.number("repetition_penalty", 1e-3, 1e3).value_or(1.0)),
      .seed = uint64_t(fields.integer("seed", INT64_MIN, INT64_MAX).value_or(int64_t(fresh_seed())))};
  if (r.sampling.top_p == 0) bad_field("top_p", "'top_p' must be above 0");
  r.n = fields.integer("n", 1, kMaxChoices).value_or(1);
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    fields.number(name, -2, 2);
    fields.unsupported(name, 0);
  }
  fields.unsupported("logit_bias", json::object());
  r.stop = read_stop(fields);
  r.ignore_eos = fields.boolean("ignore_eos").value_or(false);
  r.stream = fields.boolean("stream").value_or(false);
  if (const json* options = fields.get("stream_options")) {
    if (!r.stream) bad_field("stream_options", "'stream_options' is only allowed when 'stream' is true");
    r.include_usage = Fields(*options, {"include_usage"}, "stream_options.").boolean("include_usage").value_or(false);
  }
  return r;
}

ChatMessage read_message(const json& message, size_t index) {
  const Fields fields(message, {"role", "content", "name"}, fmt::format("messages[{}].", index));
  ChatMessage m;
  m.role = fields.string("role").value_or("");
  if (m.role != "system" && m.role != "developer" && m.role != "user" && m.role != "assistant" && m.role != "tool")
    bad_field(fields.path("role"), "'{}' must be system, developer, user, assistant or tool", fields.path("role"));
  fields.string("name");
  const json* content = fields.get("content");
  if (!content) return m;
  if (content->is_string()) {
    m.content = content->get<std::string>();
    return m;
  }
  if (!content->is_array())
    bad_field(fields.path("content"), "'{}' must be a string or an array of text parts", fields.path("content"));
  for (size_t i = 0; i < content->size(); ++i) {
    const Fields part((*content)[i], {"type", "text"}, fields.path(fmt::format("content[{}].", i)));
    if (part.string("type") != "text") bad_field(part.path("type"), "only text parts are supported ('type': 'text')");
    m.content += part.string("text").value_or("");
  }
  return m;
}

std::vector<int32_t> chat_prompt(const std::vector<ChatMessage>& chat, const Tokenizer& tokenizer,
                                 const ChatTemplate* chat_template) {
  // Special tokens typed into a message stay text: a user cannot end the prompt's turns with them.
  if (!chat_template) return tokenizer.encode_ordinary(plain_chat_prompt(chat));
  try {
    return chat_template->encode(chat);
  } catch (const jinja::Raised& e) {  // the template's own check of the messages (roles out of order, ...)
    bad_field("messages", "the model's chat template refuses these messages: {}", e.what());
  } catch (const jinja::Error& e) {
    throw ApiError(500, fmt::format("the model's chat template failed on these messages: {}", e.what()), {}, {},
                   "server_error");
  }
}

}  // namespace

json parse_body(const std::string& body) {
  if (!utf8_valid(body)) throw ApiError(400, "the request body is not valid UTF-8");
  try {
    return parse_json(body);
  } catch (const json::exception& e) {  // syntax errors, and numbers beyond a double
    throw ApiError(400, fmt::format("the request body is not valid JSON: {}", e.what()));
  }
}

GenerationRequest parse_completion(const json& body, const Tokenizer& tokenizer, const RequestLimits& limits) {
  const Fields fields(body, with(kCommon, {"prompt", "logprobs", "echo", "best_of", "suffix"}));
  fields.unsupported("echo", false);
  fields.unsupported("best_of", 1);
  fields.unsupported("suffix", "");
  const json* prompt = fields.get("prompt");
  if (!prompt) bad_field("prompt", "'prompt' is required");
  GenerationRequest r = read_common(fields, read_prompt(*prompt, tokenizer, limits.vocab), "prompt", 16, limits);
  // The legacy API's logprobs: how many of the most likely tokens to list beside each one generated.
  const auto logprobs = fields.integer("logprobs", 0, kMaxTopLogprobs);
  r.logprobs = logprobs.has_value();
  r.top_logprobs = logprobs.value_or(0);
  return r;
}

GenerationRequest parse_chat(const json& body, const Tokenizer& tokenizer, const RequestLimits& limits,
                             const ChatTemplate* chat_template) {
  const Fields fields(body, with(kCommon, {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}));
  const json* messages = fields.get("messages");
  if (!messages || !messages->is_array() || messages->empty())
    bad_field("messages", "'messages' must be a non-empty array of messages");
  std::vector<ChatMessage> chat;
  for (size_t i = 0; i < messages->size(); ++i) chat.push_back(read_message((*messages)[i], i));
  GenerationRequest r =
      read_common(fields, chat_prompt(chat, tokenizer, chat_template), "messages", limits.default_max_tokens, limits);
  if (!chat_template) r.stop.push_back(kPlainChatStop);
  r.logprobs = fields.boolean("logprobs").value_or(false);
  r.top_logprobs = fields.integer("top_logprobs", 0, kMaxTopLogprobs).value_or(0);
  if (fields.get("top_logprobs") && !r.logprobs)
    bad_field("top_logprobs", "'top_logprobs' needs 'logprobs' to be true");
  return r;
}

std::vector<int32_t> parse_tokenize(const json& body, const Tokenizer& tokenizer) {
  const Fields fields(body, {"content"});
  const auto content = fields.string("content");
  if (!content) bad_field("content", "'content' is required");
  return tokenizer.encode(*content);
}

std::vector<int32_t> parse_detokenize(const json& body, const Tokenizer& tokenizer) {
  const Fields fields(body, {"tokens"});
  const json* tokens = fields.get("tokens");
  if (!tokens || !tokens->is_array()) bad_field("tokens", "'tokens' must be an array of token ids");
  return checked_ids(*tokens, "tokens", tokenizer.vocab_size());
}

}  // namespace ssm::serve
