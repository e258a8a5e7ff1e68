// The BPE encoder over arbitrary bytes, with fuzz/tokenizer.json (merges, the GPT-2 split, added and
// special tokens): encode never fails, and decode(encode(x)) == x (tokenizer.h's promise) for both
// encode and encode_ordinary.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto tokenizer = ssm::load_tokenizer(ssm::fuzz::source_file("fuzz/tokenizer.json"));
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (tokenizer->decode(tokenizer->encode(text)) != text) std::abort();
  if (tokenizer->decode(tokenizer->encode_ordinary(text)) != text) std::abort();
  return 0;
}
