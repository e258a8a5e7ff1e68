// The server's request layer (serve/request.h) on arbitrary bytes as a request body, called as the
// server's handlers call it, without sockets: /v1/completions, /v1/chat/completions (in the plain role
// format and through the chat templates in tests/fixtures/chat_templates that load), /tokenize and /detokenize,
// with fuzz/tokenizer.json. Every body ends in a request or an ApiError / ssm::Error (the server's 4xx
// answers); anything else is a crash, and so is a 5xx or a request that breaks what the scheduler
// relies on: a prompt of 1+ ids within the vocabulary, leaving room in the context for max_tokens.
#include <vector>

#include "fuzz_util.h"
#include "serve/api_error.h"
#include "serve/request.h"
#include "tokenizer/utf8_stream.h"

namespace {

using ssm::serve::ApiError;

const ssm::Tokenizer& tokenizer() {
  static const auto tokenizer = ssm::load_tokenizer(ssm::fuzz::source_file("fuzz/tokenizer.json"));
  return *tokenizer;
}

const std::vector<ssm::serve::ChatTemplate>& chat_templates() {
  static const auto templates = [] {
    std::vector<ssm::serve::ChatTemplate> out;
    for (const char* name : {"chatml", "chatml_tools", "llama3", "mistral", "zephyr"})
      out.push_back(*ssm::serve::ChatTemplate::from_folder(
          ssm::fuzz::source_file("tests/fixtures/chat_templates/" + std::string(name)), tokenizer()));
    return out;
  }();
  return templates;
}

// An ApiError is the outcome for bad input when it is a client error; a 5xx is the server's fault.
template <class F>
void expect_request_or_client_error(F&& handle) {
  try {
    ssm::fuzz::expect_errors_or_success<ssm::Error>(handle);
  } catch (const ApiError& e) {
    if (e.status < 400 || e.status >= 500) std::abort();
  }
}

void check(const ssm::serve::GenerationRequest& r, const ssm::serve::RequestLimits& limits) {
  if (r.prompt.empty() || r.max_tokens < 1 || int64_t(r.prompt.size()) + r.max_tokens > limits.context) std::abort();
  for (int32_t id : r.prompt)
    if (id < 0 || id >= limits.vocab) std::abort();
  if (r.n < 1 || r.top_logprobs < 0 || (r.top_logprobs > 0 && !r.logprobs)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace serve = ssm::serve;
  const ssm::serve::RequestLimits limits{.context = 512, .default_max_tokens = 64, .vocab = tokenizer().vocab_size()};
  nlohmann::json body;
  try {
    body = serve::parse_body(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const ApiError& e) {
    if (e.status != 400) std::abort();
    return 0;
  }
  expect_request_or_client_error([&] { check(serve::parse_completion(body, tokenizer(), limits), limits); });
  expect_request_or_client_error([&] { check(serve::parse_chat(body, tokenizer(), limits, nullptr), limits); });
  for (const serve::ChatTemplate& chat_template : chat_templates())
    expect_request_or_client_error(
        [&] { check(serve::parse_chat(body, tokenizer(), limits, &chat_template), limits); });
  expect_request_or_client_error([&] { serve::parse_tokenize(body, tokenizer()); });
  expect_request_or_client_error([&] {
    ssm::Utf8Stream utf8;  // as the /detokenize handler answers
    utf8.feed(tokenizer().decode(serve::parse_detokenize(body, tokenizer())));
    utf8.flush();
  });
  return 0;
}
