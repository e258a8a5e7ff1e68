// load_tokenizer over an arbitrary tokenizer.json; a tokenizer that loads encodes and decodes a text that
// touches its merges, added tokens and the byte fallback.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ssm::fuzz::expect_error_or_success([&] {
    const auto tokenizer = ssm::load_tokenizer(ssm::fuzz::as_file(data, size));
    const std::string text = "Hello world, the <|endoftext|> caf\xc3\xa9 \xff\xfe  12345\n\n";
    tokenizer->decode(tokenizer->encode(text));
    tokenizer->decode(tokenizer->encode_ordinary(text));
  });
  return 0;
}
