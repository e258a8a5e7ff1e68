// A chat template from arbitrary text (serve/jinja_*.cpp, loaded through ChatTemplate as the server
// loads a model's), rendered over a small chat and encoded with fuzz/tokenizer.json: loading, rendering
// and encoding each succeed or throw jinja::Error (Raised included), never anything else, and the
// rendered prompt's user spans lie sorted and disjoint within its text. A render here may run 2,000
// loop iterations (the server allows 100,000): the limit's code is the same, and without it the
// corpus fills with templates that spend their time in loops, at a fifth of the executions a second.
// Prompts over 64 KiB are not encoded: the BPE encoder has its own target (bpe_encode), and what is
// this target's own (special tokens outside user spans) shows on short prompts as well.
#include <vector>

#include "fuzz_util.h"
#include "serve/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace serve = ssm::serve;
  static const auto tokenizer = ssm::load_tokenizer(ssm::fuzz::source_file("fuzz/tokenizer.json"));
  static const std::vector<serve::ChatMessage> chat = {{"system", "Be brief."},
                                                       {"user", "Hi <|endoftext|> there"},
                                                       {"assistant", "Hello."},
                                                       {"user", "caf\xC3\xA9 {{ 1 }} {% if %}"}};
  const std::string source(reinterpret_cast<const char*>(data), size);
  ssm::fuzz::expect_errors_or_success<serve::jinja::Error>([&] {
    const serve::ChatTemplate chat_template(source, *tokenizer, "<|endoftext|>", "<|endoftext|>",
                                            {.loop_iterations = 2000});
    const serve::jinja::Value prompt = chat_template.render(chat);
    size_t end = 0;
    for (const serve::jinja::Span& span : prompt.user) {
      if (span.begin < end || span.end < span.begin || span.end > prompt.text.size()) std::abort();
      end = span.end;
    }
    if (prompt.text.size() <= (size_t(64) << 10)) chat_template.encode(prompt);
  });
  return 0;
}
